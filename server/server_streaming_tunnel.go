package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"

	"golang.org/x/net/websocket"
	"k8s.io/cri-streaming/pkg/streaming/portforward"
	"k8s.io/streaming/pkg/httpstream"
	"k8s.io/streaming/pkg/httpstream/spdy"
	"k8s.io/streaming/pkg/httpstream/wsstream"
)

// Port-forward tunnelled in WebSocket (KEP-4006): client-go's
// SPDY-over-WebSocket dialer (crictl port-forward --transport websocket)
// asks for the subprotocol
// "SPDY/3.1+portforward.k8s.io" and then speaks SPDY in the WebSocket's
// binary messages, with no HTTP upgrade inside. cri-streaming serves
// port-forward over SPDY, and over WebSocket only with its own channel
// protocol, which these clients do not speak.
//
// crid hands the library the SPDY upgrade request the WebSocket request
// stands for, with a response writer that turns the library's 101
// Switching Protocols into the WebSocket handshake and gives the library the
// WebSocket as the hijacked connection: the library's port-forward then runs
// unchanged on top of it.

// servePortForwardTunnel serves a port-forward request tunnelled in
// WebSocket. The session ends when the library is done with the connection
// (the client closed it or went away) or at Close, which closes the
// connection.
func (s *StreamServer) servePortForwardTunnel(w http.ResponseWriter, r *http.Request) {
	ctx, done, err := s.session(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer done()
	t := &tunnelWriter{hw: &hijackWatcher{ResponseWriter: w}, r: r, release: make(chan struct{})}
	defer t.finish()
	stop := context.AfterFunc(ctx, t.hw.abort)
	defer stop()
	s.lib.ServeHTTP(t, tunnelledRequest(r))
}

// tunnelledRequest is the SPDY upgrade request that r, a WebSocket request
// for tunnelled SPDY, stands for: it asks for the protocols r asks for,
// without the tunnelling prefix.
func tunnelledRequest(r *http.Request) *http.Request {
	spdyReq := r.Clone(r.Context())
	spdyReq.Header.Set(httpstream.HeaderConnection, httpstream.HeaderUpgrade)
	spdyReq.Header.Set(httpstream.HeaderUpgrade, spdy.HeaderSpdy31)
	spdyReq.Header.Del(httpstream.HeaderProtocolVersion)
	for _, v := range r.Header.Values(wsstream.WebSocketProtocolHeader) {
		for p := range strings.SplitSeq(v, ",") {
			if p, ok := strings.CutPrefix(strings.TrimSpace(p), portforward.WebsocketsSPDYTunnelingPrefix); ok {
				spdyReq.Header.Add(httpstream.HeaderProtocolVersion, p)
			}
		}
	}
	return spdyReq
}

// tunnelWriter is the library's response writer for a tunnelled request.
// Until the library switches protocols, everything goes to the real
// response (so a failed negotiation reaches the client as an HTTP error);
// the 101 is the WebSocket handshake, with the subprotocol the library
// negotiated, and Hijack returns the WebSocket. The library calls it from
// one goroutine.
type tunnelWriter struct {
	hw      *hijackWatcher // the real response
	r       *http.Request  // the WebSocket request
	release chan struct{}  // closed by finish: the WebSocket handler returns
	served  chan struct{}  // closed when the WebSocket server returns; nil before the 101
	ws      *websocket.Conn
}

func (t *tunnelWriter) Header() http.Header { return t.hw.Header() }

func (t *tunnelWriter) Write(b []byte) (int, error) {
	if t.served != nil {
		return 0, http.ErrHijacked
	}
	return t.hw.Write(b)
}

func (t *tunnelWriter) WriteHeader(code int) {
	if t.served != nil {
		return
	}
	if code != http.StatusSwitchingProtocols {
		t.hw.WriteHeader(code)
		return
	}
	protocol := portforward.WebsocketsSPDYTunnelingPrefix + t.hw.Header().Get(httpstream.HeaderProtocolVersion)
	accepted := make(chan *websocket.Conn, 1)
	t.served = make(chan struct{})
	go func() {
		defer close(t.served)
		websocket.Server{
			Handshake: func(c *websocket.Config, _ *http.Request) error {
				if !slices.Contains(c.Protocol, protocol) {
					return fmt.Errorf("subprotocol %s not requested", protocol)
				}
				c.Protocol = []string{protocol}
				return nil
			},
			Handler: func(ws *websocket.Conn) {
				ws.PayloadType = websocket.BinaryFrame // client-go reads binary messages only
				accepted <- ws
				<-t.release // the connection is the library's until finish
			},
		}.ServeHTTP(t.hw, t.r)
	}()
	select {
	case t.ws = <-accepted:
	case <-t.served: // handshake failed; the server answered the client
	}
}

func (t *tunnelWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if t.ws == nil {
		return nil, nil, errors.New("server: port-forward tunnel: no websocket")
	}
	c := tunnelConn{t.ws}
	return c, bufio.NewReadWriter(bufio.NewReader(c), bufio.NewWriter(c)), nil
}

// tunnelConn is the WebSocket as the library's SPDY connection. Its Close
// reports no error: spdystream keeps a goroutine for a second to hand a
// close error to a reader that the library never has, and closing a
// WebSocket whose client has gone (or that finish aborted) fails.
type tunnelConn struct{ *websocket.Conn }

func (c tunnelConn) Close() error {
	_ = c.Conn.Close()
	return nil
}

// finish closes the connection, if the library has not, and waits for the
// WebSocket server goroutine.
func (t *tunnelWriter) finish() {
	t.hw.abort()
	close(t.release)
	if t.served != nil {
		<-t.served
	}
}
