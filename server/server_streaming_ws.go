package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
	remotecommand "k8s.io/cri-streaming/pkg/streaming/remotecommand"
	"k8s.io/streaming/pkg/httpstream/wsstream"
	utilexec "k8s.io/utils/exec"

	"github.com/crid-dev/crid/internal/log"
)

// WebSocket exec and attach with v5.channel.k8s.io, the only subprotocol
// client-go's WebSocket executor speaks (crictl exec and attach
// --transport websocket). It is v4 (channels stdin 0, stdout 1, stderr 2,
// error 3, resize 4; a metav1.Status on the error channel) plus the CLOSE
// signal: a [255, channel] message half-closes a channel, which is how a
// client's stdin reaches EOF. cri-streaming v0.37.2 registers only up to v4
// for WebSocket; wsstream.Conn handles CLOSE once the protocol is
// registered, so crid serves v5 with it and calls the leaves through
// streamRuntime, as the library does.
//
// Known limit, shared with the library's WebSocket path (same wsstream
// reader): stdin that nothing takes (attach to a container without stdin;
// a process that does not read it, once its pipe is full) stops the
// connection's reader, so neither the client's pings nor its going away
// are seen until the session ends otherwise.

const (
	// protocolV5 is the one subprotocol serveV5 offers.
	protocolV5 = remotecommand.StreamProtocolV5Name
	// wsCloseTimeout bounds the end of a session, writing its status and
	// closing its connection, which block on a client that stopped reading.
	wsCloseTimeout = 10 * time.Second
)

// v5Streams are a session's streams for the leaves: nil interfaces for the
// ones its request did not ask for.
type v5Streams struct {
	stdin          io.Reader
	stdout, stderr io.WriteCloser
	resize         <-chan remotecommand.TerminalSize
}

func (s *StreamServer) serveExecV5(w http.ResponseWriter, r *http.Request, req *runtime.ExecRequest) {
	opts := remotecommand.Options{Stdin: req.GetStdin(), Stdout: req.GetStdout(), Stderr: req.GetStderr(), TTY: req.GetTty()}
	s.serveV5(w, r, opts, func(ctx context.Context, st v5Streams) wsStatus {
		return execStatus(s.rt.Exec(ctx, req.GetContainerId(), req.GetCmd(), st.stdin, st.stdout, st.stderr, opts.TTY, st.resize))
	})
}

func (s *StreamServer) serveAttachV5(w http.ResponseWriter, r *http.Request, req *runtime.AttachRequest) {
	opts := remotecommand.Options{Stdin: req.GetStdin(), Stdout: req.GetStdout(), Stderr: req.GetStderr(), TTY: req.GetTty()}
	s.serveV5(w, r, opts, func(ctx context.Context, st v5Streams) wsStatus {
		if err := s.rt.Attach(ctx, req.GetContainerId(), st.stdin, st.stdout, st.stderr, opts.TTY, st.resize); err != nil {
			return internalStatus(fmt.Errorf("error attaching to container: %w", err))
		}
		return wsStatus{Status: statusSuccess}
	})
}

