package sandbox

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/crid-dev/crid/internal/mount"
	"github.com/crid-dev/crid/internal/testutil"
)

// TestCloseReleasesStateMount: Close removes New's bind mount of the state
// dir once no sandbox holds a mount below it, and keeps it otherwise.
func TestCloseReleasesStateMount(t *testing.T) {
	m, stateDir := newManager(t)
	mounted := func() bool {
		mp, err := isMountPoint(stateDir)
		require.NoError(t, err)
		return mp
	}
	require.True(t, mounted())
	sb := run(t, m, podConfig("close"))
	require.NoError(t, m.Close())
	require.True(t, mounted(), "a pod's namespaces live below it: kept")
	require.FileExists(t, sb.NetNSPath)

	require.NoError(t, m.Stop(context.Background(), sb.ID))
	require.NoError(t, m.Remove(context.Background(), sb.ID))
	require.NoError(t, m.Close())
	require.False(t, mounted(), "no pod: released")

	// A new Manager binds it again and works.
	m2, err := New(context.Background(), Options{StateDir: stateDir, PauseCommand: []string{"/proc/self/exe"}})
	require.NoError(t, err)
	require.True(t, mounted())
	sb = run(t, m2, podConfig("again"))
	require.NoError(t, m2.Remove(context.Background(), sb.ID))
	require.NoError(t, m2.Close())
	require.False(t, mounted())
}

// TestCloseKeepsAFilesystemMountedOnStateDir: a state dir that is a
// filesystem of its own (the operator's) is never unmounted.
func TestCloseKeepsAFilesystemMountedOnStateDir(t *testing.T) {
	testutil.RequiresRoot(t)
	stateDir := filepath.Join(t.TempDir(), "sandboxes")
	require.NoError(t, os.Mkdir(stateDir, 0o700))
	require.NoError(t, unix.Mount("tmpfs", stateDir, "tmpfs", 0, ""))
	t.Cleanup(func() { require.NoError(t, mount.Unmount(stateDir)) })
	m, err := New(context.Background(), Options{StateDir: stateDir, PauseCommand: []string{"/proc/self/exe"}})
	require.NoError(t, err)
	require.NoError(t, m.Close())
	mp, err := isMountPoint(stateDir)
	require.NoError(t, err)
	require.True(t, mp, "the operator's tmpfs stays")
}
