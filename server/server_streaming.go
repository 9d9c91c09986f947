package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming"
	remotecommand "k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"

	"github.com/crid-dev/crid/container"
)

// ContainerStreams is what the stream server needs of container.Manager.
type ContainerStreams interface {
	Exec(ctx context.Context, id string, cmd []string, stdin io.Reader, stdout, stderr io.Writer, tty bool, resize <-chan container.TermSize) (int, error)
	Attach(ctx context.Context, id string, stdin io.Reader, stdout, stderr io.Writer, tty bool, resize <-chan container.TermSize) error
}

// PortForwarder is what the stream server needs of sandbox.Manager.
type PortForwarder interface {
	PortForward(ctx context.Context, sandboxID string, port int32, stream io.ReadWriteCloser) error
}

// StreamServerConfig configures a StreamServer.
type StreamServerConfig struct {
	// Addr is the host:port to listen on; port 0 picks a free one.
	Addr       string
	Containers ContainerStreams
	Sandboxes  PortForwarder
}

// StreamServer is the CRI streaming (exec, attach, port-forward) HTTP
// server, on k8s.io/cri-streaming: Exec, Attach and PortForward hand out
// one-time URLs on it, and kubelet or crictl connect there with SPDY or
// WebSocket. It is the server's because the URLs are a CRI concern; the
// work behind them is the leaves'.
type StreamServer struct {
	lis    net.Listener
	lib    streaming.Server
	http   *http.Server
	ctx    context.Context // every session's; cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // sessions
}

// NewStreamServer listens on cfg.Addr; Serve serves.
func NewStreamServer(cfg StreamServerConfig) (*StreamServer, error) {
	if cfg.Containers == nil || cfg.Sandboxes == nil {
		return nil, errors.New("server: stream server needs containers and sandboxes")
	}
	lis, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen for streaming on %s: %w", cfg.Addr, err)
	}
	s := &StreamServer{lis: lis}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	c := streaming.DefaultConfig
	c.Addr = lis.Addr().String() // the real port: URLs are right before Serve
	c.StreamIdleTimeout = 4 * time.Hour
	s.lib, err = streaming.NewServer(c, streamRuntime{s: s, containers: cfg.Containers, sandboxes: cfg.Sandboxes})
	if err != nil {
		lis.Close()
		s.cancel()
		return nil, fmt.Errorf("create stream server: %w", err)
	}
	s.http = &http.Server{
		Handler:           s.lib,
		ReadHeaderTimeout: 30 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return s.ctx },
	}
	return s, nil
}

// Addr is the address the server listens on.
func (s *StreamServer) Addr() string { return s.lis.Addr().String() }

// Serve serves until Close; it returns nil after Close.
func (s *StreamServer) Serve() error {
	if err := s.http.Serve(s.lis); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve streaming: %w", err)
	}
	return nil
}

// Close stops listening, ends every session (their contexts are cancelled,
// which kills exec'd processes and closes attach and port-forward
// connections) and waits for them.
func (s *StreamServer) Close() error {
	err := s.http.Close() // does not reach hijacked (streaming) connections
	s.cancel()
	s.wg.Wait()
	return err
}

// session tracks one streaming session; its context ends with the
// request's or with Close.
func (s *StreamServer) session(ctx context.Context) (context.Context, func(), error) {
	if s.ctx.Err() != nil {
		return nil, nil, fmt.Errorf("stream server closed: %w", errdefs.ErrUnavailable)
	}
	s.wg.Add(1)
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.ctx, cancel)
	return ctx, func() { stop(); cancel(); s.wg.Done() }, nil
}

// url errors come from the library as gRPC statuses already.
func (s *StreamServer) getExec(r *runtime.ExecRequest) (*runtime.ExecResponse, error) {
	return s.lib.GetExec(r)
}

func (s *StreamServer) getAttach(r *runtime.AttachRequest) (*runtime.AttachResponse, error) {
	return s.lib.GetAttach(r)
}

func (s *StreamServer) getPortForward(r *runtime.PortForwardRequest) (*runtime.PortForwardResponse, error) {
	return s.lib.GetPortForward(r)
}

// streamRuntime adapts the leaves to streaming.Runtime.
type streamRuntime struct {
	s          *StreamServer
	containers ContainerStreams
	sandboxes  PortForwarder
}

var _ streaming.Runtime = streamRuntime{}

func (r streamRuntime) Exec(ctx context.Context, id string, cmd []string, stdin io.Reader, stdout, stderr io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	ctx, done, err := r.s.session(ctx)
	if err != nil {
		return err
	}
	defer done()
	sizes, stopSizes := convertResize(ctx, resize)
	defer stopSizes()
	code, err := r.containers.Exec(ctx, id, cmd, nilReader(stdin), nilWriter(stdout), nilWriter(stderr), tty, sizes)
	if err != nil {
		return errgrpc.ToGRPC(err)
	}
	if code != 0 {
		return utilexec.CodeExitError{Err: fmt.Errorf("command terminated with exit code %d", code), Code: code}
	}
	return nil
}

func (r streamRuntime) Attach(ctx context.Context, id string, stdin io.Reader, stdout, stderr io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	ctx, done, err := r.s.session(ctx)
	if err != nil {
		return err
	}
	defer done()
	sizes, stopSizes := convertResize(ctx, resize)
	defer stopSizes()
	return errgrpc.ToGRPC(r.containers.Attach(ctx, id, nilReader(stdin), nilWriter(stdout), nilWriter(stderr), tty, sizes))
}

func (r streamRuntime) PortForward(ctx context.Context, sandboxID string, port int32, stream io.ReadWriteCloser) error {
	ctx, done, err := r.s.session(ctx)
	if err != nil {
		stream.Close()
		return err
	}
	defer done()
	return errgrpc.ToGRPC(r.sandboxes.PortForward(ctx, sandboxID, port, stream))
}

// convertResize relays the library's terminal sizes as container.TermSize
// until in is closed or ctx ends; stop ends the relay and waits for it.
func convertResize(ctx context.Context, in <-chan remotecommand.TerminalSize) (<-chan container.TermSize, func()) {
	if in == nil {
		return nil, func() {}
	}
	out := make(chan container.TermSize)
	ctx, cancel := context.WithCancel(ctx)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		defer close(out)
		for {
			select {
			case sz, ok := <-in:
				if !ok {
					return
				}
				select {
				case out <- container.TermSize{Width: sz.Width, Height: sz.Height}:
				case <-ctx.Done():
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, func() { cancel(); <-finished }
}

// nilReader and nilWriter turn a nil interface value of the library's
// stream types into a true nil, so that the leaves can tell "no stream".
func nilReader(r io.Reader) io.Reader {
	if r == nil {
		return nil
	}
	return r
}

func nilWriter(w io.WriteCloser) io.Writer {
	if w == nil {
		return nil
	}
	return w
}
