package server

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crid-dev/crid/container"
	"github.com/crid-dev/crid/internal/log"
)

// RemovePodSandbox removes the pod's containers and then the pod, running
// or not. Removing an unknown sandbox succeeds.
func (s *RuntimeService) RemovePodSandbox(ctx context.Context, r *runtime.RemovePodSandboxRequest) (*runtime.RemovePodSandboxResponse, error) {
	sb, err := s.sandboxToTearDown(r.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	if sb == nil {
		return &runtime.RemovePodSandboxResponse{}, nil
	}
	ctx = log.With(ctx, "podsandboxid", sb.ID)
	for _, c := range s.containers.List(container.Filter{SandboxID: sb.ID}) {
		if err := s.removeContainer(ctx, c); err != nil {
			return nil, fmt.Errorf("remove container %s of pod sandbox %s: %w", c.ID, sb.ID, err)
		}
	}
	if err := s.sandboxes.Remove(ctx, sb.ID); err != nil && !errdefs.IsNotFound(err) {
		return nil, fmt.Errorf("remove pod sandbox %s: %w", sb.ID, err)
	}
	log.G(ctx).Info("pod sandbox removed")
	return &runtime.RemovePodSandboxResponse{}, nil
}