// serveV5 serves one session with v5.channel.k8s.io; run does its work.
// The session ends when run returns (its status goes on the error channel,
// then the connection closes), when the client goes away, or at Close;
// the last two cancel run's context and close the connection, which
// unblocks every read and write of the session. serveV5 returns once the
// session's goroutines have ended; wsstream's own reader goroutine ends on
// its own once the connection is closed.
func (s *StreamServer) serveV5(w http.ResponseWriter, r *http.Request, opts remotecommand.Options, run func(context.Context, v5Streams) wsStatus) {
	ctx, done, err := s.session(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	hw := &hijackWatcher{ResponseWriter: w, onClose: cancel} // the connection ended: so does the session
	conn := wsstream.NewConn(map[string]wsstream.ChannelProtocolConfig{
		protocolV5: {Binary: true, Channels: v5Channels(opts)},
	})
	conn.SetIdleTimeout(s.idle)
	_, streams, err := conn.Open(hw, r)
	if err != nil {
		log.G(ctx).Warn("websocket stream session: upgrade failed", "error", err)
		return
	}
	stopAbort := context.AfterFunc(ctx, hw.abort)
	defer stopAbort()

	// An empty message on the first channel the client reads tells it the
	// session is up (the library does the same).
	switch {
	case opts.Stdout:
		_, _ = streams[remotecommand.StreamStdOut].Write(nil)
	case opts.Stderr:
		_, _ = streams[remotecommand.StreamStdErr].Write(nil)
	default:
		_, _ = streams[remotecommand.StreamErr].Write(nil)
	}
	var st v5Streams
	if opts.Stdin {
		st.stdin = streams[remotecommand.StreamStdIn]
	}
	if opts.Stdout {
		st.stdout = streams[remotecommand.StreamStdOut]
	}
	if opts.Stderr {
		st.stderr = streams[remotecommand.StreamStdErr]
	}
	var wg sync.WaitGroup
	if opts.TTY {
		resize := make(chan remotecommand.TerminalSize)
		st.resize = resize
		wg.Go(func() { decodeResizes(ctx, streams[remotecommand.StreamResize], resize) })
	}

	status := run(ctx, st)
	if status.Reason == reasonInternalError && ctx.Err() == nil { // not a client gone, not Close
		log.G(ctx).Warn("websocket stream session failed", "error", status.Message)
	}
	closing := time.AfterFunc(wsCloseTimeout, hw.abort)
	defer closing.Stop()
	if b, err := json.Marshal(status); err == nil {
		_, _ = streams[remotecommand.StreamErr].Write(b)
	}
	_ = conn.Close()
	wg.Wait()
}

// v5Channels are the channel types of a session with opts: the streams it
// asked for, the error channel, and the resize channel with a terminal.
func v5Channels(opts remotecommand.Options) []wsstream.ChannelType {
	channel := func(want bool, t wsstream.ChannelType) wsstream.ChannelType {
		if want {
			return t
		}
		return wsstream.IgnoreChannel
	}
	return []wsstream.ChannelType{
		remotecommand.StreamStdIn:  channel(opts.Stdin, wsstream.ReadChannel),
		remotecommand.StreamStdOut: channel(opts.Stdout, wsstream.WriteChannel),
		remotecommand.StreamStdErr: channel(opts.Stderr, wsstream.WriteChannel),
		remotecommand.StreamErr:    wsstream.WriteChannel,
		remotecommand.StreamResize: channel(opts.TTY, wsstream.ReadChannel),
	}
}

// decodeResizes sends the JSON terminal sizes read from r to out until r
// ends (the connection closed) or ctx does, then closes out.
func decodeResizes(ctx context.Context, r io.Reader, out chan<- remotecommand.TerminalSize) {
	defer close(out)
	dec := json.NewDecoder(r)
	for {
		var sz remotecommand.TerminalSize
		if err := dec.Decode(&sz); err != nil {
			return
		}
		select {
		case out <- sz:
		case <-ctx.Done():
			return
		}
	}
}

// wsStatus is the error channel's message from v4 on: a metav1.Status in
// JSON (cri-streaming's type for it is unexported). client-go reads status,
// reason and message, and the exit code from an ExitCode cause.
type wsStatus struct {
	Status  string           `json:"status,omitempty"`
	Message string           `json:"message,omitempty"`
	Reason  string           `json:"reason,omitempty"`
	Details *wsStatusDetails `json:"details,omitempty"`
	Code    int32            `json:"code,omitempty"`
}

type wsStatusDetails struct {
	Causes []wsStatusCause `json:"causes,omitempty"`
}

// wsStatusCause is a metav1.StatusCause, whose Type is "reason" on the wire.
type wsStatusCause struct {
	Type    string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
}

const (
	statusSuccess       = "Success"
	statusFailure       = "Failure"
	reasonInternalError = "InternalError"
)

// execStatus is the status of an exec that streamRuntime.Exec ended with
// err, as the library's ServeExec writes it.
func execStatus(err error) wsStatus {
	var ee utilexec.ExitError
	switch {
	case err == nil:
		return wsStatus{Status: statusSuccess}
	case errors.As(err, &ee) && ee.Exited():
		return wsStatus{
			Status:  statusFailure,
			Reason:  remotecommand.NonZeroExitCodeReason,
			Message: fmt.Sprintf("command terminated with non-zero exit code: %v", ee),
			Details: &wsStatusDetails{Causes: []wsStatusCause{
				{Type: remotecommand.ExitCodeCauseType, Message: strconv.Itoa(ee.ExitStatus())},
			}},
		}
	default:
		return internalStatus(fmt.Errorf("error executing command in container: %w", err))
	}
}

func internalStatus(err error) wsStatus {
	return wsStatus{
		Status:  statusFailure,
		Reason:  reasonInternalError,
		Message: "Internal error occurred: " + err.Error(),
		Code:    http.StatusInternalServerError,
	}
}

// hijackWatcher is a response writer that keeps the connection it hands
// to a WebSocket server. The server closes it when the WebSocket ends,
// whichever side ends it, and that calls onClose; abort closes it under the
// WebSocket, which unblocks a write to a client that stopped reading
// (closing the WebSocket itself would wait for that write).
type hijackWatcher struct {
	http.ResponseWriter
	onClose func()
	// mu guards the fields below.
	mu      sync.Mutex
	conn    net.Conn
	aborted bool
}

func (h *hijackWatcher) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := h.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("server: stream response cannot be hijacked")
	}
	c, rw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	wc := &watchedConn{Conn: c, onClose: h.onClose}
	// Reads go through wc too, after what the HTTP server has buffered, so
	// that reading a connection closed here ends in EOF: wsstream logs any
	// other error as one.
	buffered, _ := rw.Reader.Peek(rw.Reader.Buffered())
	rw.Reader = bufio.NewReader(io.MultiReader(bytes.NewReader(bytes.Clone(buffered)), wc))
	h.mu.Lock()
	h.conn = wc
	aborted := h.aborted
	h.mu.Unlock()
	if aborted {
		// The session ended first. Hand out the connection closed rather
		// than fail: the WebSocket server panics on a failed Hijack.
		_ = wc.Close()
	}
	return wc, rw, nil
}

// abort closes the hijacked connection, now or as soon as there is one.
func (h *hijackWatcher) abort() {
	h.mu.Lock()
	h.aborted = true
	c := h.conn
	h.mu.Unlock()
	if c != nil {
		_ = c.Close()
	}
}

// watchedConn calls onClose (if set) once it is closed; a read on it after
// that ends in EOF.
type watchedConn struct {
	net.Conn
	closed  atomic.Bool
	once    sync.Once
	onClose func()
}

func (c *watchedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil && c.closed.Load() {
		err = io.EOF
	}
	return n, err
}

func (c *watchedConn) Close() error {
	c.closed.Store(true)
	err := c.Conn.Close()
	if c.onClose != nil {
		c.once.Do(c.onClose)
	}
	return err
}
