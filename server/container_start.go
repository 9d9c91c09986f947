package server

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crid-dev/crid/internal/log"
)

// StartContainer starts a created container.
func (s *RuntimeService) StartContainer(ctx context.Context, r *runtime.StartContainerRequest) (*runtime.StartContainerResponse, error) {
	id := r.GetContainerId()
	if id == "" {
		return nil, fmt.Errorf("container id is required: %w", errdefs.ErrInvalidArgument)
	}
	c, err := s.containers.Get(id)
	if err != nil {
		return nil, err
	}
	ctx = log.With(ctx, "containerid", c.ID)
	if err := s.containers.Start(ctx, c.ID); err != nil {
		return nil, fmt.Errorf("start container %s: %w", c.ID, err)
	}
	log.G(ctx).Info("container started")
	return &runtime.StartContainerResponse{}, nil
}
