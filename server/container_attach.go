package server

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Attach returns the URL of a streaming attach session to a running
// container's stdio.
func (s *RuntimeService) Attach(ctx context.Context, r *runtime.AttachRequest) (*runtime.AttachResponse, error) {
	if s.streams == nil {
		return nil, fmt.Errorf("attach: no stream server: %w", errdefs.ErrNotImplemented)
	}
	if err := validateStreamFlags(r.GetTty(), r.GetStdin(), r.GetStdout(), r.GetStderr()); err != nil {
		return nil, err
	}
	c, err := s.runningContainer(r.GetContainerId())
	if err != nil {
		return nil, err
	}
	return s.streams.getAttach(&runtime.AttachRequest{
		ContainerId: c.ID, Stdin: r.GetStdin(), Tty: r.GetTty(), Stdout: r.GetStdout(), Stderr: r.GetStderr(),
	})
}
