package server

import (
	"context"
	"io"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
	remotecommand "k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"

	"github.com/crid-dev/crid/container"
)

// blockingStreams blocks every session until its context ends.
type blockingStreams struct{ started chan struct{} }

func (b blockingStreams) Exec(ctx context.Context, id string, _ []string, _ io.Reader, _, _ io.Writer, _ bool, resize <-chan container.TermSize) (int, error) {
	if id == "exit3" {
		return 3, nil
	}
	b.started <- struct{}{}
	<-ctx.Done()
	return -1, ctx.Err()
}

func (b blockingStreams) Attach(ctx context.Context, _ string, _ io.Reader, _, _ io.Writer, _ bool, _ <-chan container.TermSize) error {
	<-ctx.Done()
	return nil
}

func (b blockingStreams) PortForward(ctx context.Context, _ string, _ int32, s io.ReadWriteCloser) error {
	defer s.Close()
	<-ctx.Done()
	return nil
}

func TestStreamServer(t *testing.T) {
	fake := blockingStreams{started: make(chan struct{}, 1)}
	ss, err := NewStreamServer(StreamServerConfig{Addr: "127.0.0.1:0", Containers: fake, Sandboxes: fake})
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- ss.Serve() }()

	resp, err := ss.getExec(&runtime.ExecRequest{ContainerId: "c", Cmd: []string{"sh"}, Stdout: true})
	require.NoError(t, err)
	u, err := url.Parse(resp.GetUrl())
	require.NoError(t, err)
	assert.Equal(t, ss.Addr(), u.Host, "the URL names the real port")
	assert.True(t, strings.HasPrefix(u.Path, "/exec/"), u.Path)

	rt := streamRuntime{s: ss, containers: fake, sandboxes: fake}
	err = rt.Exec(context.Background(), "exit3", []string{"x"}, nil, nil, nil, false, nil)
	var ee utilexec.ExitError
	require.ErrorAs(t, err, &ee)
	assert.Equal(t, 3, ee.ExitStatus())

	// Close ends sessions in flight, resize relays included.
	resize := make(chan remotecommand.TerminalSize)
	ended := make(chan error, 1)
	go func() { ended <- rt.Exec(context.Background(), "c", []string{"x"}, nil, nil, nil, true, resize) }()
	<-fake.started
	require.NoError(t, ss.Close())
	select {
	case err := <-ended:
		assert.Error(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end the session")
	}
	require.NoError(t, <-served)
	err = rt.Attach(context.Background(), "c", nil, nil, nil, false, nil)
	assert.True(t, errdefs.IsUnavailable(err), "%v", err)
}

func TestStreamRPCValidation(t *testing.T) {
	s := &RuntimeService{containers: newFakeContainers(), sandboxes: newFakeSandboxes()}
	ctx := context.Background()
	_, err := s.Exec(ctx, &runtime.ExecRequest{ContainerId: "c", Cmd: []string{"sh"}, Stdout: true})
	assert.True(t, errdefs.IsNotImplemented(err), "no stream server: %v", err)

	fake := blockingStreams{started: make(chan struct{}, 1)}
	ss, err := NewStreamServer(StreamServerConfig{Addr: "127.0.0.1:0", Containers: fake, Sandboxes: fake})
	require.NoError(t, err)
	defer ss.Close()
	s.streams = ss
	_, err = s.Exec(ctx, &runtime.ExecRequest{ContainerId: "c", Cmd: []string{"sh"}, Tty: true, Stderr: true})
	assert.True(t, errdefs.IsInvalidArgument(err), "%v", err)
	_, err = s.Attach(ctx, &runtime.AttachRequest{ContainerId: "c", Tty: true, Stdout: true, Stderr: true})
	assert.True(t, errdefs.IsInvalidArgument(err), "%v", err)
	_, err = s.Exec(ctx, &runtime.ExecRequest{ContainerId: "c", Cmd: []string{"sh"}})
	assert.True(t, errdefs.IsInvalidArgument(err), "no stream: %v", err)
	_, err = s.Exec(ctx, &runtime.ExecRequest{ContainerId: "c", Cmd: []string{"sh"}, Stdout: true})
	assert.True(t, errdefs.IsNotFound(err), "%v", err)
	_, err = s.PortForward(ctx, &runtime.PortForwardRequest{PodSandboxId: "p", Port: []int32{80}})
	assert.True(t, errdefs.IsNotFound(err), "%v", err)
	_, err = s.PortForward(ctx, &runtime.PortForwardRequest{PodSandboxId: "p", Port: []int32{70000}})
	assert.True(t, errdefs.IsInvalidArgument(err), "%v", err)
}
