package testsuite

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/crid-dev/crid/internal/mount"
	"github.com/crid-dev/crid/internal/testutil"
	"github.com/crid-dev/crid/snapshotter"
	"github.com/crid-dev/crid/snapshotter/internal/tartest"
)

// Opener opens the snapshotter under test on root, which is empty or holds
// what an earlier snapshotter of the same kind left there.
type Opener func(t *testing.T, root string) snapshotter.Snapshotter

// Run runs the suite. Each test gets a fresh root.
func Run(t *testing.T, open Opener) {
	testutil.RequiresRoot(t)
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, open Opener)
	}{
		{"StatAndWalk", testStatAndWalk},
		{"Errors", testErrors},
		{"InvalidKeys", testInvalidKeys},
		{"PrepareCommitView", testPrepareCommitView},
		{"ImageViews", testImageViews},
		{"NoParent", testNoParent},
		{"LayersWhiteoutsOpaque", testLayersWhiteoutsOpaque},
		{"ActiveIsolated", testActiveIsolated},
		{"RemoveWithChildren", testRemoveWithChildren},
		{"Usage", testUsage},
		{"FailedUnpackLeavesNothing", testFailedUnpackLeavesNothing},
		{"ConcurrentUnpackSameKey", testConcurrentUnpackSameKey},
		{"CrashLeftovers", testCrashLeftovers},
		{"Reopen", testReopen},
		{"ParallelUnpack", testParallelUnpack},
		{"ManyLayers", testManyLayers},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open) })
	}
}

// env is one test's snapshotter and root.
type env struct {
	t    *testing.T
	root string
	s    snapshotter.Snapshotter
	ctx  context.Context
}

func newEnv(t *testing.T, open Opener) *env {
	root := t.TempDir()
	s := open(t, root)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return &env{t: t, root: root, s: s, ctx: context.Background()}
}

// layer builds a tar of entries.
func (e *env) layer(entries ...tartest.Entry) io.Reader {
	e.t.Helper()
	b, err := tartest.Tar(entries...)
	require.NoError(e.t, err)
	return bytes.NewReader(b)
}

// unpack unpacks entries as committed snapshot key on parent.
func (e *env) unpack(key, parent string, entries ...tartest.Entry) snapshotter.Usage {
	e.t.Helper()
	u, err := e.s.Unpack(e.ctx, key, parent, e.layer(entries...))
	require.NoError(e.t, err, "unpack %s", key)
	return u
}

// mount mounts ms on a fresh directory, unmounted at cleanup.
func (e *env) mount(ms []snapshotter.Mount) string {
	e.t.Helper()
	target := e.t.TempDir()
	require.NoError(e.t, mount.All(ms, target))
	e.t.Cleanup(func() { require.NoError(e.t, mount.Unmount(target)) })
	return target
}

// prepare creates active snapshot key on parent and mounts it.
func (e *env) prepare(key, parent string) string {
	e.t.Helper()
	ms, err := e.s.Prepare(e.ctx, key, parent)
	require.NoError(e.t, err, "prepare %s", key)
	return e.mount(ms)
}

// view creates view key of parent and mounts it.
func (e *env) view(key, parent string) string {
	e.t.Helper()
	ms, err := e.s.View(e.ctx, key, parent)
	require.NoError(e.t, err, "view %s", key)
	return e.mount(ms)
}

func (e *env) unmount(target string) {
	e.t.Helper()
	require.NoError(e.t, mount.Unmount(target))
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	return string(b)
}

func requireAbsent(t *testing.T, p string) {
	t.Helper()
	_, err := os.Lstat(p)
	require.ErrorIs(t, err, os.ErrNotExist, "%s should not exist", p)
}

func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func walk(t *testing.T, s snapshotter.Snapshotter) []snapshotter.Info {
	t.Helper()
	var infos []snapshotter.Info
	require.NoError(t, s.Walk(context.Background(), func(i snapshotter.Info) error {
		infos = append(infos, i)
		return nil
	}))
	return infos
}

