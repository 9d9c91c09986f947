package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/crid-dev/crid/internal/testutil"
	"github.com/crid-dev/crid/snapshotter/internal/tartest"
)

func TestCleanName(t *testing.T) {
	for _, tc := range []struct {
		desc, in, want string
		refused        bool
	}{
		{desc: "plain", in: "usr/bin/sh", want: "usr/bin/sh"},
		{desc: "dot slash", in: "./usr/bin/", want: "usr/bin"},
		{desc: "absolute", in: "/etc/passwd", want: "etc/passwd"},
		{desc: "many leading slashes", in: "//./etc", want: "etc"},
		{desc: "inner dots and slashes", in: "a//b/./c/", want: "a/b/c"},
		{desc: "root dot", in: ".", want: ""},
		{desc: "root dot slash", in: "./", want: ""},
		{desc: "root slash", in: "/", want: ""},
		{desc: "empty", in: "", want: ""},
		{desc: "three dots is a name", in: "a/...", want: "a/..."},
		{desc: "dotdot", in: "..", refused: true},
		{desc: "dotdot prefix", in: "../x", refused: true},
		{desc: "dotdot deep", in: "a/../../x", refused: true},
		{desc: "dotdot inside", in: "a/b/../c", refused: true},
		{desc: "dotdot after root", in: "/../x", refused: true},
		{desc: "nul", in: "a\x00b", refused: true},
		{desc: "too long", in: string(bytes.Repeat([]byte("a/"), 2048)), refused: true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			got, err := cleanName(tc.in)
			if tc.refused {
				require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

// apply runs Apply on the tar of entries.
func apply(t *testing.T, root string, mode WhiteoutMode, entries ...tartest.Entry) error {
	t.Helper()
	b, err := tartest.Tar(entries...)
	require.NoError(t, err)
	_, err = Apply(context.Background(), root, bytes.NewReader(b), mode)
	return err
}

func lstat(t *testing.T, p string) *syscall.Stat_t {
	t.Helper()
	fi, err := os.Lstat(p)
	require.NoError(t, err)
	return fi.Sys().(*syscall.Stat_t)
}

func TestApplyMetadata(t *testing.T) {
	testutil.RequiresRoot(t)
	// A restrictive umask must not leak into the modes the tar asks for.
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)

	root := t.TempDir()
	mtime := time.Unix(1_500_000_000, 123456789)
	dirTime := time.Unix(1_400_000_000, 0)
	entries := []tartest.Entry{
		tartest.Dir("./", 0o755).WithModTime(dirTime),
		tartest.Dir("bin/", 0o755).WithModTime(dirTime),
		tartest.File("bin/su", "elf", 0o4755).WithModTime(mtime),
		tartest.File("bin/wall", "elf", 0o2755).WithOwner(0, 5).WithModTime(mtime),
		tartest.Dir("tmp/", 0o1777).WithModTime(dirTime),
		tartest.File("home/alice/notes", "hi", 0o600).WithOwner(1000, 1000).WithModTime(mtime),
		tartest.Symlink("bin/sh", "busybox").WithOwner(7, 8).WithModTime(mtime),
		tartest.Link("bin/su2", "bin/su"),
		tartest.Fifo("run/fifo").WithModTime(mtime),
		tartest.Char("dev/null", 1, 3),
		tartest.File("bin/ping", "elf", 0o755).
			WithXattr("user.crid", "v").
			WithXattr("trusted.overlay.redirect", "/etc").
			WithXattr("security.capability", "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"),
		tartest.Dir("setgid/", 0o2775).WithOwner(0, 2000),
		tartest.File("setgid/f", "x", 0o644),
		tartest.Dir("setgid/sub/", 0o755),
	}
	b, err := tartest.Tar(entries...)
	require.NoError(t, err)
	usage, err := Apply(context.Background(), root, bytes.NewReader(b), OverlayWhiteouts)
	require.NoError(t, err)

	for _, c := range []struct {
		path     string
		mode     uint32
		uid, gid uint32
	}{
		{"bin/su", unix.S_IFREG | 0o4755, 0, 0},
		{"bin/wall", unix.S_IFREG | 0o2755, 0, 5},
		{"tmp", unix.S_IFDIR | 0o1777, 0, 0},
		{"home", unix.S_IFDIR | 0o755, 0, 0}, // implicit parent
		{"home/alice/notes", unix.S_IFREG | 0o600, 1000, 1000},
		{"bin/sh", unix.S_IFLNK | 0o777, 7, 8},
		{"run/fifo", unix.S_IFIFO | 0o644, 0, 0},
		{"dev/null", unix.S_IFCHR | 0o666, 0, 0},
		{"setgid", unix.S_IFDIR | 0o2775, 0, 2000},
		{"setgid/f", unix.S_IFREG | 0o644, 0, 0},   // the tar says 0:0, not the parent's group
		{"setgid/sub", unix.S_IFDIR | 0o755, 0, 0}, // and no inherited setgid bit
	} {
		st := lstat(t, filepath.Join(root, c.path))
		require.Equalf(t, c.mode, st.Mode, "mode of %s: %o", c.path, st.Mode)
		require.Equal(t, c.uid, st.Uid, "uid of %s", c.path)
		require.Equal(t, c.gid, st.Gid, "gid of %s", c.path)
	}
	require.Equal(t, uint64(unix.Mkdev(1, 3)), lstat(t, filepath.Join(root, "dev/null")).Rdev)

	// Times: files as given, directories despite children written later.
	st := lstat(t, filepath.Join(root, "bin/su"))
	require.Equal(t, mtime.Unix(), st.Mtim.Sec)
	require.Equal(t, int64(mtime.Nanosecond()), st.Mtim.Nsec)
	require.Equal(t, mtime.Unix(), lstat(t, filepath.Join(root, "bin/sh")).Mtim.Sec)
	require.Equal(t, dirTime.Unix(), lstat(t, filepath.Join(root, "bin")).Mtim.Sec)
	require.Equal(t, dirTime.Unix(), lstat(t, root).Mtim.Sec)

	target, err := os.Readlink(filepath.Join(root, "bin/sh"))
	require.NoError(t, err)
	require.Equal(t, "busybox", target)
	require.True(t, os.SameFile(statT(t, root, "bin/su"), statT(t, root, "bin/su2")))

	buf := make([]byte, 64)
	n, err := unix.Lgetxattr(filepath.Join(root, "bin/ping"), "user.crid", buf)
	require.NoError(t, err)
	require.Equal(t, "v", string(buf[:n]))
	_, err = unix.Lgetxattr(filepath.Join(root, "bin/ping"), "security.capability", buf)
	require.NoError(t, err, "security.capability survives the chown")
	_, err = unix.Lgetxattr(filepath.Join(root, "bin/ping"), "trusted.overlay.redirect", buf)
	require.ErrorIs(t, err, unix.ENODATA, "trusted.* from a layer is dropped")

	// Inodes: bin, bin/su, bin/wall, tmp, home, home/alice, notes, sh,
	// run, fifo, dev, null, ping, setgid, setgid/f, setgid/sub (not the link).
	require.Equal(t, int64(16), usage.Inodes)
	require.Equal(t, int64(len("elf")*3+len("hi")+len("x")), usage.Size)
}

func statT(t *testing.T, root, p string) os.FileInfo {
	t.Helper()
	fi, err := os.Lstat(filepath.Join(root, p))
	require.NoError(t, err)
	return fi
}

func TestApplyOverlayWhiteouts(t *testing.T) {
	testutil.RequiresRoot(t)
	root := t.TempDir()
	require.NoError(t, apply(t, root, OverlayWhiteouts,
		tartest.Dir("etc/", 0o755),
		tartest.Whiteout("etc", "shadow").WithOwner(3, 4),
		tartest.Dir("var/", 0o755),
		tartest.Opaque("var"),
		tartest.File("var/kept", "k", 0o644),
		tartest.Opaque("opt/implicit"),
		tartest.Whiteout("", "toplevel"),
	))
	for _, p := range []string{"etc/shadow", "toplevel"} {
		st := lstat(t, filepath.Join(root, p))
		require.Equal(t, uint32(unix.S_IFCHR), st.Mode&unix.S_IFMT, p)
		require.Equal(t, uint64(0), st.Rdev, p)
	}
	require.Equal(t, uint32(3), lstat(t, filepath.Join(root, "etc/shadow")).Uid)
	buf := make([]byte, 8)
	for _, d := range []string{"var", "opt/implicit"} {
		n, err := unix.Lgetxattr(filepath.Join(root, d), "trusted.overlay.opaque", buf)
		require.NoError(t, err, d)
		require.Equal(t, "y", string(buf[:n]))
	}
	require.FileExists(t, filepath.Join(root, "var/kept"))
	_, err := os.Lstat(filepath.Join(root, ".wh.toplevel"))
	require.ErrorIs(t, err, os.ErrNotExist, "the marker itself is never written")
}

// tree writes files (path → content; a trailing "/" makes a directory).
func tree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for p, content := range files {
		full := filepath.Join(root, p)
		if p[len(p)-1] == '/' {
			require.NoError(t, os.MkdirAll(full, 0o755))
			continue
		}
		require.NoError(t, os.MkdirAll(filepath.Dir(full), 0o755))
		require.NoError(t, os.WriteFile(full, []byte(content), 0o644))
	}
}

func TestApplyNativeWhiteouts(t *testing.T) {
	testutil.RequiresRoot(t)
	root := t.TempDir()
	// The parent snapshot's files, as native copies them in first.
	tree(t, root, map[string]string{
		"etc/passwd":          "root",
		"etc/shadow":          "secret",
		"usr/share/doc/a":     "a",
		"usr/share/doc/b/c":   "c",
		"opq/lower-file":      "lower",
		"opq/lower-dir/x":     "x",
		"opq/-sorts-first":    "lower",
		"opq/shared/lower":    "lower",
		"opq/shared/replaced": "lower",
	})
	require.NoError(t, apply(t, root, NativeWhiteouts,
		tartest.Whiteout("etc", "shadow"),
		tartest.Whiteout("usr/share", "doc"),
		tartest.Whiteout("nothing/here", "x"), // missing parent: no-op
		tartest.Dir("opq/", 0o755),
		// The layer's own entries before and after the marker survive it.
		tartest.File("opq/-before", "mine", 0o644),
		tartest.Dir("opq/shared/", 0o755),
		tartest.File("opq/shared/replaced", "mine", 0o644),
		tartest.Opaque("opq"),
		tartest.File("opq/after", "mine", 0o644),
	))
	require.FileExists(t, filepath.Join(root, "etc/passwd"))
	require.NoFileExists(t, filepath.Join(root, "etc/shadow"))
	require.NoDirExists(t, filepath.Join(root, "usr/share/doc"))
	require.DirExists(t, filepath.Join(root, "usr/share"))
	require.NoDirExists(t, filepath.Join(root, "nothing"))

	var names []string
	require.NoError(t, filepath.WalkDir(filepath.Join(root, "opq"), func(p string, _ os.DirEntry, err error) error {
		rel, _ := filepath.Rel(root, p)
		names = append(names, rel)
		return err
	}))
	require.ElementsMatch(t, []string{"opq", "opq/-before", "opq/shared", "opq/shared/replaced", "opq/after"}, names)
	b, err := os.ReadFile(filepath.Join(root, "opq/shared/replaced"))
	require.NoError(t, err)
	require.Equal(t, "mine", string(b))
}

func TestApplyReplacesExisting(t *testing.T) {
	testutil.RequiresRoot(t)
	root := t.TempDir()
	tree(t, root, map[string]string{
		"was-dir/child":  "c",
		"was-file":       "f",
		"shared":         "original",
		"keep-dir/inner": "i",
	})
	// A hard link from the parent's tree: replacing one name must not
	// change the other.
	require.NoError(t, os.Link(filepath.Join(root, "shared"), filepath.Join(root, "shared-link")))
	require.NoError(t, apply(t, root, NativeWhiteouts,
		tartest.File("was-dir", "now a file", 0o644),
		tartest.Dir("was-file/", 0o700),
		tartest.File("shared", "replaced", 0o644),
		tartest.Dir("keep-dir/", 0o711),
		tartest.File("dup", "first", 0o644),
		tartest.File("dup", "second", 0o644),
		tartest.Symlink("sym", "a"),
		tartest.Symlink("sym", "b"),
	))
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join(root, p))
		require.NoError(t, err)
		return string(b)
	}
	require.Equal(t, "now a file", read("was-dir"))
	require.DirExists(t, filepath.Join(root, "was-file"))
	require.Equal(t, "replaced", read("shared"))
	require.Equal(t, "original", read("shared-link"))
	require.Equal(t, "i", read("keep-dir/inner"), "a directory entry keeps an existing directory's children")
	require.Equal(t, uint32(unix.S_IFDIR|0o711), lstat(t, filepath.Join(root, "keep-dir")).Mode)
	require.Equal(t, "second", read("dup"))
	target, err := os.Readlink(filepath.Join(root, "sym"))
	require.NoError(t, err)
	require.Equal(t, "b", target)
}

