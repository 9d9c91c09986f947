//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crid-dev/crid/internal/testutil/imagebuild"
	"github.com/crid-dev/crid/internal/testutil/registry"
)

var (
	cridBin   string
	crictlBin string
	cacheDir  string
)

func TestMain(m *testing.M) {
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "e2e: these tests need root (CI runs them as root)")
		os.Exit(1)
	}
	tmp, err := os.MkdirTemp("", "crid-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cridBin = filepath.Join(tmp, "crid")
	build := exec.Command("go", "build", "-o", cridBin, "../cmd/crid")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: build crid: %v\n%s", err, out)
		os.Exit(1)
	}
	// crid finds crid-pause beside its binary.
	if out, err := exec.Command("bash", "../hack/build-pause.sh", filepath.Join(tmp, "crid-pause")).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: build crid-pause: %v\n%s", err, out)
		os.Exit(1)
	}
	if crictlBin, err = exec.LookPath("crictl"); err != nil {
		crictlBin = "/usr/local/bin/crictl"
	}
	// Built image layers are cached across runs (bench layers are 400 MiB).
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	cacheDir = filepath.Join(base, "crid", "imagebuild")
	code := m.Run()
	os.RemoveAll(tmp)
	os.Exit(code)
}

// daemon is one crid process with its own directories and socket.
type daemon struct {
	t        testing.TB
	dir      string
	root     string
	state    string
	sock     string
	certsDir string
	config   string
	// net is the daemon's pod network; its config is installed unless the
	// test asked withoutPodNetwork.
	net      *podNet
	noPodNet bool
	// extraCNIBinDir is searched for plugins before the standard dirs.
	extraCNIBinDir string

	mu   sync.Mutex
	cmd  *exec.Cmd
	logs *bytes.Buffer
	done chan error

	conn *grpc.ClientConn
}

type daemonOption func(*daemon, *strings.Builder)

// withConfig appends TOML to the daemon's config file.
func withConfig(toml string) daemonOption {
	return func(_ *daemon, b *strings.Builder) { b.WriteString(toml + "\n") }
}

// withoutPodNetwork starts the daemon with an empty CNI conf dir: its
// network is not ready until the test installs d.net.
func withoutPodNetwork() daemonOption {
	return func(d *daemon, _ *strings.Builder) { d.noPodNet = true }
}

// startDaemon starts crid and waits until it answers. It is stopped with
// SIGTERM when the test ends, and must exit cleanly.
func startDaemon(t testing.TB, opts ...daemonOption) *daemon {
	t.Helper()
	dir, err := os.MkdirTemp("", "crid-e2e-")
	require.NoError(t, err)
	d := &daemon{
		t:        t,
		dir:      dir,
		root:     filepath.Join(dir, "root"),
		state:    filepath.Join(dir, "state"),
		sock:     filepath.Join(dir, "state", "crid.sock"),
		certsDir: filepath.Join(dir, "certs.d"),
		config:   filepath.Join(dir, "config.toml"),
	}
	require.NoError(t, os.MkdirAll(d.certsDir, 0o755))
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "log_level = 'debug'\n")
	var image strings.Builder
	for _, o := range opts {
		o(d, &image)
	}
	d.net = newPodNet(t, dir)
	if !d.noPodNet {
		d.net.install(t)
	}
	cfg.WriteString(d.net.toml(d.extraCNIBinDir))
	fmt.Fprintf(&cfg, "[image]\nregistry_config_path = %q\n%s", d.certsDir, image.String())
	require.NoError(t, os.WriteFile(d.config, []byte(cfg.String()), 0o644))
	d.start(t)
	t.Cleanup(func() {
		d.stop(t)
		d.net.remove()
		if !t.Failed() {
			os.RemoveAll(d.dir)
		} else {
			t.Logf("daemon dir kept: %s", d.dir)
		}
	})
	return d
}