func testStatAndWalk(t *testing.T, open Opener) {
	e := newEnv(t, open)
	start := time.Now().Add(-time.Second)
	e.unpack("base", "", tartest.File("f", "x", 0o644))
	e.prepare("c", "base")
	e.view("v", "base")

	for _, want := range []snapshotter.Info{
		{Key: "base", Kind: snapshotter.KindCommitted},
		{Key: "c", Parent: "base", Kind: snapshotter.KindActive},
		{Key: "v", Parent: "base", Kind: snapshotter.KindView},
	} {
		got, err := e.s.Stat(e.ctx, want.Key)
		require.NoError(t, err)
		require.True(t, got.Created.After(start), "created time of %s", want.Key)
		got.Created = time.Time{}
		require.Equal(t, want, got)
	}

	infos := walk(t, e.s)
	require.Len(t, infos, 3)
	for i, key := range []string{"base", "c", "v"} {
		require.Equal(t, key, infos[i].Key, "Walk goes in key order")
	}
	stop := errors.New("stop")
	calls := 0
	err := e.s.Walk(e.ctx, func(snapshotter.Info) error { calls++; return stop })
	require.ErrorIs(t, err, stop)
	require.Equal(t, 1, calls)
}

func testErrors(t *testing.T, open Opener) {
	e := newEnv(t, open)
	e.unpack("base", "", tartest.File("f", "x", 0o644))
	e.prepare("active", "base")
	e.view("view", "base")

	_, err := e.s.Stat(e.ctx, "missing")
	require.ErrorIs(t, err, errdefs.ErrNotFound)
	_, err = e.s.Usage(e.ctx, "missing")
	require.ErrorIs(t, err, errdefs.ErrNotFound)
	_, err = e.s.Mounts(e.ctx, "missing")
	require.ErrorIs(t, err, errdefs.ErrNotFound)
	require.ErrorIs(t, e.s.Remove(e.ctx, "missing"), errdefs.ErrNotFound)
	require.ErrorIs(t, e.s.Commit(e.ctx, "x", "missing"), errdefs.ErrNotFound)

	_, err = e.s.Prepare(e.ctx, "base", "")
	require.ErrorIs(t, err, errdefs.ErrAlreadyExists)
	_, err = e.s.View(e.ctx, "active", "base")
	require.ErrorIs(t, err, errdefs.ErrAlreadyExists)
	_, err = e.s.Unpack(e.ctx, "base", "", e.layer(tartest.File("g", "y", 0o644)))
	require.ErrorIs(t, err, errdefs.ErrAlreadyExists)

	_, err = e.s.Prepare(e.ctx, "c1", "missing")
	require.ErrorIs(t, err, errdefs.ErrNotFound)
	_, err = e.s.View(e.ctx, "v1", "missing")
	require.ErrorIs(t, err, errdefs.ErrNotFound)
	_, err = e.s.Prepare(e.ctx, "c2", "active")
	require.ErrorIs(t, err, errdefs.ErrFailedPrecondition, "an active snapshot cannot be a parent")
	_, err = e.s.Unpack(e.ctx, "c3", "view", e.layer(tartest.File("g", "y", 0o644)))
	require.ErrorIs(t, err, errdefs.ErrFailedPrecondition, "a view cannot be a parent")
	_, err = e.s.Unpack(e.ctx, "self", "self", e.layer(tartest.File("g", "y", 0o644)))
	require.ErrorIs(t, err, errdefs.ErrInvalidArgument)

	require.ErrorIs(t, e.s.Commit(e.ctx, "x", "base"), errdefs.ErrFailedPrecondition, "already committed")
	require.ErrorIs(t, e.s.Commit(e.ctx, "x", "view"), errdefs.ErrFailedPrecondition, "a view is never committed")
	require.ErrorIs(t, e.s.Commit(e.ctx, "base", "active"), errdefs.ErrAlreadyExists)
	info, err := e.s.Stat(e.ctx, "active")
	require.NoError(t, err, "a failed commit keeps the active snapshot")
	require.Equal(t, snapshotter.KindActive, info.Kind)

	for _, key := range []string{"c1", "v1", "c2", "c3", "self", "x"} {
		_, err := e.s.Stat(e.ctx, key)
		require.ErrorIs(t, err, errdefs.ErrNotFound, "failed calls leave no snapshot %s", key)
	}
	require.Empty(t, names(t, filepath.Join(e.root, "tmp")))
}

