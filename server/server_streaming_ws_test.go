package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"golang.org/x/net/websocket"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/streaming/pkg/httpstream/spdy"

	"github.com/crid-dev/crid/container"
)

// scriptStreams is a ContainerStreams and PortForwarder whose exec
// sessions do what their command names:
//
//	echo N   "out\n" on stdout, "err\n" on stderr, exit code N
//	cat      stdin to stdout; at stdin's EOF "EOF" on stderr, exit 0
//	resize   the first terminal size as WxH on stdout, exit 0
//	fail     a NotFound error
//	block    until its context ends
//
// Attach copies stdin to stdout until EOF (container "fail": an error);
// PortForward echoes the stream. Every session's end is sent on ended.
type scriptStreams struct {
	started chan string // block and attach sessions, once running
	ended   chan string
	mu      sync.Mutex
	ports   []string // "sandbox:port" of each port-forward
}

func newScriptStreams() *scriptStreams {
	return &scriptStreams{started: make(chan string, 16), ended: make(chan string, 16)}
}

func (f *scriptStreams) Exec(ctx context.Context, _ string, cmd []string, stdin io.Reader, stdout, stderr io.Writer, _ bool, resize <-chan container.TermSize) (int, error) {
	defer func() { f.ended <- cmd[0] }()
	switch cmd[0] {
	case "echo":
		_, _ = io.WriteString(stdout, "out\n")
		_, _ = io.WriteString(stderr, "err\n")
		return strconv.Atoi(cmd[1])
	case "cat":
		if _, err := io.Copy(stdout, stdin); err != nil {
			return -1, err
		}
		_, _ = io.WriteString(stderr, "EOF")
		return 0, nil
	case "resize":
		select {
		case sz := <-resize:
			_, _ = fmt.Fprintf(stdout, "%dx%d", sz.Width, sz.Height)
			return 0, nil
		case <-ctx.Done():
			return -1, ctx.Err()
		}
	case "fail":
		return -1, fmt.Errorf("no such thing: %w", errdefs.ErrNotFound)
	case "block":
		f.started <- "block"
		<-ctx.Done()
		return -1, ctx.Err()
	}
	return -1, fmt.Errorf("unknown command %q", cmd[0])
}

func (f *scriptStreams) Attach(ctx context.Context, id string, stdin io.Reader, stdout, _ io.Writer, _ bool, _ <-chan container.TermSize) error {
	defer func() { f.ended <- "attach" }()
	if id == "fail" {
		return fmt.Errorf("container %s: %w", id, errdefs.ErrFailedPrecondition)
	}
	f.started <- "attach"
	_, err := io.Copy(stdout, stdin)
	return err
}

func (f *scriptStreams) PortForward(_ context.Context, sandboxID string, port int32, s io.ReadWriteCloser) error {
	defer func() { f.ended <- "portforward" }()
	defer s.Close()
	f.mu.Lock()
	f.ports = append(f.ports, fmt.Sprintf("%s:%d", sandboxID, port))
	f.mu.Unlock()
	_, err := io.Copy(s, s)
	return err
}

// startStreamServer serves a stream server on loopback; stop closes it
// (once: it may be deferred as well).
func startStreamServer(t *testing.T) (ss *StreamServer, fake *scriptStreams, stop func()) {
	t.Helper()
	fake = newScriptStreams()
	ss, err := NewStreamServer(StreamServerConfig{Addr: "127.0.0.1:0", Containers: fake, Sandboxes: fake})
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- ss.Serve() }()
	var once sync.Once
	return ss, fake, func() {
		once.Do(func() {
			assert.NoError(t, ss.Close())
			assert.NoError(t, <-served)
		})
	}
}

// dialWS opens a WebSocket to a stream URL with the subprotocol protocol.
func dialWS(t *testing.T, streamURL, protocol string) (*websocket.Conn, error) {
	t.Helper()
	cfg, err := websocket.NewConfig(strings.Replace(streamURL, "http://", "ws://", 1), "http://localhost/")
	require.NoError(t, err)
	cfg.Protocol = []string{protocol}
	ws, err := websocket.DialConfig(cfg)
	if err != nil {
		return nil, err
	}
	require.NoError(t, ws.SetDeadline(time.Now().Add(10*time.Second)))
	return ws, nil
}