func TestApplyReadsToEnd(t *testing.T) {
	testutil.RequiresRoot(t)
	b, err := tartest.Tar(tartest.File("f", "x", 0o644))
	require.NoError(t, err)
	r := bytes.NewReader(append(b, make([]byte, 10_000)...))
	_, err = Apply(context.Background(), t.TempDir(), r, OverlayWhiteouts)
	require.NoError(t, err)
	require.Zero(t, r.Len(), "bytes after the end-of-archive marker are read too")
}

func TestApplyTruncated(t *testing.T) {
	testutil.RequiresRoot(t)
	b, err := tartest.Tar(tartest.File("f", string(bytes.Repeat([]byte("x"), 4096)), 0o644))
	require.NoError(t, err)
	_, err = Apply(context.Background(), t.TempDir(), bytes.NewReader(b[:1024]), OverlayWhiteouts)
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
}

func TestApplyCanceled(t *testing.T) {
	testutil.RequiresRoot(t)
	b, err := tartest.Tar(tartest.File("f", "x", 0o644))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = Apply(ctx, t.TempDir(), bytes.NewReader(b), OverlayWhiteouts)
	require.ErrorIs(t, err, context.Canceled)
}

func TestApplyBadMode(t *testing.T) {
	_, err := Apply(context.Background(), t.TempDir(), bytes.NewReader(nil), WhiteoutMode(0))
	require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
}

