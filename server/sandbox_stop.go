package server

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crid-dev/crid/container"
	"github.com/crid-dev/crid/internal/log"
)

// StopPodSandbox stops the pod's containers (at once: kubelet has already
// stopped them gracefully) and releases its namespaces. Stopping an unknown
// or stopped sandbox succeeds.
func (s *RuntimeService) StopPodSandbox(ctx context.Context, r *runtime.StopPodSandboxRequest) (*runtime.StopPodSandboxResponse, error) {
	sb, err := s.sandboxToTearDown(r.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	if sb == nil {
		return &runtime.StopPodSandboxResponse{}, nil
	}
	ctx = log.With(ctx, "podsandboxid", sb.ID)
	for _, c := range s.containers.List(container.Filter{SandboxID: sb.ID}) {
		if err := s.containers.Stop(ctx, c.ID, 0, 0); err != nil && !errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("stop container %s of pod sandbox %s: %w", c.ID, sb.ID, err)
		}
	}
	if err := s.sandboxes.Stop(ctx, sb.ID); err != nil && !errdefs.IsNotFound(err) {
		return nil, fmt.Errorf("stop pod sandbox %s: %w", sb.ID, err)
	}
	log.G(ctx).Info("pod sandbox stopped")
	return &runtime.StopPodSandboxResponse{}, nil
}
