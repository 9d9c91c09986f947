package server

import (
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Version information reported by the Version RPC.
const (
	RuntimeName       = "crid"
	runtimeAPIVersion = "v1"
)

// RuntimeService implements the CRI RuntimeService. Pod and container RPCs
// arrive with later work; until then they answer Unimplemented through the
// embedded UnimplementedRuntimeServiceServer.
type RuntimeService struct {
	runtime.UnimplementedRuntimeServiceServer

	version string
}

// RuntimeServiceDeps are the RuntimeService's dependencies.
type RuntimeServiceDeps struct {
	// Version is crid's own version, reported as runtime_version.
	Version string
}

// NewRuntimeService returns a RuntimeService over deps.
func NewRuntimeService(deps RuntimeServiceDeps) (*RuntimeService, error) {
	v := deps.Version
	if v == "" {
		v = "unknown"
	}
	return &RuntimeService{version: v}, nil
}
