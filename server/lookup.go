package server

import (
	"fmt"

	"github.com/containerd/errdefs"

	"github.com/crid-dev/crid/container"
	"github.com/crid-dev/crid/sandbox"
)

// sandboxToTearDown looks up the sandbox a Stop or Remove names. An empty
// ID is InvalidArgument; an unknown one returns nil and no error, because
// stopping or removing what is gone succeeds (CRI idempotency).
func (s *RuntimeService) sandboxToTearDown(id string) (*sandbox.Sandbox, error) {
	if id == "" {
		return nil, fmt.Errorf("pod sandbox id is required: %w", errdefs.ErrInvalidArgument)
	}
	sb, err := s.sandboxes.Get(id)
	if errdefs.IsNotFound(err) {
		return nil, nil
	}
	return sb, err
}

// containerToTearDown is sandboxToTearDown for containers.
func (s *RuntimeService) containerToTearDown(id string) (*container.Record, error) {
	if id == "" {
		return nil, fmt.Errorf("container id is required: %w", errdefs.ErrInvalidArgument)
	}
	c, err := s.containers.Get(id)
	if errdefs.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &c, nil
}