func testInvalidKeys(t *testing.T, open Opener) {
	e := newEnv(t, open)
	for _, key := range []string{"", ".", "..", "../x", "a/b", ".hidden", "-flag", "a b", "a:b", "a,b", strings.Repeat("k", 129)} {
		_, err := e.s.Prepare(e.ctx, key, "")
		require.ErrorIs(t, err, errdefs.ErrInvalidArgument, "prepare %q", key)
		_, err = e.s.Unpack(e.ctx, key, "", e.layer(tartest.File("f", "x", 0o644)))
		require.ErrorIs(t, err, errdefs.ErrInvalidArgument, "unpack %q", key)
		_, err = e.s.Unpack(e.ctx, "ok", key, e.layer(tartest.File("f", "x", 0o644)))
		if key != "" { // "" is "no parent"
			require.ErrorIs(t, err, errdefs.ErrInvalidArgument, "unpack on parent %q", key)
		} else {
			require.NoError(t, err)
			require.NoError(t, e.s.Remove(e.ctx, "ok"))
		}
		_, err = e.s.Stat(e.ctx, key)
		require.ErrorIs(t, err, errdefs.ErrInvalidArgument, "stat %q", key)
	}
	require.Empty(t, walk(t, e.s))
	_, err := e.s.Prepare(e.ctx, "Valid_key-1.2", "")
	require.NoError(t, err)
}

