package server

import (
	"context"
	"errors"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crid-dev/crid/cgroupmgr"
	"github.com/crid-dev/crid/container/spec"
)

// Version information reported by the Version RPC.
const (
	RuntimeName       = "crid"
	runtimeAPIVersion = "v1"
)

// RuntimeService implements the CRI RuntimeService: pod sandboxes and their
// containers. RPCs not built yet answer Unimplemented through the embedded
// UnimplementedRuntimeServiceServer.
type RuntimeService struct {
	runtime.UnimplementedRuntimeServiceServer

	version    string
	sandboxes  Sandboxes
	containers Containers
	images     ImageStore
	rootfs     Rootfs
	specs      SpecGenerator
	specHost   spec.Host
	handlers   []RuntimeHandler
	cgroups    cgroupmgr.Driver
	stats      CgroupStats
	streams    *StreamServer // nil: Exec, Attach and PortForward are Unimplemented
	network    PodNetwork    // nil: no pod network (NetworkReady false)
	sweep      func(ctx context.Context)
}

// RuntimeHandler is an OCI runtime crid can run pods with.
type RuntimeHandler struct {
	Name                    string
	RecursiveReadOnlyMounts bool
	UserNamespaces          bool
}

// RuntimeServiceDeps are the RuntimeService's dependencies; all but Version
// are required.
type RuntimeServiceDeps struct {
	// Version is crid's own version, reported as runtime_version.
	Version    string
	Sandboxes  Sandboxes
	Containers Containers
	Images     ImageStore
	Rootfs     Rootfs
	Specs      SpecGenerator
	// SpecHost describes the node to the spec generator (spec.ProbeHost).
	SpecHost spec.Host
	// Handlers are the runtime handlers; the first is the default (""),
	// reported by Status.
	Handlers     []RuntimeHandler
	CgroupDriver cgroupmgr.Driver
	Stats        CgroupStats
	// Streams serves Exec, Attach and PortForward; optional.
	Streams *StreamServer
	// Network is the pod network (CNI); optional. The sandbox manager
	// attaches pods to it; the RuntimeService reports its readiness.
	Network PodNetwork
	// SweepOrphans removes snapshots nothing owns (see SweepSnapshots). It
	// runs when a removed container's image was removed before it: that
	// image's layers could not go while the container's rootfs sat on them.
	// Optional.
	SweepOrphans func(ctx context.Context)
}

// NewRuntimeService returns a RuntimeService over deps.
func NewRuntimeService(deps RuntimeServiceDeps) (*RuntimeService, error) {
	if deps.Sandboxes == nil || deps.Containers == nil || deps.Images == nil || deps.Rootfs == nil ||
		deps.Specs == nil || len(deps.Handlers) == 0 || deps.CgroupDriver == "" || deps.Stats == nil {
		return nil, errors.New("server: runtime service needs sandboxes, containers, images, rootfs, specs, handlers, a cgroup driver and stats")
	}
	v := deps.Version
	if v == "" {
		v = "unknown"
	}
	return &RuntimeService{
		version: v, sandboxes: deps.Sandboxes, containers: deps.Containers, images: deps.Images,
		rootfs: deps.Rootfs, specs: deps.Specs, specHost: deps.SpecHost, handlers: deps.Handlers, cgroups: deps.CgroupDriver,
		stats: deps.Stats, sweep: deps.SweepOrphans, streams: deps.Streams, network: deps.Network,
	}, nil
}

// handler returns the named runtime handler ("" is the default one).
func (s *RuntimeService) handler(name string) (RuntimeHandler, bool) {
	if name == "" {
		return s.handlers[0], true
	}
	for _, h := range s.handlers {
		if h.Name == name {
			return h, true
		}
	}
	return RuntimeHandler{}, false
}
