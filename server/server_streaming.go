package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming"
	remotecommand "k8s.io/cri-streaming/pkg/streaming/remotecommand"
	"k8s.io/streaming/pkg/httpstream/wsstream"
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
//
// The HTTP front is crid's (serveHTTP): every URL's one-time entry is taken
// there first, WebSocket exec and attach with v5.channel.k8s.io and
// port-forward tunnelled in WebSocket (SPDY/3.1+portforward.k8s.io) are
// served by crid (server_streaming_ws.go), since the library offers only
// older WebSocket protocols, and everything else goes to the library.
type StreamServer struct {
	lis    net.Listener
	lib    streaming.Server
	rt     streamRuntime // the leaves, for the library and for crid's own handlers
	urls   *streamURLs
	idle   time.Duration // a WebSocket connection with no traffic for this long ends
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
	s := &StreamServer{lis: lis, urls: newStreamURLs(), idle: 4 * time.Hour}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.rt = streamRuntime{s: s, containers: cfg.Containers, sandboxes: cfg.Sandboxes}
	c := streaming.DefaultConfig
	c.Addr = lis.Addr().String() // the real port: URLs are right before Serve
	c.StreamIdleTimeout = s.idle
	s.lib, err = streaming.NewServer(c, s.rt)
	if err != nil {
		lis.Close()
		s.cancel()
		return nil, fmt.Errorf("create stream server: %w", err)
	}
	s.http = &http.Server{
		Handler:           http.HandlerFunc(s.serveHTTP),
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

// get* hand out the library's one-time URLs and remember what each stands
// for. url errors come from the library as gRPC statuses already.
func (s *StreamServer) getExec(r *runtime.ExecRequest) (*runtime.ExecResponse, error) {
	return handOut(s.urls, r, s.lib.GetExec)
}

func (s *StreamServer) getAttach(r *runtime.AttachRequest) (*runtime.AttachResponse, error) {
	return handOut(s.urls, r, s.lib.GetAttach)
}

func (s *StreamServer) getPortForward(r *runtime.PortForwardRequest) (*runtime.PortForwardResponse, error) {
	return handOut(s.urls, r, s.lib.GetPortForward)
}

// handOut gets a URL for req from the library and remembers req for it.
// The entry's clock starts before the library's, so it never outlives the
// library's.
func handOut[Req any, Resp interface{ GetUrl() string }](u *streamURLs, req Req, get func(Req) (Resp, error)) (Resp, error) {
	expires := u.expiry()
	resp, err := get(req)
	if err != nil {
		return resp, err
	}
	if err := u.add(resp.GetUrl(), req, expires); err != nil {
		var none Resp
		return none, err
	}
	return resp, nil
}

// serveHTTP is the stream server's front. It takes the URL's one-time
// entry first, so that a URL serves once whichever handler serves it, then
// serves what the library does not (WebSocket exec and attach with
// v5.channel.k8s.io, port-forward tunnelled in WebSocket) and hands the
// rest, SPDY and the older WebSocket protocols, to the library, which takes
// its own entry for the URL.
func (s *StreamServer) serveHTTP(w http.ResponseWriter, r *http.Request) {
	req, ok := s.urls.take(r.URL.Path)
	if !ok {
		http.NotFound(w, r) // unknown, used or expired: what the library answers
		return
	}
	switch req := req.(type) {
	case *runtime.ExecRequest:
		if wsstream.IsWebSocketRequestWithStreamCloseProtocol(r) {
			s.serveExecV5(w, r, req)
			return
		}
	case *runtime.AttachRequest:
		if wsstream.IsWebSocketRequestWithStreamCloseProtocol(r) {
			s.serveAttachV5(w, r, req)
			return
		}
	case *runtime.PortForwardRequest:
		if wsstream.IsWebSocketRequestWithTunnelingProtocol(r) {
			s.servePortForwardTunnel(w, r)
			return
		}
	}
	s.lib.ServeHTTP(w, r)
}

// streamURLTTL is how long a URL stays usable: the library's request cache
// TTL (cri-streaming's unexported cacheTTL).
const streamURLTTL = time.Minute

// streamURLs remembers the request each URL handed out stands for, by URL
// path, until it is taken or expires. Entries are added only for URLs the
// library handed out, so the library's in-flight limit bounds them too.
type streamURLs struct {
	now func() time.Time
	// mu guards the fields below.
	mu      sync.Mutex
	entries map[string]streamURL
}

type streamURL struct {
	req     any // *runtime.ExecRequest, *runtime.AttachRequest or *runtime.PortForwardRequest
	expires time.Time
}

func newStreamURLs() *streamURLs {
	return &streamURLs{now: time.Now, entries: make(map[string]streamURL)}
}

// expiry is the expiry time of a URL handed out now.
func (u *streamURLs) expiry() time.Time { return u.now().Add(streamURLTTL) }

// add remembers req for rawURL until expires, and forgets expired entries.
func (u *streamURLs) add(rawURL string, req any, expires time.Time) error {
	p, err := url.Parse(rawURL)
	if err != nil {
		return fmt.Errorf("parse stream url: %w", err)
	}
	now := u.now()
	u.mu.Lock()
	defer u.mu.Unlock()
	for k, e := range u.entries {
		if now.After(e.expires) {
			delete(u.entries, k)
		}
	}
	u.entries[p.Path] = streamURL{req: req, expires: expires}
	return nil
}

// take removes the entry for path and returns its request, unless there is
// none or it has expired.
func (u *streamURLs) take(path string) (any, bool) {
	u.mu.Lock()
	e, ok := u.entries[path]
	delete(u.entries, path)
	u.mu.Unlock()
	if !ok || u.now().After(e.expires) {
		return nil, false
	}
	return e.req, true
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
