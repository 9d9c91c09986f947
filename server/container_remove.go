package server

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crid-dev/crid/container"
	"github.com/crid-dev/crid/internal/log"
)

// RemoveContainer removes a container, running or not, and its writable
// layer. Removing an unknown container succeeds.
func (s *RuntimeService) RemoveContainer(ctx context.Context, r *runtime.RemoveContainerRequest) (*runtime.RemoveContainerResponse, error) {
	c, err := s.containerToTearDown(r.GetContainerId())
	if err != nil {
		return nil, err
	}
	if c == nil {
		return &runtime.RemoveContainerResponse{}, nil
	}
	ctx = log.With(ctx, "containerid", c.ID)
	if err := s.removeContainer(ctx, *c); err != nil {
		return nil, err
	}
	log.G(ctx).Info("container removed")
	return &runtime.RemoveContainerResponse{}, nil
}

// removeContainer removes the container (stopping it at once if it runs)
// and then its snapshot, which is named after it. When the container's image
// was removed while it ran, the image's layers could not go then (the
// rootfs sat on them): the orphan sweep takes them now.
func (s *RuntimeService) removeContainer(ctx context.Context, c container.Record) error {
	if err := s.containers.Remove(ctx, c.ID); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("remove container %s: %w", c.ID, err)
	}
	if err := s.rootfs.Remove(ctx, c.ID); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("remove rootfs of container %s: %w", c.ID, err)
	}
	if _, err := s.images.Get(ctx, c.Image.ID); errdefs.IsNotFound(err) && s.sweep != nil {
		s.sweep(ctx)
	}
	return nil
}