// send writes one binary message: channel, then data.
func send(t *testing.T, ws *websocket.Conn, channel byte, data string) {
	t.Helper()
	require.NoError(t, websocket.Message.Send(ws, append([]byte{channel}, data...)))
}

// readSession reads messages until the server closes the connection and
// returns what each channel got, and the status from the error channel.
func readSession(t *testing.T, ws *websocket.Conn) (map[byte]string, wsStatus) {
	t.Helper()
	got := map[byte]string{}
	for {
		var msg []byte
		if err := websocket.Message.Receive(ws, &msg); err != nil {
			require.ErrorIs(t, err, io.EOF, "the server closes the session")
			break
		}
		require.NotEmpty(t, msg, "every message starts with its channel")
		got[msg[0]] += string(msg[1:])
	}
	var st wsStatus
	if got[3] != "" {
		require.NoError(t, json.Unmarshal([]byte(got[3]), &st), "%q", got[3])
	}
	return got, st
}

// noKeepAlive does not keep connections (and their goroutines) around.
var noKeepAlive = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

func httpStatus(t *testing.T, u string) int {
	t.Helper()
	resp, err := noKeepAlive.Get(u)
	require.NoError(t, err)
	resp.Body.Close()
	return resp.StatusCode
}

func TestStreamServerWebSocketExec(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ss, fake, stop := startStreamServer(t)
	defer stop()

	for _, tc := range []struct {
		desc       string
		req        *runtime.ExecRequest
		input      [][]byte // messages sent, channel first
		wantOut    string
		wantErr    string
		wantStatus wsStatus
	}{{
		desc:       "stdout, stderr, exit 0",
		req:        &runtime.ExecRequest{Cmd: []string{"echo", "0"}, Stdout: true, Stderr: true},
		wantOut:    "out\n",
		wantErr:    "err\n",
		wantStatus: wsStatus{Status: "Success"},
	}, {
		desc:    "non-zero exit code",
		req:     &runtime.ExecRequest{Cmd: []string{"echo", "3"}, Stdout: true, Stderr: true},
		wantOut: "out\n",
		wantErr: "err\n",
		wantStatus: wsStatus{Status: "Failure", Reason: "NonZeroExitCode",
			Message: "command terminated with non-zero exit code: command terminated with exit code 3",
			Details: &wsStatusDetails{Causes: []wsStatusCause{{Type: "ExitCode", Message: "3"}}}},
	}, {
		desc: "stdin, then its close signal as EOF",
		req:  &runtime.ExecRequest{Cmd: []string{"cat"}, Stdin: true, Stdout: true, Stderr: true},
		input: [][]byte{
			append([]byte{0}, "hello "...),
			append([]byte{0}, "world"...),
			{255, 0}, // v5 CLOSE of stdin
		},
		wantOut:    "hello world",
		wantErr:    "EOF",
		wantStatus: wsStatus{Status: "Success"},
	}, {
		desc:       "terminal resize",
		req:        &runtime.ExecRequest{Cmd: []string{"resize"}, Tty: true, Stdin: true, Stdout: true},
		input:      [][]byte{append([]byte{4}, `{"Width":100,"Height":30}`...)},
		wantOut:    "100x30",
		wantStatus: wsStatus{Status: "Success"},
	}, {
		desc: "error",
		req:  &runtime.ExecRequest{Cmd: []string{"fail"}, Stdout: true},
		wantStatus: wsStatus{Status: "Failure", Reason: "InternalError", Code: 500,
			Message: "Internal error occurred: error executing command in container: rpc error: code = NotFound desc = no such thing: not found"},
	}} {
		t.Run(tc.desc, func(t *testing.T) {
			tc.req.ContainerId = "c"
			resp, err := ss.getExec(tc.req)
			require.NoError(t, err)
			ws, err := dialWS(t, resp.GetUrl(), "v5.channel.k8s.io")
			require.NoError(t, err)
			defer ws.Close()
			assert.Equal(t, []string{"v5.channel.k8s.io"}, ws.Config().Protocol)
			for _, m := range tc.input {
				require.NoError(t, websocket.Message.Send(ws, m))
			}
			got, st := readSession(t, ws)
			assert.Equal(t, tc.wantOut, got[1], "stdout")
			assert.Equal(t, tc.wantErr, got[2], "stderr")
			assert.Equal(t, tc.wantStatus, st)
			assert.Equal(t, tc.req.Cmd[0], <-fake.ended)

			// The URL was for one use.
			_, err = dialWS(t, resp.GetUrl(), "v5.channel.k8s.io")
			assert.Error(t, err, "a used URL over WebSocket")
			assert.Equal(t, http.StatusNotFound, httpStatus(t, resp.GetUrl()), "a used URL")
		})
	}
}

