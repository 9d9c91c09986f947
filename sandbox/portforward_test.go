package sandbox

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// startHTTPD runs busybox httpd on 127.0.0.1:port in the network namespace
// at nsPath ("" for the host's), serving a page that says body.
func startHTTPD(t *testing.T, nsPath string, port int, body string) {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "index.html"), []byte(body), 0o644))
	args := []string{"busybox", "httpd", "-f", "-p", fmt.Sprintf("127.0.0.1:%d", port), "-h", dir}
	if nsPath != "" {
		args = append([]string{"nsenter", "--net=" + nsPath}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
}

// get sends an HTTP/1.0 GET over a stream (its write side half-closed as
// a port-forward client does) and returns the response.
func get(t *testing.T, m *Manager, id string, port int32) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	local, remote := net.Pipe()
	done := make(chan error, 1)
	go func() { done <- m.PortForward(ctx, id, port, remote) }()
	_, err := io.WriteString(local, "GET / HTTP/1.0\r\n\r\n")
	require.NoError(t, err)
	b, _ := io.ReadAll(local)
	require.NoError(t, <-done)
	return string(b)
}

func TestPortForward(t *testing.T) {
	m, _ := newManager(t)
	sb := run(t, m, podConfig("pf"))
	startHTTPD(t, sb.NetNSPath, 8080, "hello from the pod")
	var resp string
	require.Eventually(t, func() bool {
		c, err := DialInNetNS(context.Background(), sb.NetNSPath, 8080)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}, 10*time.Second, 50*time.Millisecond)
	resp = get(t, m, sb.ID, 8080)
	assert.Contains(t, resp, "200 OK")
	assert.Contains(t, resp, "hello from the pod")

	// Several streams at once.
	errs := make(chan string, 5)
	for range 5 {
		go func() { errs <- get(t, m, sb.ID, 8080) }()
	}
	for range 5 {
		assert.Contains(t, <-errs, "hello from the pod")
	}

	// The port is the pod's: the host's loopback has nothing there.
	_, err := net.DialTimeout("tcp4", "127.0.0.1:8080", time.Second)
	if err == nil {
		t.Log("something listens on the host's 127.0.0.1:8080; skipping the isolation check")
	}
	_, err = DialInNetNS(context.Background(), sb.NetNSPath, 8081)
	assert.Error(t, err, "nothing listens on 8081 in the pod")

	assert.True(t, errdefs.IsNotFound(m.PortForward(context.Background(), "nope", 8080, nopRWC{})))
	assert.True(t, errdefs.IsInvalidArgument(m.PortForward(context.Background(), sb.ID, 0, nopRWC{})))
}

func TestPortForwardHostNetwork(t *testing.T) {
	m, _ := newManager(t)
	cfg := podConfig("pfhost")
	cfg.Hostname = ""
	cfg.DNS = DNSConfig{}
	cfg.Namespaces = NamespaceOptions{Network: NamespaceNode, IPC: NamespaceNode, PID: NamespaceNode}
	sb := run(t, m, cfg)
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	require.NoError(t, err)
	port, _ := strconv.Atoi(strings.TrimPrefix(l.Addr().String(), "127.0.0.1:"))
	l.Close()
	startHTTPD(t, "", port, "hello from the host")
	require.Eventually(t, func() bool {
		c, err := net.Dial("tcp4", l.Addr().String())
		if err != nil {
			return false
		}
		c.Close()
		return true
	}, 10*time.Second, 50*time.Millisecond)
	assert.Contains(t, get(t, m, sb.ID, int32(port)), "hello from the host")
}

type nopRWC struct{}

func (nopRWC) Read([]byte) (int, error)    { return 0, io.EOF }
func (nopRWC) Write(p []byte) (int, error) { return len(p), nil }
func (nopRWC) Close() error                { return nil }