func (d *daemon) start(t testing.TB) {
	t.Helper()
	d.mu.Lock()
	cmd := exec.Command(cridBin, "--config", d.config, "--root", d.root, "--state", d.state, "--listen", d.sock)
	d.logs = &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = &lockedWriter{mu: &d.mu, w: d.logs}, &lockedWriter{mu: &d.mu, w: d.logs}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(t, cmd.Start())
	d.cmd = cmd
	done := make(chan error, 1)
	d.done = done
	d.mu.Unlock()
	go func() { done <- cmd.Wait() }()

	conn, err := grpc.NewClient("unix://"+d.sock, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20)))
	require.NoError(t, err)
	d.conn = conn
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := d.runtime().Version(ctx, &runtime.VersionRequest{})
		cancel()
		if err == nil {
			return
		}
		select {
		case werr := <-done:
			done <- werr
			t.Fatalf("crid exited during start: %v\n%s", werr, d.Logs())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("crid did not answer on %s: %v\n%s", d.sock, err, d.Logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends SIGTERM and requires a clean exit.
func (d *daemon) stop(t testing.TB) {
	t.Helper()
	if d.cmd == nil {
		return
	}
	if d.conn != nil {
		d.conn.Close()
		d.conn = nil
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.done:
		if err != nil {
			t.Errorf("crid did not exit cleanly on SIGTERM: %v\n%s", err, d.Logs())
		}
	case <-time.After(20 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
		t.Errorf("crid did not exit within 20s of SIGTERM\n%s", d.Logs())
	}
	d.cmd = nil
}

// kill9 kills crid without warning, as a crash would.
func (d *daemon) kill9(t testing.TB) {
	t.Helper()
	if d.conn != nil {
		d.conn.Close()
		d.conn = nil
	}
	require.NoError(t, d.cmd.Process.Kill())
	<-d.done
	d.cmd = nil
}

// restart starts crid again on the same directories.
func (d *daemon) restart(t testing.TB) {
	t.Helper()
	if d.cmd != nil {
		d.stop(t)
	}
	d.start(t)
}

func (d *daemon) Logs() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.logs.String()
}

func (d *daemon) runtime() runtime.RuntimeServiceClient {
	return runtime.NewRuntimeServiceClient(d.conn)
}
func (d *daemon) images() runtime.ImageServiceClient { return runtime.NewImageServiceClient(d.conn) }

// crictl runs crictl against this daemon and returns its stdout; stderr is
// appended to the error.
func (d *daemon) crictl(args ...string) (string, error) {
	full := append([]string{"--runtime-endpoint", "unix://" + d.sock, "--image-endpoint", "unix://" + d.sock,
		"--timeout", "120s"}, args...)
	cmd := exec.Command(crictlBin, full...)
	cmd.Env = append(os.Environ(), "CRI_CONFIG_FILE=/dev/null")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("crictl %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// mustCrictl is crictl that fails the test on error.
func (d *daemon) mustCrictl(t testing.TB, args ...string) string {
	t.Helper()
	out, err := d.crictl(args...)
	require.NoError(t, err, "daemon logs:\n%s", d.Logs())
	return out
}

// writeHosts writes a hosts.toml for registry host.
func (d *daemon) writeHosts(t testing.TB, host, content string) {
	t.Helper()
	dir := filepath.Join(d.certsDir, host)
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "hosts.toml"), []byte(content), 0o644))
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// pushSet starts a registry (with opts) and pushes the named image sets to it.
func pushSet(t testing.TB, sets []string, opts ...registry.Option) (*registry.Registry, map[string]*imagebuild.Pushed) {
	t.Helper()
	reg := registry.Start(t, opts...)
	return reg, pushTo(t, reg, sets...)
}

// pushTo pushes the named image sets to reg, keyed by "repo:tag".
func pushTo(t testing.TB, reg *registry.Registry, sets ...string) map[string]*imagebuild.Pushed {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	b, err := imagebuild.NewBuilder(cacheDir)
	require.NoError(t, err)
	var popts []imagebuild.PushOption
	if u, p := reg.Credentials(); u != "" {
		popts = append(popts, imagebuild.WithBasicAuth(u, p))
	}
	p, err := imagebuild.NewPusher(reg.Addr(), popts...)
	require.NoError(t, err)
	out := map[string]*imagebuild.Pushed{}
	for _, s := range sets {
		targets, err := imagebuild.Set(s)
		require.NoError(t, err)
		for _, tg := range targets {
			pushed, err := imagebuild.BuildAndPush(ctx, b, p, tg)
			require.NoError(t, err)
			out[tg.Ref()] = pushed
		}
	}
	return out
}
