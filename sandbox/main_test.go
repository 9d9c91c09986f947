package sandbox

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/crid-dev/crid/internal/mount"
	"github.com/crid-dev/crid/internal/testutil"
)

// pauseEnv makes the test binary act as the pause process, so that tests do
// not depend on cmd/crid.
const pauseEnv = "CRID_SANDBOX_TEST_PAUSE"

func TestMain(m *testing.M) {
	if os.Getenv(pauseEnv) == "1" {
		PauseMain()
		return
	}
	if err := os.Setenv(pauseEnv, "1"); err != nil { // inherited by the pause processes
		panic(err)
	}
	os.Exit(m.Run())
}

// newManager returns a Manager on a fresh state dir, removing its sandboxes
// and the state dir mount when the test ends.
func newManager(t *testing.T) (*Manager, string) {
	t.Helper()
	testutil.RequiresRoot(t)
	stateDir := filepath.Join(t.TempDir(), "sandboxes")
	m, err := New(context.Background(), Options{StateDir: stateDir, PauseCommand: []string{"/proc/self/exe"}})
	require.NoError(t, err)
	t.Cleanup(func() {
		// A fresh Manager sees whatever the test's Managers left.
		m, err := New(context.Background(), Options{StateDir: stateDir, PauseCommand: []string{"/proc/self/exe"}})
		require.NoError(t, err)
		for _, sb := range m.List(Filter{}) {
			require.NoError(t, m.Remove(context.Background(), sb.ID))
		}
		require.NoError(t, mount.Unmount(stateDir))
	})
	return m, stateDir
}

func podConfig(name string) Config {
	return Config{
		Metadata:     Metadata{Name: name, Namespace: "default", UID: "uid-" + name, Attempt: 0},
		Hostname:     "host-" + name,
		DNS:          DNSConfig{Servers: []string{"10.96.0.10"}, Searches: []string{"default.svc.cluster.local", "svc.cluster.local"}, Options: []string{"ndots:5"}},
		Labels:       map[string]string{"app": name},
		CgroupParent: "/kubepods/pod" + name,
	}
}

func run(t *testing.T, m *Manager, cfg Config) *Sandbox {
	t.Helper()
	sb, err := m.Run(context.Background(), cfg)
	require.NoError(t, err)
	return sb
}

func inode(t *testing.T, p string) uint64 {
	t.Helper()
	var st unix.Stat_t
	require.NoError(t, unix.Stat(p, &st), p)
	return st.Ino
}

// inNamespace runs fn on a locked thread that joined the namespace pinned at
// path (never unlocked: the thread dies with the goroutine).
func inNamespace(t *testing.T, path string, nstype int, fn func() error) error {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, nstype); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	return string(b)
}

// mountsUnder lists the mount points strictly below dir.
func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	mps, err := mountPoints(func(p string) bool { return strings.HasPrefix(p, dir+"/") })
	require.NoError(t, err)
	return mps
}
