package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/crid-dev/crid/sandbox"
)

// ERROR is kept for what may be crid's own fault: kubelet's tests (and
// operators) read an ERROR line as a daemon bug.
func TestOutcomeLevel(t *testing.T) {
	for _, c := range []struct {
		err  error
		want slog.Level
	}{
		{fmt.Errorf("container x: %w", errdefs.ErrNotFound), slog.LevelInfo},
		{fmt.Errorf("bad: %w", errdefs.ErrInvalidArgument), slog.LevelInfo},
		{context.Canceled, slog.LevelInfo},
		{status.Error(codes.Unimplemented, "no"), slog.LevelInfo},
		{fmt.Errorf("exec in container x in state Exited: %w", errdefs.ErrFailedPrecondition), slog.LevelWarn},
		{&sandbox.ReservedError{Name: "a", ID: "b"}, slog.LevelWarn},
		{fmt.Errorf("name taken: %w", errdefs.ErrAlreadyExists), slog.LevelWarn},
		{errors.New("runc create failed"), slog.LevelError},
		{fmt.Errorf("disk: %w", errdefs.ErrUnknown), slog.LevelError},
	} {
		require.Equal(t, c.want, outcomeLevel(c.err), "%v", c.err)
	}
}
