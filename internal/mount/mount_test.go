package mount

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/crid-dev/crid/internal/testutil"
)

// isMountPoint reports whether p is the root of a mount (its device
// differs from its parent's, or /proc/self/mountinfo lists it).
func isMountPoint(t *testing.T, p string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == p {
			return true
		}
	}
	return false
}

func mountT(t *testing.T, mounts []Mount, target string) {
	t.Helper()
	require.NoError(t, All(mounts, target))
	t.Cleanup(func() { require.NoError(t, Unmount(target)) })
}

func TestBindReadOnly(t *testing.T) {
	testutil.RequiresRoot(t)
	src, target := t.TempDir(), t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(src, "f"), []byte("x"), 0o644))
	mountT(t, []Mount{{Type: "bind", Source: src, Options: []string{"rbind", "ro"}}}, target)

	require.True(t, isMountPoint(t, target))
	require.FileExists(t, filepath.Join(target, "f"))
	err := os.WriteFile(filepath.Join(target, "g"), []byte("x"), 0o644)
	require.ErrorIs(t, err, unix.EROFS)

	require.NoError(t, Unmount(target))
	require.False(t, isMountPoint(t, target))
	require.NoFileExists(t, filepath.Join(target, "f"))
	require.NoError(t, Unmount(target), "unmounting what is not mounted is fine")
	require.NoError(t, Unmount(filepath.Join(target, "missing")))
}

func TestBindReadWrite(t *testing.T) {
	testutil.RequiresRoot(t)
	src, target := t.TempDir(), t.TempDir()
	mountT(t, []Mount{{Type: "bind", Source: src, Options: []string{"rbind", "rw"}}}, target)
	require.NoError(t, os.WriteFile(filepath.Join(target, "g"), []byte("x"), 0o644))
	require.FileExists(t, filepath.Join(src, "g"))
}

// TestOverlayManyLayers mounts an overlay whose options are longer than a
// page, which only works through the compacted, relative lowerdir.
func TestOverlayManyLayers(t *testing.T) {
	testutil.RequiresRoot(t)
	base := t.TempDir()
	const layers = 200
	lowers := make([]string, layers)
	for i := range layers {
		// Top first: lowers[0] is the topmost layer.
		d := filepath.Join(base, "l", fmt.Sprintf("layer-%03d", i))
		require.NoError(t, os.MkdirAll(d, 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(d, fmt.Sprintf("f%03d", i)), nil, 0o644))
		require.NoError(t, os.WriteFile(filepath.Join(d, "shared"), []byte(fmt.Sprint(i)), 0o644))
		lowers[i] = d
	}
	upper, work, target := filepath.Join(base, "upper"), filepath.Join(base, "work"), t.TempDir()
	require.NoError(t, os.Mkdir(upper, 0o755))
	require.NoError(t, os.Mkdir(work, 0o700))
	opts := []string{"lowerdir=" + strings.Join(lowers, ":"), "upperdir=" + upper, "workdir=" + work}
	require.Greater(t, len(strings.Join(opts, ",")), unix.Getpagesize())

	cwd, err := os.Getwd()
	require.NoError(t, err)
	mountT(t, []Mount{{Type: "overlay", Source: "overlay", Options: opts}}, target)
	after, err := os.Getwd()
	require.NoError(t, err)
	require.Equal(t, cwd, after, "the process's working directory is untouched")

	for i := range layers {
		require.FileExists(t, filepath.Join(target, fmt.Sprintf("f%03d", i)))
	}
	b, err := os.ReadFile(filepath.Join(target, "shared"))
	require.NoError(t, err)
	require.Equal(t, "0", string(b), "the first lowerdir is the top layer")
}

func TestOverlayTooManyLayers(t *testing.T) {
	testutil.RequiresRoot(t)
	base := t.TempDir()
	lowers := make([]string, 600)
	for i := range lowers {
		lowers[i] = filepath.Join(base, fmt.Sprintf("a-rather-long-layer-name-%04d", i))
	}
	err := All([]Mount{{Type: "overlay", Source: "overlay", Options: []string{"lowerdir=" + strings.Join(lowers, ":")}}}, t.TempDir())
	require.ErrorContains(t, err, "do not fit in a page")
}

func TestUnmountBusy(t *testing.T) {
	testutil.RequiresRoot(t)
	src, target := t.TempDir(), t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(src, "f"), []byte("x"), 0o644))
	require.NoError(t, All([]Mount{{Type: "bind", Source: src, Options: []string{"rbind"}}}, target))
	// An open file keeps the mount busy for every retry.
	f, err := os.Open(filepath.Join(target, "f"))
	require.NoError(t, err)
	defer f.Close()
	start := time.Now()
	require.NoError(t, Unmount(target))
	require.GreaterOrEqual(t, time.Since(start), busyRetries*busyDelay, "it retried before detaching")
	require.False(t, isMountPoint(t, target), "a busy mount is detached in the end")
}

func TestAllRollsBack(t *testing.T) {
	testutil.RequiresRoot(t)
	src, target := t.TempDir(), t.TempDir()
	err := All([]Mount{
		{Type: "bind", Source: src, Options: []string{"rbind"}},
		{Type: "bind", Source: filepath.Join(src, "missing"), Options: []string{"rbind"}},
	}, target)
	require.Error(t, err)
	require.False(t, isMountPoint(t, target), "the first mount is undone")
}

func TestCommonDir(t *testing.T) {
	for _, tc := range []struct {
		desc  string
		paths []string
		want  string
	}{
		{desc: "siblings", paths: []string{"/r/l/a", "/r/l/b"}, want: "/r/l"},
		{desc: "one", paths: []string{"/r/l/a"}, want: "/r/l"},
		{desc: "prefix is not a directory", paths: []string{"/r/lab/a", "/r/la/b"}, want: "/r"},
		{desc: "only root", paths: []string{"/a/x", "/b/y"}, want: "/"},
		{desc: "relative", paths: []string{"a", "b"}, want: ""},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			require.Equal(t, tc.want, commonDir(tc.paths))
		})
	}
}
