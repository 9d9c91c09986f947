package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io/fs"
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

// outcome is what a hostile layer must lead to.
type outcome int

const (
	contained outcome = iota // applied; nothing outside the root changed
	refused                  // ErrInvalidArgument; nothing outside changed
	failed                   // some error (e.g. ENAMETOOLONG); nothing outside changed
)

// breakout is one crafted layer. Every case runs with a sentinel parent
// directory around the root:
//
//	parent/
//	  root/             the directory Apply extracts into
//	  outside/passwd    "outside", 0644, fixed mtime
//	  outside/dir/file
//
// and the tree of parent minus root/ must be identical before and after.
// esc is the absolute path parent/escaped, which a layer following a symlink
// to "/" would create; it must not exist afterwards.
type breakout struct {
	desc    string
	modes   []WhiteoutMode // nil: both modes
	pre     func(t *testing.T, root, outside string)
	entries func(outside, esc string) []tartest.Entry
	want    outcome
	check   func(t *testing.T, root, outside string)
}

func entries(e ...tartest.Entry) func(string, string) []tartest.Entry {
	return func(string, string) []tartest.Entry { return e }
}

var (
	native  = []WhiteoutMode{NativeWhiteouts}
	overlay = []WhiteoutMode{OverlayWhiteouts}
)

