package server

import (
	"context"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crid-dev/crid/internal/log"
)

// StopContainer sends the image's stop signal (SIGTERM by default), waits
// up to the timeout, then kills. Stopping an unknown or exited container
// succeeds.
func (s *RuntimeService) StopContainer(ctx context.Context, r *runtime.StopContainerRequest) (*runtime.StopContainerResponse, error) {
	c, err := s.containerToTearDown(r.GetContainerId())
	if err != nil {
		return nil, err
	}
	if c == nil {
		return &runtime.StopContainerResponse{}, nil
	}
	ctx = log.With(ctx, "containerid", c.ID)
	timeout := time.Duration(max(r.GetTimeout(), 0)) * time.Second
	if err := s.containers.Stop(ctx, c.ID, timeout, decodeContainerExtra(c.Extra).stopSignal()); err != nil && !errdefs.IsNotFound(err) {
		return nil, fmt.Errorf("stop container %s: %w", c.ID, err)
	}
	log.G(ctx).Info("container stopped")
	return &runtime.StopContainerResponse{}, nil
}