func testPrepareCommitView(t *testing.T, open Opener) {
	e := newEnv(t, open)
	mnt := e.prepare("a", "")
	require.NoError(t, os.MkdirAll(filepath.Join(mnt, "etc"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(mnt, "etc/hostname"), []byte("box"), 0o644))
	require.NoError(t, os.Symlink("etc/hostname", filepath.Join(mnt, "link")))
	e.unmount(mnt)

	require.NoError(t, e.s.Commit(e.ctx, "base", "a"))
	_, err := e.s.Stat(e.ctx, "a")
	require.ErrorIs(t, err, errdefs.ErrNotFound, "commit consumes the active key")
	info, err := e.s.Stat(e.ctx, "base")
	require.NoError(t, err)
	require.Equal(t, snapshotter.KindCommitted, info.Kind)
	u, err := e.s.Usage(e.ctx, "base")
	require.NoError(t, err)
	require.Equal(t, snapshotter.Usage{Size: 3, Inodes: 3}, u, "etc, etc/hostname, link")

	v := e.view("v", "base")
	require.Equal(t, "box", readFile(t, filepath.Join(v, "etc/hostname")))
	target, err := os.Readlink(filepath.Join(v, "link"))
	require.NoError(t, err)
	require.Equal(t, "etc/hostname", target)
	require.ErrorIs(t, os.WriteFile(filepath.Join(v, "new"), nil, 0o644), unix.EROFS, "a view is read-only")

	c := e.prepare("c", "base")
	require.Equal(t, "box", readFile(t, filepath.Join(c, "etc/hostname")))

	// The committed snapshot can itself be mounted, read-only.
	ms, err := e.s.Mounts(e.ctx, "base")
	require.NoError(t, err)
	m := e.mount(ms)
	require.Equal(t, "box", readFile(t, filepath.Join(m, "etc/hostname")))
	require.ErrorIs(t, os.WriteFile(filepath.Join(m, "new"), nil, 0o644), unix.EROFS)
}

// testImageViews: views of an image's top layer, as image volumes use
// them, for an image of one layer and of three. Each shows the merged
// image, read-only but executable, changes nothing in the layers, and
// goes with Remove, leaving the layers removable.
func testImageViews(t *testing.T, open Opener) {
	e := newEnv(t, open)
	l1, l2, l3 := threeLayers()
	e.unpack("l1", "", l1...)
	e.unpack("l2", "l1", l2...)
	e.unpack("l3", "l2", l3...)
	e.unpack("single", "", tartest.Dir("bin/", 0o755), tartest.File("bin/tool", "#!/bin/sh\n", 0o755))

	for _, tc := range []struct {
		key, parent string
		check       func(t *testing.T, mnt string)
	}{
		{"v-single", "single", func(t *testing.T, mnt string) {
			require.Equal(t, []string{"bin"}, names(t, mnt))
		}},
		{"v-three", "l3", func(t *testing.T, mnt string) { checkThreeLayers(t, mnt) }},
	} {
		t.Run(tc.key, func(t *testing.T) {
			ms, err := e.s.View(e.ctx, tc.key, tc.parent)
			require.NoError(t, err)
			info, err := e.s.Stat(e.ctx, tc.key)
			require.NoError(t, err)
			require.Equal(t, snapshotter.KindView, info.Kind)
			require.Equal(t, tc.parent, info.Parent)
			mnt := t.TempDir()
			require.NoError(t, mount.All(ms, mnt))
			t.Cleanup(func() { _ = mount.Unmount(mnt) }) // when a check fails
			tc.check(t, mnt)
			require.ErrorIs(t, os.WriteFile(filepath.Join(mnt, "new"), nil, 0o644), unix.EROFS)
			require.ErrorIs(t, os.Mkdir(filepath.Join(mnt, "bin", "d"), 0o755), unix.EROFS)
			require.ErrorIs(t, os.Remove(filepath.Join(mnt, "bin", "sh")), unix.EROFS)
			var st unix.Statfs_t
			require.NoError(t, unix.Statfs(mnt, &st))
			require.Zero(t, st.Flags&unix.ST_NOEXEC, "a view is not noexec")
			require.NotZero(t, st.Flags&unix.ST_RDONLY)
			require.NoError(t, unix.Access(filepath.Join(mnt, "bin", names(t, filepath.Join(mnt, "bin"))[0]), unix.X_OK))
			require.NoError(t, mount.Unmount(mnt))
			require.ErrorIs(t, e.s.Remove(e.ctx, tc.parent), errdefs.ErrFailedPrecondition, "the view holds its parent")
			require.NoError(t, e.s.Remove(e.ctx, tc.key))
		})
	}
	checkThreeLayers(t, e.view("after", "l3"))
	for _, key := range []string{"after", "single", "l3", "l2", "l1"} {
		require.NoError(t, e.s.Remove(e.ctx, key), "remove %s", key)
	}
}

func testNoParent(t *testing.T, open Opener) {
	e := newEnv(t, open)
	a := e.prepare("a", "")
	require.Empty(t, names(t, a))
	require.NoError(t, os.WriteFile(filepath.Join(a, "f"), []byte("x"), 0o644))

	v := e.view("v", "")
	require.Empty(t, names(t, v))
	require.ErrorIs(t, os.WriteFile(filepath.Join(v, "f"), nil, 0o644), unix.EROFS)
}

// The layers of testLayersWhiteoutsOpaque.
func threeLayers() (l1, l2, l3 []tartest.Entry) {
	l1 = []tartest.Entry{
		tartest.Dir("etc/", 0o755),
		tartest.File("etc/passwd", "root:x:0:0", 0o644),
		tartest.File("etc/shadow", "L1", 0o640),
		tartest.File("etc/hosts", "L1", 0o644),
		tartest.Dir("bin/", 0o755),
		tartest.File("bin/sh", "sh", 0o755),
		tartest.File("bin/ls", "ls", 0o755),
		tartest.Dir("usr/lib/b/", 0o755),
		tartest.File("usr/lib/a", "a", 0o644),
		tartest.Link("usr/lib/a-link", "usr/lib/a"),
		tartest.File("usr/lib/b/c", "c", 0o644),
		tartest.Symlink("lib", "usr/lib"),
		tartest.Dir("opq/lowerdir/", 0o755),
		tartest.File("opq/lower", "L1", 0o644),
		tartest.File("opq/lowerdir/x", "L1", 0o644),
		tartest.File("opq/mine", "L1", 0o644),
		tartest.Char("dev/null", 1, 3),
	}
	l2 = []tartest.Entry{
		tartest.Dir("etc/", 0o755),
		tartest.File("etc/passwd", "root:x:0:0", 0o600),
		tartest.Whiteout("etc", "shadow"),
		tartest.File("etc/hosts", "L2", 0o644),
		tartest.Whiteout("bin", "ls"),
		tartest.Whiteout("usr/lib", "b"),
		tartest.Dir("opq/", 0o755),
		tartest.File("opq/mine", "L2", 0o644),
		tartest.Opaque("opq"),
		tartest.File("opq/z-after", "L2", 0o644),
		tartest.Dir("newdir/", 0o755),
		tartest.File("newdir/file", "L2", 0o644),
	}
	l3 = []tartest.Entry{
		tartest.File("etc/shadow", "L3", 0o600),
		tartest.Whiteout("", "newdir"),
		tartest.File("usr/bin/sudo", "sudo", 0o4755).WithOwner(1000, 1001),
	}
	return l1, l2, l3
}

func testLayersWhiteoutsOpaque(t *testing.T, open Opener) {
	e := newEnv(t, open)
	l1, l2, l3 := threeLayers()
	e.unpack("l1", "", l1...)
	e.unpack("l2", "l1", l2...)
	e.unpack("l3", "l2", l3...)
	checkThreeLayers(t, e.prepare("c", "l3"))

	// The middle layer on its own.
	v := e.view("v2", "l2")
	requireAbsent(t, filepath.Join(v, "etc/shadow"))
	require.Equal(t, "L2", readFile(t, filepath.Join(v, "newdir/file")))
	require.Equal(t, "sh", readFile(t, filepath.Join(v, "bin/sh")))
	requireAbsent(t, filepath.Join(v, "bin/ls"))
	require.ElementsMatch(t, []string{"mine", "z-after"}, names(t, filepath.Join(v, "opq")))
}

// checkThreeLayers checks what a container sees on l1+l2+l3.
func checkThreeLayers(t *testing.T, mnt string) {
	t.Helper()
	st := func(p string) *syscall.Stat_t {
		fi, err := os.Lstat(filepath.Join(mnt, p))
		require.NoError(t, err)
		return fi.Sys().(*syscall.Stat_t)
	}
	require.Equal(t, uint32(unix.S_IFREG|0o600), st("etc/passwd").Mode, "metadata from the top layer")
	require.Equal(t, "L3", readFile(t, filepath.Join(mnt, "etc/shadow")), "re-created after a whiteout")
	require.Equal(t, "L2", readFile(t, filepath.Join(mnt, "etc/hosts")))
	require.Equal(t, "sh", readFile(t, filepath.Join(mnt, "bin/sh")))
	requireAbsent(t, filepath.Join(mnt, "bin/ls"))
	requireAbsent(t, filepath.Join(mnt, "usr/lib/b"))
	require.Equal(t, "a", readFile(t, filepath.Join(mnt, "usr/lib/a")))
	require.Equal(t, st("usr/lib/a").Ino, st("usr/lib/a-link").Ino, "hard links stay linked")
	target, err := os.Readlink(filepath.Join(mnt, "lib"))
	require.NoError(t, err)
	require.Equal(t, "usr/lib", target)
	require.Equal(t, "a", readFile(t, filepath.Join(mnt, "lib/a")), "a symlink inside the rootfs resolves inside it")
	require.ElementsMatch(t, []string{"mine", "z-after"}, names(t, filepath.Join(mnt, "opq")),
		"an opaque directory hides the lower layers' entries and keeps its own")
	require.Equal(t, "L2", readFile(t, filepath.Join(mnt, "opq/mine")))
	requireAbsent(t, filepath.Join(mnt, "newdir"))
	sudo := st("usr/bin/sudo")
	require.Equal(t, uint32(unix.S_IFREG|0o4755), sudo.Mode)
	require.Equal(t, [2]uint32{1000, 1001}, [2]uint32{sudo.Uid, sudo.Gid})
	null := st("dev/null")
	require.Equal(t, uint32(unix.S_IFCHR), null.Mode&unix.S_IFMT)
	require.Equal(t, uint64(unix.Mkdev(1, 3)), null.Rdev)
	for _, p := range []string{"etc", "usr/lib", "opq"} {
		require.NotContains(t, names(t, filepath.Join(mnt, p)), ".wh..wh..opq")
		for _, n := range names(t, filepath.Join(mnt, p)) {
			require.False(t, strings.HasPrefix(n, ".wh."), "whiteout marker %s/%s visible", p, n)
		}
	}
}

func testActiveIsolated(t *testing.T, open Opener) {
	e := newEnv(t, open)
	l1, l2, l3 := threeLayers()
	e.unpack("l1", "", l1...)
	e.unpack("l2", "l1", l2...)
	e.unpack("l3", "l2", l3...)
	c := e.prepare("c", "l3")
	require.NoError(t, os.WriteFile(filepath.Join(c, "etc/hosts"), []byte("changed"), 0o644))
	require.NoError(t, os.Remove(filepath.Join(c, "etc/passwd")))
	require.NoError(t, os.RemoveAll(filepath.Join(c, "opq")))
	require.NoError(t, os.WriteFile(filepath.Join(c, "new"), []byte("new"), 0o644))

	// Neither the parent nor a sibling sees the container's writes.
	checkThreeLayers(t, e.view("v", "l3"))
	checkThreeLayers(t, e.prepare("sibling", "l3"))
	requireAbsent(t, filepath.Join(e.prepare("sibling2", "l3"), "new"))

	// The container still sees them after a remount.
	e.unmount(c)
	ms, err := e.s.Mounts(e.ctx, "c")
	require.NoError(t, err)
	c = e.mount(ms)
	require.Equal(t, "changed", readFile(t, filepath.Join(c, "etc/hosts")))
	requireAbsent(t, filepath.Join(c, "etc/passwd"))
	requireAbsent(t, filepath.Join(c, "opq"))
	require.Equal(t, "new", readFile(t, filepath.Join(c, "new")))
}

func testRemoveWithChildren(t *testing.T, open Opener) {
	e := newEnv(t, open)
	e.unpack("base", "", tartest.File("f", "x", 0o644))
	e.unpack("child", "base", tartest.File("g", "y", 0o644))
	_, err := e.s.Prepare(e.ctx, "c", "child")
	require.NoError(t, err)
	_, err = e.s.View(e.ctx, "v", "base")
	require.NoError(t, err)

	require.ErrorIs(t, e.s.Remove(e.ctx, "base"), errdefs.ErrFailedPrecondition)
	require.ErrorIs(t, e.s.Remove(e.ctx, "child"), errdefs.ErrFailedPrecondition)
	for _, key := range []string{"c", "child", "v", "base"} {
		require.NoError(t, e.s.Remove(e.ctx, key), "remove %s", key)
		_, err := e.s.Stat(e.ctx, key)
		require.ErrorIs(t, err, errdefs.ErrNotFound)
	}
	require.Empty(t, walk(t, e.s))
	require.Empty(t, names(t, filepath.Join(e.root, "snapshots")), "nothing left on disk")
	require.Empty(t, names(t, filepath.Join(e.root, "tmp")))
}

func testUsage(t *testing.T, open Opener) {
	e := newEnv(t, open)
	u := e.unpack("base", "",
		tartest.Dir("d/", 0o755),
		tartest.File("d/a", strings.Repeat("a", 1000), 0o644),
		tartest.File("d/b", strings.Repeat("b", 24), 0o644),
		tartest.Link("d/a2", "d/a"),
		tartest.Symlink("s", "d/a"),
	)
	want := snapshotter.Usage{Size: 1024, Inodes: 4} // d, a, b, s
	require.Equal(t, want, u)
	got, err := e.s.Usage(e.ctx, "base")
	require.NoError(t, err)
	require.Equal(t, want, got, "recorded at unpack")

	c := e.prepare("c", "base")
	before, err := e.s.Usage(e.ctx, "c")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(c, "big"), bytes.Repeat([]byte{1}, 1<<20), 0o644))
	after, err := e.s.Usage(e.ctx, "c")
	require.NoError(t, err)
	require.Equal(t, before.Size+1<<20, after.Size, "an active snapshot is measured")
	require.Equal(t, before.Inodes+1, after.Inodes)
}

