package cni

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"testing"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crid-dev/crid/internal/log"
)

// stubExec answers every plugin run with out and err.
type stubExec struct {
	invoke.Exec
	out []byte
	err error
}

func (s stubExec) ExecPlugin(context.Context, string, []byte, []string) ([]byte, error) {
	return s.out, s.err
}

func TestTimedExecLogsEachPluginRun(t *testing.T) {
	var buf bytes.Buffer
	ctx := log.WithLogger(context.Background(), slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	env := []string{"CNI_COMMAND=ADD", "CNI_CONTAINERID=pod1", "CNI_IFNAME=eth0", "PATH=/bin"}

	out, err := timedExec{stubExec{out: []byte("result")}}.ExecPlugin(ctx, "/opt/cni/bin/bridge", nil, env)
	require.NoError(t, err)
	assert.Equal(t, "result", string(out))
	assert.Contains(t, buf.String(), `msg="CNI plugin done" plugin=bridge command=ADD podsandboxid=pod1 ifname=eth0 duration=`)

	buf.Reset()
	boom := errors.New("boom")
	_, err = timedExec{stubExec{err: boom}}.ExecPlugin(ctx, "/opt/cni/bin/portmap", nil, env)
	assert.ErrorIs(t, err, boom)
	assert.Contains(t, buf.String(), `msg="CNI plugin failed" plugin=portmap command=ADD`)
	assert.Contains(t, buf.String(), "error=boom")
}