func breakouts() []breakout {
	return []breakout{
		{
			desc:    "absolute name is taken relative to the root",
			entries: entries(tartest.File("/etc/passwd", "inside", 0o644)),
			check:   fileIs("etc/passwd", "inside"),
		},
		{
			desc: "absolute name pointing at the sentinel",
			entries: func(outside, _ string) []tartest.Entry {
				return []tartest.Entry{tartest.File(outside+"/passwd", "pwned", 0o644)}
			},
			check: func(t *testing.T, root, outside string) {
				fileIs(strings.TrimPrefix(outside, "/")+"/passwd", "pwned")(t, root, outside)
			},
		},
		{desc: "dotdot prefix", entries: entries(tartest.File("../outside/passwd", "pwned", 0o644)), want: refused},
		{desc: "dotdot only", entries: entries(tartest.Dir("..", 0o777)), want: refused},
		{desc: "deep dotdot", entries: entries(tartest.File("a/../../outside/passwd", "pwned", 0o644)), want: refused},
		{desc: "dotdot after absolute", entries: entries(tartest.File("/../../outside/passwd", "pwned", 0o644)), want: refused},
		{desc: "dotdot inside a name", entries: entries(tartest.File("a/b/../c", "x", 0o644)), want: refused},
		{
			desc: "symlink to / then a file through it",
			entries: func(_, esc string) []tartest.Entry {
				return []tartest.Entry{tartest.Symlink("s", "/"), tartest.File("s/"+strings.TrimPrefix(esc, "/"), "pwned", 0o644)}
			},
			want: refused,
		},
		{
			desc: "symlink to the sentinel then a file through it",
			entries: func(outside, _ string) []tartest.Entry {
				return []tartest.Entry{tartest.Symlink("s", outside), tartest.File("s/passwd", "pwned", 0o644)}
			},
			want: refused,
		},
		{
			desc:    "symlink to .. then write",
			entries: entries(tartest.Symlink("up", ".."), tartest.File("up/outside/passwd", "pwned", 0o644)),
			want:    refused,
		},
		{
			desc:    "symlink to a deep relative escape then write",
			entries: entries(tartest.Dir("d/", 0o755), tartest.Symlink("d/up", "../../../../../../../.."), tartest.File("d/up/x", "pwned", 0o644)),
			want:    refused,
		},
		{
			desc: "symlink chain",
			entries: func(outside, _ string) []tartest.Entry {
				return []tartest.Entry{
					tartest.Symlink("b", outside),
					tartest.Symlink("a", "b"),
					tartest.File("a/passwd", "pwned", 0o644),
				}
			},
			want: refused,
		},
		{
			desc:    "symlink loop",
			entries: entries(tartest.Symlink("loop", "loop"), tartest.File("loop/x", "x", 0o644)),
			want:    refused,
		},
		{
			desc: "dangling symlink then mkdir through it",
			entries: func(outside, _ string) []tartest.Entry {
				return []tartest.Entry{tartest.Symlink("s", outside+"/newdir"), tartest.Dir("s/sub/", 0o755)}
			},
			want: refused,
		},
		{
			desc: "symlink replaced by a directory",
			entries: func(outside, _ string) []tartest.Entry {
				return []tartest.Entry{
					tartest.Symlink("s", outside),
					tartest.Dir("s/", 0o755),
					tartest.File("s/passwd", "inside", 0o644),
				}
			},
			check: func(t *testing.T, root, outside string) {
				require.Equal(t, uint32(unix.S_IFDIR), lstat(t, filepath.Join(root, "s")).Mode&unix.S_IFMT)
				fileIs("s/passwd", "inside")(t, root, outside)
			},
		},
		{
			desc: "symlink replaced by a file",
			entries: func(outside, _ string) []tartest.Entry {
				return []tartest.Entry{tartest.Symlink("s", outside+"/passwd"), tartest.File("s", "inside", 0o600)}
			},
			check: fileIs("s", "inside"),
		},
		{
			desc: "file over an existing symlink to outside",
			pre: func(t *testing.T, root, outside string) {
				require.NoError(t, os.Symlink(outside+"/passwd", filepath.Join(root, "f")))
			},
			entries: entries(tartest.File("f", "inside", 0o4777)),
			check:   fileIs("f", "inside"),
		},
		{
			desc: "directory entry over an existing symlink to outside",
			pre: func(t *testing.T, root, outside string) {
				require.NoError(t, os.Symlink(outside+"/dir", filepath.Join(root, "d")))
			},
			entries: entries(tartest.Dir("d/", 0o777).WithOwner(1234, 1234), tartest.File("d/file", "inside", 0o644)),
			check: func(t *testing.T, root, outside string) {
				require.Equal(t, uint32(unix.S_IFDIR|0o777), lstat(t, filepath.Join(root, "d")).Mode)
				fileIs("d/file", "inside")(t, root, outside)
			},
		},
		{
			desc: "write through a symlink from the parent snapshot",
			pre: func(t *testing.T, root, outside string) {
				require.NoError(t, os.Symlink(outside, filepath.Join(root, "lib")))
			},
			entries: entries(tartest.File("lib/passwd", "pwned", 0o644)),
			want:    refused,
		},
		{
			desc: "chmod through a symlink (CVE-2021-32760)",
			entries: func(outside, _ string) []tartest.Entry {
				return []tartest.Entry{
					tartest.Symlink("l", outside+"/passwd"),
					tartest.Dir("l/", 0o777),
				}
			},
			check: func(t *testing.T, root, _ string) {
				require.Equal(t, uint32(unix.S_IFDIR|0o777), lstat(t, filepath.Join(root, "l")).Mode)
			},
		},
		{
			desc: "chown and utimes of a symlink to outside",
			entries: func(outside, _ string) []tartest.Entry {
				return []tartest.Entry{
					tartest.Symlink("l", outside+"/passwd").WithOwner(1234, 1234).WithModTime(time.Unix(1, 0)),
					tartest.Symlink("d", outside+"/dir").WithOwner(1234, 1234).WithModTime(time.Unix(1, 0)),
				}
			},
			check: func(t *testing.T, root, _ string) {
				st := lstat(t, filepath.Join(root, "l"))
				require.Equal(t, uint32(1234), st.Uid)
				require.Equal(t, int64(1), st.Mtim.Sec)
			},
		},
		{
			desc: "hard link to a symlink to outside, then metadata",
			entries: func(outside, _ string) []tartest.Entry {
				return []tartest.Entry{
					tartest.Symlink("l", outside+"/passwd"),
					tartest.Link("h", "l"),
					tartest.Dir("l/", 0o777).WithOwner(99, 99),
				}
			},
			check: func(t *testing.T, root, _ string) {
				require.Equal(t, uint32(unix.S_IFLNK), lstat(t, filepath.Join(root, "h")).Mode&unix.S_IFMT)
			},
		},
		{
			desc: "directory times after the directory became a symlink to outside",
			entries: func(outside, _ string) []tartest.Entry {
				return []tartest.Entry{
					tartest.Dir("d/", 0o755).WithModTime(time.Unix(2, 0)),
					tartest.Dir("d/sub/", 0o755).WithModTime(time.Unix(2, 0)),
					tartest.Symlink("d", outside),
				}
			},
			check: func(t *testing.T, root, _ string) {
				require.Equal(t, uint32(unix.S_IFLNK), lstat(t, filepath.Join(root, "d")).Mode&unix.S_IFMT)
			},
		},
		{desc: "hard link to /etc/passwd", entries: entries(tartest.Link("p", "/etc/passwd")), want: refused},
		{
			desc:    "hard link to an absolute name inside the layer",
			entries: entries(tartest.File("etc/passwd", "inside", 0o644), tartest.Link("p", "/etc/passwd")),
			check: func(t *testing.T, root, _ string) {
				require.True(t, os.SameFile(statT(t, root, "p"), statT(t, root, "etc/passwd")))
			},
		},
		{desc: "hard link to ../x", entries: entries(tartest.Link("p", "../outside/passwd")), want: refused},
		{
			desc:    "hard link to the sentinel by absolute path",
			entries: func(outside, _ string) []tartest.Entry { return []tartest.Entry{tartest.Link("p", outside+"/passwd")} },
			want:    refused,
		},
		{
			desc: "hard link through a symlinked parent",
			entries: func(outside, _ string) []tartest.Entry {
				return []tartest.Entry{tartest.Symlink("s", outside), tartest.Link("p", "s/passwd")}
			},
			want: refused,
		},
		{
			desc: "hard link whose own parent is a symlink",
			entries: func(outside, _ string) []tartest.Entry {
				return []tartest.Entry{
					tartest.File("f", "inside", 0o644),
					tartest.Symlink("s", outside),
					tartest.Link("s/f", "f"),
				}
			},
			want: refused,
		},
		{desc: "hard link to a directory", entries: entries(tartest.Dir("d/", 0o755), tartest.Link("l", "d")), want: refused},
		{desc: "hard link to the root", entries: entries(tartest.Link("l", "./")), want: refused},
		{
			desc:    "hard link to a lower layer's file (overlay)",
			modes:   overlay,
			entries: entries(tartest.Link("l", "bin/sh")),
			want:    refused,
		},
		{desc: "whiteout .wh...", entries: entries(tartest.File(".wh...", "", 0o644)), want: refused},
		{desc: "whiteout .wh.. (root)", entries: entries(tartest.File(".wh..", "", 0o644)), want: refused},
		{desc: "whiteout .wh. (empty)", entries: entries(tartest.File("/.wh.", "", 0o644)), want: refused},
		{desc: "whiteout of a parent in a subdirectory", entries: entries(tartest.File("etc/.wh...", "", 0o644)), want: refused},
		{desc: "whiteout with a dotdot path", entries: entries(tartest.File("x/../.wh.outside", "", 0o644)), want: refused},
		{
			desc: "whiteout through a symlinked parent",
			pre: func(t *testing.T, root, outside string) {
				require.NoError(t, os.Symlink(outside, filepath.Join(root, "s")))
			},
			entries: entries(tartest.Whiteout("s", "passwd")),
			want:    refused,
		},
		{
			desc:  "whiteout of a symlink to outside removes the symlink only",
			modes: native,
			pre: func(t *testing.T, root, outside string) {
				require.NoError(t, os.Symlink(outside, filepath.Join(root, "s")))
			},
			entries: entries(tartest.Whiteout("", "s")),
			check: func(t *testing.T, root, _ string) {
				_, err := os.Lstat(filepath.Join(root, "s"))
				require.ErrorIs(t, err, os.ErrNotExist)
			},
		},
		{
			desc: "opaque marker on a symlinked directory",
			pre: func(t *testing.T, root, outside string) {
				require.NoError(t, os.Symlink(outside, filepath.Join(root, "s")))
			},
			entries: entries(tartest.Opaque("s")),
			want:    refused,
		},
		{
			desc: "opaque marker on a symlink created by the layer",
			entries: func(outside, _ string) []tartest.Entry {
				return []tartest.Entry{tartest.Symlink("s", outside+"/dir"), tartest.Opaque("s")}
			},
			want: refused,
		},
		{desc: "opaque marker on the root", entries: entries(tartest.File(".wh..wh..opq", "", 0o644)), want: refused},
		{desc: "block device", entries: entries(tartest.Block("sda", 8, 0)), want: refused},
		{desc: "character device /dev/mem", entries: entries(tartest.Char("mem", 1, 1)), want: refused},
		{desc: "character device /dev/kmsg", entries: entries(tartest.Char("kmsg", 1, 11)), want: refused},
		{desc: "forged whiteout device 0:0", entries: entries(tartest.Char("etc", 0, 0)), want: refused},
		{
			desc:    "standard character devices",
			entries: entries(tartest.Char("dev/null", 1, 3), tartest.Char("dev/ptmx", 5, 2), tartest.Char("dev/urandom", 1, 9)),
			check: func(t *testing.T, root, _ string) {
				require.Equal(t, uint64(unix.Mkdev(5, 2)), lstat(t, filepath.Join(root, "dev/ptmx")).Rdev)
			},
		},
		{
			desc:    "unknown entry type",
			entries: entries(hdr(tar.Header{Typeflag: 'X', Name: "x", Mode: 0o644})),
			want:    refused,
		},
		{
			desc:    "GNU dumpdir entry type",
			entries: entries(hdr(tar.Header{Typeflag: 'D', Name: "x/", Mode: 0o644, Format: tar.FormatGNU})),
			want:    refused,
		},
		{
			desc: "trusted xattrs cannot forge overlay metadata",
			entries: entries(
				tartest.Dir("d/", 0o755).WithXattr("trusted.overlay.opaque", "y"),
				tartest.File("f", "x", 0o644).WithXattr("trusted.overlay.redirect", "/etc").WithXattr("trusted.overlay.metacopy", ""),
			),
			check: func(t *testing.T, root, _ string) {
				buf := make([]byte, 64)
				for _, p := range []string{"d", "f"} {
					n, err := unix.Llistxattr(filepath.Join(root, p), buf)
					require.NoError(t, err)
					require.NotContains(t, string(buf[:n]), "trusted.", p)
				}
			},
		},
		{desc: "name longer than PATH_MAX", entries: entries(tartest.File(strings.Repeat("abcdefg/", 600)+"x", "x", 0o644)), want: refused},
		{desc: "component longer than NAME_MAX", entries: entries(tartest.File(strings.Repeat("n", 300), "x", 0o644)), want: failed},
		{
			desc:    "deep but legal name",
			entries: entries(tartest.File(strings.Repeat("d/", 1000)+"f", "deep", 0o644)),
			check:   fileIs(strings.Repeat("d/", 1000)+"f", "deep"),
		},
		{desc: "file named .", entries: entries(tartest.File(".", "x", 0o644)), want: refused},
		{desc: "symlink named empty", entries: entries(tartest.Symlink("", "/")), want: refused},
		{
			desc:    "empty-named directory is the root",
			entries: entries(tartest.Dir("", 0o750)),
			check: func(t *testing.T, root, _ string) {
				require.Equal(t, uint32(unix.S_IFDIR|0o750), lstat(t, root).Mode)
			},
		},
		{desc: "symlink named ..", entries: entries(tartest.Symlink("..", "/")), want: refused},
		{desc: "symlink with an empty target", entries: entries(tartest.Symlink("s", "")), want: refused},
		{desc: "uid beyond uid_t", entries: entries(tartest.File("f", "x", 0o644).WithOwner(1<<32, 0)), want: refused},
		{desc: "uid -1", entries: entries(tartest.File("f", "x", 0o644).WithOwner(1<<32-1, 0)), want: refused},
		{
			desc:    "AUFS metadata is skipped",
			entries: entries(tartest.Dir(".wh..wh.plnk/", 0o700), tartest.File(".wh..wh.plnk/1.2", "x", 0o644)),
			check: func(t *testing.T, root, _ string) {
				_, err := os.Lstat(filepath.Join(root, ".wh..wh.plnk"))
				require.ErrorIs(t, err, os.ErrNotExist)
			},
		},
	}
}

