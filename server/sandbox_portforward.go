package server

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crid-dev/crid/sandbox"
)

// PortForward returns the URL of a streaming port-forward session into a
// ready pod's network namespace.
func (s *RuntimeService) PortForward(ctx context.Context, r *runtime.PortForwardRequest) (*runtime.PortForwardResponse, error) {
	if s.streams == nil {
		return nil, fmt.Errorf("port forward: no stream server: %w", errdefs.ErrNotImplemented)
	}
	if r.GetPodSandboxId() == "" {
		return nil, fmt.Errorf("pod sandbox id is required: %w", errdefs.ErrInvalidArgument)
	}
	for _, p := range r.GetPort() {
		if p <= 0 || p > 65535 {
			return nil, fmt.Errorf("port %d out of range: %w", p, errdefs.ErrInvalidArgument)
		}
	}
	sb, err := s.sandboxes.Get(r.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	if sb.State != sandbox.StateReady {
		return nil, fmt.Errorf("pod sandbox %s is %s, not ready: %w", sb.ID, sb.State, errdefs.ErrFailedPrecondition)
	}
	return s.streams.getPortForward(&runtime.PortForwardRequest{PodSandboxId: sb.ID, Port: r.GetPort()})
}
