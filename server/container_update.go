package server

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crid-dev/crid/container/spec"
	"github.com/crid-dev/crid/internal/log"
)

// UpdateContainerResources changes a container's cgroup limits in place.
func (s *RuntimeService) UpdateContainerResources(ctx context.Context, r *runtime.UpdateContainerResourcesRequest) (*runtime.UpdateContainerResourcesResponse, error) {
	id := r.GetContainerId()
	if id == "" {
		return nil, fmt.Errorf("container id is required: %w", errdefs.ErrInvalidArgument)
	}
	c, err := s.containers.Get(id)
	if err != nil {
		return nil, err
	}
	ctx = log.With(ctx, "containerid", c.ID)
	lr, err := spec.LinuxResources(resourcesFromCRI(r.GetLinux()), s.specHost, log.G(ctx))
	if err != nil {
		return nil, err
	}
	if err := s.containers.UpdateResources(ctx, c.ID, lr); err != nil {
		return nil, fmt.Errorf("update resources of container %s: %w", c.ID, err)
	}
	log.G(ctx).Info("container resources updated")
	return &runtime.UpdateContainerResourcesResponse{}, nil
}