func fileIs(rel, content string) func(t *testing.T, root, outside string) {
	return func(t *testing.T, root, _ string) {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(root, rel))
		require.NoError(t, err)
		require.Equal(t, content, string(b))
		require.Equal(t, uint32(unix.S_IFREG), lstat(t, filepath.Join(root, rel)).Mode&unix.S_IFMT)
	}
}

func TestBreakouts(t *testing.T) {
	testutil.RequiresRoot(t)
	cases := breakouts()
	require.GreaterOrEqual(t, len(cases), 30)
	for _, bo := range cases {
		modes := bo.modes
		if modes == nil {
			modes = []WhiteoutMode{OverlayWhiteouts, NativeWhiteouts}
		}
		for _, mode := range modes {
			t.Run(fmt.Sprintf("%s/%s", bo.desc, modeName(mode)), func(t *testing.T) {
				runBreakout(t, bo, mode)
			})
		}
	}
}

func modeName(m WhiteoutMode) string {
	if m == OverlayWhiteouts {
		return "overlay"
	}
	return "native"
}

func runBreakout(t *testing.T, bo breakout, mode WhiteoutMode) {
	parent := t.TempDir()
	root := filepath.Join(parent, "root")
	outside := filepath.Join(parent, "outside")
	require.NoError(t, os.MkdirAll(filepath.Join(outside, "dir"), 0o755))
	require.NoError(t, os.Mkdir(root, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(outside, "passwd"), []byte("outside"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(outside, "dir/file"), []byte("outside"), 0o644))
	old := time.Unix(1_000_000_000, 0)
	for _, p := range []string{"passwd", "dir/file", "dir", "."} {
		require.NoError(t, os.Chtimes(filepath.Join(outside, p), old, old))
	}
	// Reached from "/" by a layer that follows a symlink to "/"; inside the
	// sentinel parent, so the test never writes elsewhere even when broken.
	esc := filepath.Join(parent, "escaped")
	if bo.pre != nil {
		bo.pre(t, root, outside)
	}
	before := snapshotTree(t, parent)

	b, err := tartest.Tar(bo.entries(outside, esc)...)
	require.NoError(t, err)
	_, applyErr := Apply(context.Background(), root, bytes.NewReader(b), mode)
	err = applyErr
	switch bo.want {
	case contained:
		require.NoError(t, err)
	case refused:
		require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
	case failed:
		require.Error(t, err)
	}

	require.Equal(t, before, snapshotTree(t, parent), "something outside the root changed")
	_, err = os.Lstat(esc)
	require.ErrorIs(t, err, os.ErrNotExist, "the layer wrote through a symlink to /")
	if bo.check != nil && applyErr == nil {
		bo.check(t, root, outside)
	}
}

// snapshotTree describes every inode under parent except root/'s contents:
// type, mode, owner, size, mtime, content hash, link target, xattrs.
func snapshotTree(t *testing.T, parent string) map[string]string {
	t.Helper()
	out := map[string]string{}
	require.NoError(t, filepath.WalkDir(parent, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(parent, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		desc := fmt.Sprintf("mode=%o uid=%d gid=%d size=%d mtime=%d.%d", st.Mode, st.Uid, st.Gid, st.Size, st.Mtim.Sec, st.Mtim.Nsec)
		if rel == "root" {
			// The root itself may be changed by the layer (its "./" entry);
			// only its identity matters.
			desc = fmt.Sprintf("ino=%d", st.Ino)
		}
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += fmt.Sprintf(" sha=%x", sha256.Sum256(b))
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			desc += " -> " + target
		}
		buf := make([]byte, 4096)
		if n, err := unix.Llistxattr(p, buf); err == nil && rel != "root" {
			desc += " xattrs=" + string(buf[:n])
		}
		out[rel] = desc
		if rel == "root" {
			return filepath.SkipDir
		}
		return nil
	}))
	return out
}
