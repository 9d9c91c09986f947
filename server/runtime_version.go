package server

import (
	"context"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// kubeAPIVersion is the version of the kubelet runtime API crid speaks.
const kubeAPIVersion = "0.1.0"

// Version reports the runtime's name and versions.
func (s *RuntimeService) Version(context.Context, *runtime.VersionRequest) (*runtime.VersionResponse, error) {
	return &runtime.VersionResponse{
		Version:           kubeAPIVersion,
		RuntimeName:       RuntimeName,
		RuntimeVersion:    s.version,
		RuntimeApiVersion: runtimeAPIVersion,
	}, nil
}