func testFailedUnpackLeavesNothing(t *testing.T, open Opener) {
	e := newEnv(t, open)
	_, err := e.s.Unpack(e.ctx, "bad", "", e.layer(
		tartest.File("ok", "fine", 0o644),
		tartest.File("../escape", "pwned", 0o644),
	))
	require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
	_, err = e.s.Stat(e.ctx, "bad")
	require.ErrorIs(t, err, errdefs.ErrNotFound)
	require.Empty(t, names(t, filepath.Join(e.root, "tmp")))
	requireAbsent(t, filepath.Join(e.root, "escape"))

	// A truncated stream fails too, and the key is free again afterwards.
	b, err := tartest.Tar(tartest.File("f", strings.Repeat("x", 5000), 0o644))
	require.NoError(t, err)
	_, err = e.s.Unpack(e.ctx, "bad", "", bytes.NewReader(b[:2000]))
	require.Error(t, err)
	e.unpack("bad", "", tartest.File("f", "x", 0o644))
}

// gate is a reader that reports its first Read and then blocks until
// released.
type gate struct {
	r       io.Reader
	started chan struct{}
	release chan struct{}
	once    sync.Once
}

func (g *gate) Read(p []byte) (int, error) {
	g.once.Do(func() {
		close(g.started)
		<-g.release
	})
	return g.r.Read(p)
}

