package server

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crid-dev/crid/container"
)

// Exec returns the URL of a streaming exec session in a running container.
func (s *RuntimeService) Exec(ctx context.Context, r *runtime.ExecRequest) (*runtime.ExecResponse, error) {
	if s.streams == nil {
		return nil, fmt.Errorf("exec: no stream server: %w", errdefs.ErrNotImplemented)
	}
	if len(r.GetCmd()) == 0 {
		return nil, fmt.Errorf("exec: command is required: %w", errdefs.ErrInvalidArgument)
	}
	if err := validateStreamFlags(r.GetTty(), r.GetStdin(), r.GetStdout(), r.GetStderr()); err != nil {
		return nil, err
	}
	c, err := s.runningContainer(r.GetContainerId())
	if err != nil {
		return nil, err
	}
	return s.streams.getExec(&runtime.ExecRequest{
		ContainerId: c.ID, Cmd: r.GetCmd(), Tty: r.GetTty(), Stdin: r.GetStdin(), Stdout: r.GetStdout(), Stderr: r.GetStderr(),
	})
}

// validateStreamFlags rejects what kubelet rejects: a tty has no separate
// stderr, and a session needs at least one stream.
func validateStreamFlags(tty, stdin, stdout, stderr bool) error {
	if tty && stderr {
		return fmt.Errorf("tty and stderr cannot both be true: %w", errdefs.ErrInvalidArgument)
	}
	if !stdin && !stdout && !stderr {
		return fmt.Errorf("one of stdin, stdout and stderr must be set: %w", errdefs.ErrInvalidArgument)
	}
	return nil
}

// runningContainer resolves id (or a prefix) to a running container.
func (s *RuntimeService) runningContainer(id string) (container.Record, error) {
	if id == "" {
		return container.Record{}, fmt.Errorf("container id is required: %w", errdefs.ErrInvalidArgument)
	}
	c, err := s.containers.Get(id)
	if err != nil {
		return container.Record{}, err
	}
	if c.State != container.StateRunning {
		return container.Record{}, fmt.Errorf("container %s is %s, not running: %w", c.ID, c.State, errdefs.ErrFailedPrecondition)
	}
	return c, nil
}
