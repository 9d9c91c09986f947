package registry

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Binary is where Debian's docker-registry package installs the
// Distribution server.
const Binary = "/usr/bin/docker-registry"

// startTimeout bounds the wait for /v2/ to answer.
const startTimeout = 15 * time.Second

// stopTimeout bounds the wait for the server to exit after SIGTERM.
const stopTimeout = 5 * time.Second

// Registry is a running Distribution server on a loopback port, serving
// plain HTTP, with its storage (delete enabled) in a test's temporary
// directory.
type Registry struct {
	addr     string
	username string
	password string
	cmd      *exec.Cmd
	logs     *syncBuffer
	exited   chan struct{}
	waitErr  error
}

// Option configures Start.
type Option func(*options)

type options struct {
	username, password string
}

// WithBasicAuth makes the registry require user and pass (HTTP basic auth
// checked against an htpasswd file with a bcrypt hash).
func WithBasicAuth(user, pass string) Option {
	return func(o *options) { o.username, o.password = user, pass }
}

// Start runs the Distribution server on 127.0.0.1 and a free port, waits
// until /v2/ answers and stops it when the test ends. The test fails when
// the server is not installed or does not come up; it is never skipped.
func Start(t testing.TB, opts ...Option) *Registry {
	t.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		bin = Binary
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("the Distribution server is missing (%v): install Debian's docker-registry package", err)
	}
	dir := t.TempDir()
	htpasswd := ""
	if o.username != "" || o.password != "" {
		htpasswd = writeHtpasswd(t, dir, o.username, o.password)
	}

	// The free port found may be taken before the server binds it: retry
	// with another.
	var lastErr error
	for range 3 {
		r := &Registry{
			addr:     freeLoopbackAddr(t),
			username: o.username,
			password: o.password,
			logs:     &syncBuffer{},
			exited:   make(chan struct{}),
		}
		config := filepath.Join(dir, "config.yml")
		if err := os.WriteFile(config, []byte(ConfigYAML(r.addr, filepath.Join(dir, "storage"), htpasswd)), 0o600); err != nil {
			t.Fatalf("write registry config: %v", err)
		}
		if lastErr = r.start(bin, config); lastErr != nil {
			if strings.Contains(r.logs.String(), "address already in use") {
				continue
			}
			break
		}
		t.Cleanup(func() {
			if err := r.stop(); err != nil {
				t.Errorf("stop registry %s: %v\n%s", r.addr, err, r.logs.String())
			}
		})
		return r
	}
	t.Fatalf("start registry: %v", lastErr)
	return nil
}

// Addr is the registry's host:port, as it appears in image references.
func (r *Registry) Addr() string { return r.addr }

// URL is the registry's base URL, http://host:port.
func (r *Registry) URL() string { return "http://" + r.addr }

// Credentials are the user and password the registry requires, empty
// without WithBasicAuth.
func (r *Registry) Credentials() (user, pass string) { return r.username, r.password }

// Logs is what the server printed so far.
func (r *Registry) Logs() string { return r.logs.String() }

func (r *Registry) start(bin, config string) error {
	r.cmd = exec.Command(bin, "serve", config)
	r.cmd.Stdout = r.logs
	r.cmd.Stderr = r.logs
	r.cmd.SysProcAttr = sysProcAttr()
	if err := r.cmd.Start(); err != nil {
		return fmt.Errorf("run %s: %w", bin, err)
	}
	go func() {
		r.waitErr = r.cmd.Wait()
		close(r.exited)
	}()
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(startTimeout)
	for time.Now().Before(deadline) {
		select {
		case <-r.exited:
			return fmt.Errorf("registry exited: %v\n%s", r.waitErr, r.logs.String())
		default:
		}
		resp, err := client.Get(r.URL() + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = r.stop()
	return fmt.Errorf("registry on %s did not answer /v2/ within %v\n%s", r.addr, startTimeout, r.logs.String())
}

// stop ends the server: SIGTERM, then SIGKILL if it lingers.
func (r *Registry) stop() error {
	select {
	case <-r.exited:
		return nil
	default:
	}
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-r.exited:
		return nil
	case <-time.After(stopTimeout):
	}
	if err := r.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	<-r.exited
	return nil
}

// ConfigYAML is a Distribution server configuration serving plain HTTP on
// addr with its storage (delete enabled) in root, and basic auth from the
// htpasswd file when it is not "". critest-run starts its registry with it.
func ConfigYAML(addr, root, htpasswd string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
  secret: %s
`, root, addr, randomHex())
	if htpasswd != "" {
		fmt.Fprintf(&b, `auth:
  htpasswd:
    realm: crid-test-registry
    path: %s
`, htpasswd)
	}
	return b.String()
}

// writeHtpasswd writes an htpasswd file for user with a bcrypt hash of
// pass, at the lowest cost so that each request checks it quickly.
func writeHtpasswd(t testing.TB, dir, user, pass string) string {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
	if err != nil {
		t.Fatalf("hash registry password: %v", err)
	}
	file := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(file, []byte(user+":"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatalf("write htpasswd: %v", err)
	}
	return file
}

// freeLoopbackAddr returns 127.0.0.1 and a port that was free a moment ago.
func freeLoopbackAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatalf("release port: %v", err)
	}
	return addr
}

func randomHex() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// syncBuffer collects the server's output from two pipes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