func testConcurrentUnpackSameKey(t *testing.T, open Opener) {
	e := newEnv(t, open)
	g := &gate{r: e.layer(tartest.File("f", "first", 0o644)), started: make(chan struct{}), release: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		_, err := e.s.Unpack(e.ctx, "k", "", g)
		done <- err
	}()
	<-g.started
	_, err := e.s.Unpack(e.ctx, "k", "", e.layer(tartest.File("f", "second", 0o644)))
	require.ErrorIs(t, err, errdefs.ErrAlreadyExists, "a key being unpacked is taken")
	// A different key is not held up by the unpack in flight.
	e.unpack("other", "", tartest.File("f", "other", 0o644))
	close(g.release)
	require.NoError(t, <-done)
	require.Equal(t, "first", readFile(t, filepath.Join(e.view("v", "k"), "f")))
}

func testCrashLeftovers(t *testing.T, open Opener) {
	root := t.TempDir()
	s := open(t, root)
	ctx := context.Background()
	b, err := tartest.Tar(tartest.File("f", "kept", 0o644))
	require.NoError(t, err)
	_, err = s.Unpack(ctx, "base", "", bytes.NewReader(b))
	require.NoError(t, err)
	require.NoError(t, s.Close())

	// A crash in the middle of an unpack and a directory crid did not make.
	half := filepath.Join(root, "tmp", "new-12345", "fs")
	require.NoError(t, os.MkdirAll(half, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(half, "partial"), []byte("x"), 0o644))
	stray := filepath.Join(root, "snapshots", "stray")
	require.NoError(t, os.MkdirAll(filepath.Join(stray, "fs"), 0o755))

	s = open(t, root)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	require.Empty(t, names(t, filepath.Join(root, "tmp")), "leftovers are removed")
	require.DirExists(t, stray, "unknown directories are reported, not deleted")
	infos := walk(t, s)
	require.Len(t, infos, 1)
	require.Equal(t, "base", infos[0].Key)
	e := &env{t: t, root: root, s: s, ctx: ctx}
	require.Equal(t, "kept", readFile(t, filepath.Join(e.prepare("c", "base"), "f")))
}

