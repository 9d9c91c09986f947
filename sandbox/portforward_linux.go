package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/containerd/errdefs"
)

// DialInNetNS opens a TCP connection to 127.0.0.1:port inside the network
// namespace pinned at nsPath, or in crid's own namespace when nsPath is
// empty (host-network pods).
//
// The dial runs on a fresh goroutine whose OS thread is locked and setns'd
// into the pod's namespace; that thread is never unlocked, so the Go
// runtime discards it when the goroutine ends instead of reusing a thread
// left in a foreign namespace. The socket keeps the namespace it was
// created in, so the returned conn is used from any goroutine.
func DialInNetNS(ctx context.Context, nsPath string, port int32) (net.Conn, error) {
	if port <= 0 || port > 65535 {
		return nil, fmt.Errorf("port forward: port %d: %w", port, errdefs.ErrInvalidArgument)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port)))
	var d net.Dialer
	if nsPath == "" {
		c, err := d.DialContext(ctx, "tcp4", addr)
		if err != nil {
			return nil, fmt.Errorf("dial %s: %w", addr, err)
		}
		return c, nil
	}
	// DialContext honours ctx, so this is bounded.
	return inNetNS(nsPath, func() (net.Conn, error) {
		c, err := d.DialContext(ctx, "tcp4", addr)
		if err != nil {
			return nil, fmt.Errorf("dial %s in netns %s: %w", addr, nsPath, err)
		}
		return c, nil
	})
}

// PortForward connects stream to port on the loopback of the Ready sandbox
// id and copies both ways until either side closes or ctx ends. It closes
// stream before it returns.
func (m *Manager) PortForward(ctx context.Context, id string, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	sb, err := m.Get(id)
	if err != nil {
		return err
	}
	if sb.State != StateReady {
		return fmt.Errorf("port forward to sandbox %s in state %s: %w", sb.ID, sb.State, errdefs.ErrFailedPrecondition)
	}
	conn, err := DialInNetNS(ctx, sb.NetNSPath, port)
	if err != nil {
		return fmt.Errorf("port forward to sandbox %s: %w", sb.ID, err)
	}
	return Splice(ctx, conn, stream)
}

// Splice copies a→b and b→a. When one direction ends it half-closes the
// other side's write end (when it can) and waits for the other direction;
// when ctx ends, or both directions ended, it closes both. Both goroutines
// have ended when it returns.
func Splice(ctx context.Context, a net.Conn, b io.ReadWriteCloser) error {
	var once sync.Once
	var closed atomic.Bool // errors after the close are its own doing
	closeBoth := func() { once.Do(func() { closed.Store(true); a.Close(); b.Close() }) }
	defer closeBoth()
	errc := make(chan error, 2)
	report := func(err error) {
		if closed.Load() {
			err = nil
		}
		errc <- err
	}
	go func() {
		_, err := io.Copy(a, b)
		if cw, ok := a.(interface{ CloseWrite() error }); ok && err == nil {
			_ = cw.CloseWrite() // the client finished sending: pass EOF on
			report(nil)
			return
		}
		report(err)
		closeBoth()
	}()
	go func() {
		_, err := io.Copy(b, a)
		report(err)
		closeBoth() // the pod side ended: the stream has nothing more
	}()
	var first error
	for range 2 {
		select {
		case err := <-errc:
			if first == nil && err != nil && !errors.Is(err, net.ErrClosed) {
				first = err
			}
		case <-ctx.Done():
			closeBoth()
			ctx = context.Background() // the copies now end; keep collecting
		}
	}
	return first
}
