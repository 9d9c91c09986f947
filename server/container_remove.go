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
// and then its snapshots: the rootfs, named after it, and the views of its
// image volumes. When one of its images was removed while it ran, the
// image's layers could not go then (the container's snapshots sat on
// them): the orphan sweep takes them now.
func (s *RuntimeService) removeContainer(ctx context.Context, c container.Record) error {
	if err := s.containers.Remove(ctx, c.ID); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("remove container %s: %w", c.ID, err)
	}
	if err := s.rootfs.Remove(ctx, c.ID); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("remove rootfs of container %s: %w", c.ID, err)
	}
	extra := decodeContainerExtra(c.Extra)
	if err := s.removeViews(ctx, extra.ImageVolumes); err != nil {
		return fmt.Errorf("container %s: %w", c.ID, err)
	}
	if s.sweep != nil && s.anyImageGone(ctx, c, extra) {
		s.sweep(ctx)
	}
	return nil
}

// anyImageGone reports whether the image of container c or of one of its
// image volumes is no longer in the store.
func (s *RuntimeService) anyImageGone(ctx context.Context, c container.Record, extra containerExtra) bool {
	ids := []string{c.Image.ID}
	for _, m := range extra.Mounts {
		if ref := m.GetImage().GetImageRef(); ref != "" {
			ids = append(ids, ref)
		}
	}
	for _, id := range ids {
		if _, err := s.images.Get(ctx, id); errdefs.IsNotFound(err) {
			return true
		}
	}
	return false
}