func testReopen(t *testing.T, open Opener) {
	root := t.TempDir()
	s := open(t, root)
	e := &env{t: t, root: root, s: s, ctx: context.Background()}
	l1, l2, l3 := threeLayers()
	e.unpack("l1", "", l1...)
	e.unpack("l2", "l1", l2...)
	u3 := e.unpack("l3", "l2", l3...)
	c := e.prepare("c", "l3")
	require.NoError(t, os.WriteFile(filepath.Join(c, "mine"), []byte("x"), 0o644))
	e.unmount(c)
	before := walk(t, s)
	require.NoError(t, s.Close())

	s = open(t, root)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	e.s = s
	after := walk(t, s)
	require.Equal(t, len(before), len(after))
	for i := range before {
		require.True(t, before[i].Created.Equal(after[i].Created))
		before[i].Created, after[i].Created = time.Time{}, time.Time{}
	}
	require.Equal(t, before, after)
	u, err := s.Usage(e.ctx, "l3")
	require.NoError(t, err)
	require.Equal(t, u3, u)
	ms, err := s.Mounts(e.ctx, "c")
	require.NoError(t, err)
	c = e.mount(ms)
	require.Equal(t, "x", readFile(t, filepath.Join(c, "mine")))
	checkThreeLayers(t, e.view("v", "l3"))
}

