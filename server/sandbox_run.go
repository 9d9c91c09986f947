package server

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crid-dev/crid/internal/log"
)

// RunPodSandbox creates a pod's namespaces and files and returns its ID. A
// retry with the same metadata (kubelet's, after a deadline) returns the
// same sandbox.
func (s *RuntimeService) RunPodSandbox(ctx context.Context, r *runtime.RunPodSandboxRequest) (*runtime.RunPodSandboxResponse, error) {
	cfg := r.GetConfig()
	if cfg.GetMetadata().GetName() == "" || cfg.GetMetadata().GetNamespace() == "" {
		return nil, fmt.Errorf("sandbox config needs metadata with a name and a namespace: %w", errdefs.ErrInvalidArgument)
	}
	handler := r.GetRuntimeHandler()
	if _, ok := s.handler(handler); !ok {
		return nil, fmt.Errorf("runtime handler %q is not configured: %w", handler, errdefs.ErrInvalidArgument)
	}
	ctx = log.With(ctx, "pod", cfg.GetMetadata().GetNamespace()+"/"+cfg.GetMetadata().GetName())
	sb, err := s.sandboxes.Run(ctx, sandboxConfigFromCRI(cfg, handler))
	if err != nil {
		return nil, fmt.Errorf("run pod sandbox: %w", err)
	}
	log.G(ctx).Info("pod sandbox ready", "podsandboxid", sb.ID)
	return &runtime.RunPodSandboxResponse{PodSandboxId: sb.ID}, nil
}