func TestStreamServerWebSocketAttach(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ss, fake, stop := startStreamServer(t)
	defer stop()

	resp, err := ss.getAttach(&runtime.AttachRequest{ContainerId: "c", Stdin: true, Stdout: true})
	require.NoError(t, err)
	ws, err := dialWS(t, resp.GetUrl(), "v5.channel.k8s.io")
	require.NoError(t, err)
	defer ws.Close()
	assert.Equal(t, "attach", <-fake.started)
	send(t, ws, 0, "typed")
	require.NoError(t, websocket.Message.Send(ws, []byte{255, 0})) // detach
	got, st := readSession(t, ws)
	assert.Equal(t, "typed", got[1])
	assert.Equal(t, wsStatus{Status: "Success"}, st)
	assert.Equal(t, "attach", <-fake.ended)

	resp, err = ss.getAttach(&runtime.AttachRequest{ContainerId: "fail", Stdout: true})
	require.NoError(t, err)
	ws, err = dialWS(t, resp.GetUrl(), "v5.channel.k8s.io")
	require.NoError(t, err)
	defer ws.Close()
	_, st = readSession(t, ws)
	assert.Equal(t, "Failure", st.Status)
	assert.Equal(t, "InternalError", st.Reason)
	assert.Contains(t, st.Message, "error attaching to container")
	assert.Equal(t, "attach", <-fake.ended)
}

// TestStreamServerOlderProtocols: what crid does not serve goes to the
// library, and a URL serves once whichever of the two served it first.
func TestStreamServerOlderProtocols(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ss, fake, stop := startStreamServer(t)
	defer stop()
	req := &runtime.ExecRequest{ContainerId: "c", Cmd: []string{"echo", "3"}, Stdout: true, Stderr: true}

	resp, err := ss.getExec(req)
	require.NoError(t, err)
	ws, err := dialWS(t, resp.GetUrl(), "v4.channel.k8s.io")
	require.NoError(t, err, "the library's v4")
	defer ws.Close()
	got, st := readSession(t, ws)
	assert.Equal(t, "out\n", got[1])
	assert.Equal(t, "NonZeroExitCode", st.Reason)
	assert.Equal(t, "echo", <-fake.ended)
	_, err = dialWS(t, resp.GetUrl(), "v5.channel.k8s.io")
	assert.Error(t, err, "used by the library, refused by crid")

	resp, err = ss.getExec(req)
	require.NoError(t, err)
	assert.Equal(t, http.StatusBadRequest, httpStatus(t, resp.GetUrl()), "the library's answer to a request that is no upgrade")
	assert.Equal(t, http.StatusNotFound, httpStatus(t, resp.GetUrl()), "used")

	assert.Equal(t, http.StatusNotFound, httpStatus(t, "http://"+ss.Addr()+"/exec/nope"))
}

func TestStreamServerWebSocketSessionEnds(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ss, fake, stop := startStreamServer(t)
	defer stop()
	req := &runtime.ExecRequest{ContainerId: "c", Cmd: []string{"block"}, Stdin: true, Stdout: true}

	// The client goes away: the session's context ends.
	resp, err := ss.getExec(req)
	require.NoError(t, err)
	ws, err := dialWS(t, resp.GetUrl(), "v5.channel.k8s.io")
	require.NoError(t, err)
	assert.Equal(t, "block", <-fake.started)
	require.NoError(t, ws.Close())
	select {
	case <-fake.ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the session outlived its client")
	}

	// Close ends the sessions in flight.
	resp, err = ss.getExec(req)
	require.NoError(t, err)
	ws, err = dialWS(t, resp.GetUrl(), "v5.channel.k8s.io")
	require.NoError(t, err)
	defer ws.Close()
	assert.Equal(t, "block", <-fake.started)
	stop()
	<-fake.ended
	var msg []byte
	for err == nil {
		err = websocket.Message.Receive(ws, &msg)
	}
}