// hdr is a tar entry with a raw header, for types the helpers do not make.
func hdr(h tar.Header) tartest.Entry { return tartest.Entry{Header: h} }

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	return len(ents)
}

// TestApplyManyDirectories revisits more directories than the fd cache
// holds, so entries are resolved again after the cache was emptied.
func TestApplyManyDirectories(t *testing.T) {
	testutil.RequiresRoot(t)
	root := t.TempDir()
	var entries []tartest.Entry
	for pass := range 2 {
		for d := range 3 * maxCachedDirs {
			name := fmt.Sprintf("d%d/sub/f%d", d, pass)
			entries = append(entries, tartest.File(name, name, 0o644).WithModTime(time.Unix(int64(1000+d), 0)))
		}
	}
	entries = append(entries, tartest.Dir("d7/", 0o700).WithModTime(time.Unix(42, 0)))
	before := openFDs(t)
	require.NoError(t, apply(t, root, OverlayWhiteouts, entries...))
	require.Equal(t, before, openFDs(t), "no fd leaked")
	for _, e := range entries[:len(entries)-1] {
		b, err := os.ReadFile(filepath.Join(root, e.Header.Name))
		require.NoError(t, err)
		require.Equal(t, e.Header.Name, string(b))
	}
	require.Equal(t, int64(42), lstat(t, filepath.Join(root, "d7")).Mtim.Sec)
}

func TestApplyNoFDLeak(t *testing.T) {
	testutil.RequiresRoot(t)
	before := openFDs(t)
	deep := strings.Repeat("d/", 1500) + "f"
	for _, mode := range []WhiteoutMode{OverlayWhiteouts, NativeWhiteouts} {
		root := t.TempDir()
		tree(t, root, map[string]string{"opq/x/y": "lower"})
		require.NoError(t, apply(t, root, mode,
			tartest.File(deep, "deep", 0o644),
			tartest.Dir("opq/", 0o755),
			tartest.Opaque("opq"),
			tartest.File("d", "replaces the deep tree", 0o644),
		))
		require.Error(t, apply(t, root, mode, tartest.File("a/b/c", "x", 0o644), tartest.File("../x", "x", 0o644)))
	}
	require.Equal(t, before, openFDs(t))
}