func testParallelUnpack(t *testing.T, open Opener) {
	e := newEnv(t, open)
	l1, l2, l3 := threeLayers()
	layers := [][]tartest.Entry{l1, l2, l3, {tartest.File("top", "L4", 0o644)}}
	keys := []string{"l1", "l2", "l3", "l4"}
	parent := func(i int) string {
		if i == 0 {
			return ""
		}
		return keys[i-1]
	}
	if !e.s.ParallelUnpack() {
		_, err := e.s.Unpack(e.ctx, "l2", "l1", e.layer(l2...))
		require.ErrorIs(t, err, errdefs.ErrNotFound, "without ParallelUnpack the parent must exist")
		return
	}

	// The top layer first: it exists, but cannot be mounted yet.
	e.unpack("l4", "l3", layers[3]...)
	_, err := e.s.Mounts(e.ctx, "l4")
	require.ErrorIs(t, err, errdefs.ErrNotFound)
	_, err = e.s.Prepare(e.ctx, "early", "l4")
	require.ErrorIs(t, err, errdefs.ErrNotFound, "no mount is built from part of a chain")
	_, err = e.s.Stat(e.ctx, "early")
	require.ErrorIs(t, err, errdefs.ErrNotFound)

	// The others at once, started top down.
	errs := make(chan error, 3)
	for i := 2; i >= 0; i-- {
		r := e.layer(layers[i]...)
		go func() {
			_, err := e.s.Unpack(e.ctx, keys[i], parent(i), r)
			errs <- err
		}()
	}
	for range 3 {
		require.NoError(t, <-errs)
	}
	c := e.prepare("c", "l4")
	checkThreeLayers(t, c)
	require.Equal(t, "L4", readFile(t, filepath.Join(c, "top")))
}

func testManyLayers(t *testing.T, open Opener) {
	e := newEnv(t, open)
	const n = 130
	parent := ""
	for i := range n {
		key := fmt.Sprintf("layer-%03d", i)
		e.unpack(key, parent,
			tartest.File(fmt.Sprintf("f%03d", i), "x", 0o644),
			tartest.File("top", key, 0o644),
		)
		parent = key
	}
	c := e.prepare("c", parent)
	for i := range n {
		require.FileExists(t, filepath.Join(c, fmt.Sprintf("f%03d", i)))
	}
	require.Equal(t, parent, readFile(t, filepath.Join(c, "top")))
	v := e.view("v", parent)
	require.Len(t, names(t, v), n+1)
}