func TestStreamServerPortForwardTunnel(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ss, fake, stop := startStreamServer(t)
	defer stop()

	resp, err := ss.getPortForward(&runtime.PortForwardRequest{PodSandboxId: "p", Port: []int32{80}})
	require.NoError(t, err)
	ws, err := dialWS(t, resp.GetUrl(), "SPDY/3.1+portforward.k8s.io")
	require.NoError(t, err)
	defer ws.Close()
	assert.Equal(t, []string{"SPDY/3.1+portforward.k8s.io"}, ws.Config().Protocol)
	ws.PayloadType = websocket.BinaryFrame
	require.NoError(t, ws.SetDeadline(time.Time{}))       // SPDY sets its own
	conn, err := spdy.NewClientConnection(tunnelConn{ws}) // as crid's side: no spdystream goroutine lingering on a close error
	require.NoError(t, err)
	defer conn.Close()

	// One forwarded connection, as client-go makes it: an error stream
	// and a data stream with the same request ID.
	h := http.Header{}
	h.Set("streamType", "error")
	h.Set("port", "80")
	h.Set("requestID", "0")
	errStream, err := conn.CreateStream(h)
	require.NoError(t, err)
	require.NoError(t, errStream.Close())
	h.Set("streamType", "data")
	data, err := conn.CreateStream(h)
	require.NoError(t, err)
	_, err = io.WriteString(data, "ping")
	require.NoError(t, err)
	buf := make([]byte, 4)
	_, err = io.ReadFull(data, buf)
	require.NoError(t, err)
	assert.Equal(t, "ping", string(buf), "echoed through the tunnel")
	require.NoError(t, data.Close())
	assert.Equal(t, "portforward", <-fake.ended)
	fake.mu.Lock()
	assert.Equal(t, []string{"p:80"}, fake.ports)
	fake.mu.Unlock()
	require.NoError(t, conn.Close())

	_, err = dialWS(t, resp.GetUrl(), "SPDY/3.1+portforward.k8s.io")
	assert.Error(t, err, "a used URL")

	resp, err = ss.getPortForward(&runtime.PortForwardRequest{PodSandboxId: "p", Port: []int32{80}})
	require.NoError(t, err)
	_, err = dialWS(t, resp.GetUrl(), "SPDY/3.1+v9.portforward.k8s.io")
	assert.Error(t, err, "a protocol the library does not speak")

	// Close ends a tunnel in use.
	resp, err = ss.getPortForward(&runtime.PortForwardRequest{PodSandboxId: "p", Port: []int32{80}})
	require.NoError(t, err)
	ws, err = dialWS(t, resp.GetUrl(), "SPDY/3.1+portforward.k8s.io")
	require.NoError(t, err)
	defer ws.Close()
	ws.PayloadType = websocket.BinaryFrame
	require.NoError(t, ws.SetDeadline(time.Time{}))
	conn, err = spdy.NewClientConnection(tunnelConn{ws})
	require.NoError(t, err)
	defer conn.Close()
	h.Set("requestID", "1")
	h.Set("streamType", "error")
	errStream, err = conn.CreateStream(h)
	require.NoError(t, err)
	require.NoError(t, errStream.Close())
	h.Set("streamType", "data")
	data, err = conn.CreateStream(h)
	require.NoError(t, err)
	_, err = io.WriteString(data, "ping")
	require.NoError(t, err)
	_, err = io.ReadFull(data, buf)
	require.NoError(t, err)
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end the tunnel")
	}
	assert.Equal(t, "portforward", <-fake.ended)
	<-conn.CloseChan()
}

func TestStreamURLsExpire(t *testing.T) {
	u := newStreamURLs()
	now := time.Unix(1000, 0)
	u.now = func() time.Time { return now }
	req := &runtime.ExecRequest{ContainerId: "c"}
	require.NoError(t, u.add("http://127.0.0.1:1/exec/a", req, u.expiry()))
	require.NoError(t, u.add("http://127.0.0.1:1/exec/b", req, u.expiry()))

	got, ok := u.take("/exec/a")
	require.True(t, ok)
	assert.Same(t, req, got)
	_, ok = u.take("/exec/a")
	assert.False(t, ok, "taken")

	now = now.Add(streamURLTTL + time.Second)
	require.NoError(t, u.add("http://127.0.0.1:1/exec/c", req, u.expiry()))
	u.mu.Lock()
	assert.Len(t, u.entries, 1, "expired entries are forgotten")
	u.mu.Unlock()
	_, ok = u.take("/exec/b")
	assert.False(t, ok, "expired")
	_, ok = u.take("/exec/c")
	assert.True(t, ok)
}
