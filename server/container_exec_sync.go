package server

import (
	"context"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crid-dev/crid/internal/log"
)

// ExecSync runs a command in a running container and returns its output
// (at most 16 MiB per stream) and exit code; past the timeout the command
// is killed and the call fails with DeadlineExceeded.
func (s *RuntimeService) ExecSync(ctx context.Context, r *runtime.ExecSyncRequest) (*runtime.ExecSyncResponse, error) {
	id := r.GetContainerId()
	if id == "" || len(r.GetCmd()) == 0 {
		return nil, fmt.Errorf("container id and command are required: %w", errdefs.ErrInvalidArgument)
	}
	c, err := s.containers.Get(id)
	if err != nil {
		return nil, err
	}
	ctx = log.With(ctx, "containerid", c.ID)
	timeout := time.Duration(max(r.GetTimeout(), 0)) * time.Second
	stdout, stderr, code, err := s.containers.ExecSync(ctx, c.ID, r.GetCmd(), timeout)
	if err != nil {
		return nil, fmt.Errorf("exec in container %s: %w", c.ID, err)
	}
	return &runtime.ExecSyncResponse{Stdout: stdout, Stderr: stderr, ExitCode: int32(code)}, nil
}
