package cni

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestNewRejectsRelativeDirs(t *testing.T) {
	abs := t.TempDir()
	for _, tc := range []struct {
		desc string
		opts Options
	}{
		{desc: "conf dir", opts: Options{ConfDir: "net.d", BinDirs: []string{abs}, CacheDir: abs}},
		{desc: "bin dir", opts: Options{ConfDir: abs, BinDirs: []string{abs, "bin"}, CacheDir: abs}},
		{desc: "cache dir", opts: Options{ConfDir: abs, BinDirs: []string{abs}, CacheDir: "cache"}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			_, err := New(tc.opts)
			require.Error(t, err)
			require.True(t, errdefs.IsInvalidArgument(err), "%v", err)
		})
	}
}

func TestConfigSelectionFirstValidInLexicalOrder(t *testing.T) {
	for _, tc := range []struct {
		desc  string
		files map[string]string
		want  string
	}{
		{
			desc: "lexical order across extensions",
			files: map[string]string{
				"10-first.json":      `{"cniVersion":"1.0.0","name":"first","type":"net"}`,
				"20-second.conflist": fakeConflist("second", "1.0.0", `{"type":"net"}`),
				"30-third.conf":      `{"cniVersion":"1.0.0","name":"third","type":"net"}`,
			},
			want: "first",
		},
		{
			desc: "file name, not extension, decides",
			files: map[string]string{
				"20-list.conflist": fakeConflist("list", "1.0.0", `{"type":"net"}`),
				"10-single.conf":   `{"cniVersion":"1.0.0","name":"single","type":"net"}`,
			},
			want: "single",
		},
		{
			desc: "invalid files are skipped",
			files: map[string]string{
				"10-garbage.conflist":   `{not json`,
				"11-noplugins.conflist": `{"cniVersion":"1.0.0","name":"empty","plugins":[]}`,
				"12-notype.conf":        `{"cniVersion":"1.0.0","name":"notype"}`,
				"13-list-in.json":       fakeConflist("list-in-json", "1.0.0", `{"type":"net"}`),
				"20-good.conf":          `{"cniVersion":"1.0.0","name":"good","type":"net"}`,
				"30-later.conflist":     fakeConflist("later", "1.0.0", `{"type":"net"}`),
			},
			want: "good",
		},
		{
			desc: "other extensions are ignored",
			files: map[string]string{
				"00-readme.txt":     fakeConflist("txt", "1.0.0", `{"type":"net"}`),
				"01-old.conflist~":  fakeConflist("backup", "1.0.0", `{"type":"net"}`),
				"10-real.conflist":  fakeConflist("real", "1.0.0", `{"type":"net"}`),
				"99-zzz.conflist":   fakeConflist("zzz", "1.0.0", `{"type":"net"}`),
				"05-dir.conflist/x": "",
			},
			want: "real",
		},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			e := newFakeEnv(t)
			e.plugin("net", fakeOpts{})
			for name, content := range tc.files {
				p := filepath.Join(e.confDir, name)
				require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
				require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
			}
			m := e.manager()
			ctx := fakeContext(t)
			require.NoError(t, m.Status(ctx))
			require.Equal(t, tc.want, m.Network(ctx))
		})
	}
}

func TestStatusNamesSkippedInvalidFiles(t *testing.T) {
	e := newFakeEnv(t)
	e.plugin("net", fakeOpts{})
	e.conf("10-garbage.conflist", `{not json`)
	e.conf("20-noplugins.conflist", `{"cniVersion":"1.0.0","name":"empty","plugins":[]}`)
	e.conf("30-notype.conf", `{"cniVersion":"1.0.0","name":"notype"}`)
	m := e.manager()
	ctx := fakeContext(t)

	err := m.Status(ctx)
	require.Error(t, err)
	require.ErrorContains(t, err, "no valid CNI network config found in "+e.confDir)
	for _, f := range []string{"10-garbage.conflist", "20-noplugins.conflist", "30-notype.conf"} {
		require.ErrorContains(t, err, f)
	}
	require.Empty(t, m.Network(ctx))
}

func TestSingleConfFileIsUsed(t *testing.T) {
	e := newFakeEnv(t)
	e.plugin("net", fakeOpts{})
	e.conf("10-single.conf", `{"cniVersion":"1.0.0","name":"single","type":"net","custom":"kept"}`)
	m := e.manager()
	ctx := fakeContext(t)

	require.NoError(t, m.Status(ctx))
	require.Equal(t, "single", m.Network(ctx))
	res, err := m.Setup(ctx, fakePod("p1"))
	require.NoError(t, err)
	require.Equal(t, Result{Network: "single", IPs: []string{"10.1.2.3"}}, res)

	adds := e.callsOf("net", "ADD", "p1")
	require.Len(t, adds, 1)
	conf := adds[0].conf(t)
	require.Equal(t, "single", conf["name"])
	require.Equal(t, "net", conf["type"])
	require.Equal(t, "kept", conf["custom"])
}

func TestStatusNotReadyWhenConfDirMissing(t *testing.T) {
	e := newFakeEnv(t)
	opts := e.options()
	opts.ConfDir = filepath.Join(t.TempDir(), "does-not-exist")
	m, err := New(opts)
	require.NoError(t, err, "a missing conf dir is not an error at construction")
	ctx := fakeContext(t)

	err = m.Status(ctx)
	require.Error(t, err)
	require.ErrorContains(t, err, opts.ConfDir)
	require.Empty(t, m.Network(ctx))
}

func TestStatusNotReadyWhenConfDirEmpty(t *testing.T) {
	e := newFakeEnv(t)
	e.plugin("net", fakeOpts{})
	e.conf("README", fakeConflist("readme", "1.0.0", `{"type":"net"}`))
	m := e.manager()
	ctx := fakeContext(t)

	err := m.Status(ctx)
	require.Error(t, err)
	require.ErrorContains(t, err, "no valid CNI network config found in "+e.confDir)
	require.NotContains(t, err.Error(), "skipped", "no file was skipped")
	require.Empty(t, m.Network(ctx))
}

func TestStatusReadyAfterConfigDroppedIn(t *testing.T) {
	e := newFakeEnv(t)
	e.plugin("net", fakeOpts{})
	root := filepath.Dir(e.confDir)
	require.NoError(t, os.Remove(e.confDir))
	m := e.manager()
	ctx := fakeContext(t)

	require.Error(t, m.Status(ctx), "no conf dir")
	require.NoError(t, os.Mkdir(e.confDir, 0o755))
	require.Error(t, m.Status(ctx), "empty conf dir")
	_, err := m.Setup(ctx, fakePod("p1"))
	require.ErrorIs(t, err, ErrNotReady)

	// Written elsewhere and renamed in, as installers do.
	tmp := filepath.Join(root, "tmp.conflist")
	require.NoError(t, os.WriteFile(tmp, []byte(fakeConflist("late", "1.0.0", `{"type":"net"}`)), 0o644))
	require.NoError(t, os.Rename(tmp, filepath.Join(e.confDir, "10-late.conflist")))

	require.NoError(t, m.Status(ctx))
	require.Equal(t, "late", m.Network(ctx))
	res, err := m.Setup(ctx, fakePod("p1"))
	require.NoError(t, err)
	require.Equal(t, "late", res.Network)
}

func TestStatusNotReadyWhenPluginMissing(t *testing.T) {
	e := newFakeEnv(t)
	e.plugin("net", fakeOpts{})
	e.conf("10-net.conflist", fakeConflist("mynet", "1.0.0", `{"type":"net"}`, `{"type":"portmap"}`))
	m := e.manager()
	ctx := fakeContext(t)

	err := m.Status(ctx)
	require.Error(t, err)
	require.ErrorContains(t, err, `plugin "portmap" not found`)
	require.ErrorContains(t, err, `"mynet"`)
	require.Empty(t, m.Network(ctx))
	_, err = m.Setup(ctx, fakePod("p1"))
	require.ErrorIs(t, err, ErrNotReady)
	require.ErrorContains(t, err, `plugin "portmap" not found`)
	require.Empty(t, e.calls(), "no plugin runs while not ready")

	e.plugin("portmap", fakeOpts{})
	require.NoError(t, m.Status(ctx), "the same Manager sees the plugin installed later")
	require.Equal(t, "mynet", m.Network(ctx))
}

func TestStatusNotReadyWhenLoopbackMissing(t *testing.T) {
	e := newFakeEnv(t)
	e.plugin("net", fakeOpts{})
	require.NoError(t, os.Remove(filepath.Join(e.binDir, "loopback")))
	e.conf("10-net.conflist", fakeConflist("mynet", "1.0.0", `{"type":"net"}`))
	m := e.manager()
	ctx := fakeContext(t)

	err := m.Status(ctx)
	require.Error(t, err)
	require.ErrorContains(t, err, "loopback plugin not found")
	require.Empty(t, m.Network(ctx))

	e.plugin("loopback", fakeOpts{result: fakeLoopbackResult})
	require.NoError(t, m.Status(ctx))
}

func TestPluginFoundInLaterBinDir(t *testing.T) {
	e := newFakeEnv(t)
	other := t.TempDir()
	e.conf("10-net.conflist", fakeConflist("mynet", "1.0.0", `{"type":"net"}`))
	opts := e.options()
	opts.BinDirs = []string{other, e.binDir}
	m, err := New(opts)
	require.NoError(t, err)
	ctx := fakeContext(t)

	require.ErrorContains(t, m.Status(ctx), `plugin "net" not found`)
	e.plugin("net", fakeOpts{})
	require.NoError(t, m.Status(ctx))
	_, err = m.Setup(ctx, fakePod("p1"))
	require.NoError(t, err)
	require.Len(t, e.callsOf("net", "ADD", "p1"), 1)
}

func TestConfigChangeIsPickedUp(t *testing.T) {
	e := newFakeEnv(t)
	e.plugin("net", fakeOpts{})
	e.conf("10-net.conflist", fakeConflist("one", "1.0.0", `{"type":"net"}`))
	m := e.manager()
	ctx := fakeContext(t)
	require.Equal(t, "one", m.Network(ctx))

	e.conf("10-net.conflist", fakeConflist("two-longer", "1.0.0", `{"type":"net"}`))
	require.Equal(t, "two-longer", m.Network(ctx))

	e.conf("05-first.conflist", fakeConflist("three", "1.0.0", `{"type":"net"}`))
	require.Equal(t, "three", m.Network(ctx))

	require.NoError(t, os.Remove(filepath.Join(e.confDir, "05-first.conflist")))
	require.Equal(t, "two-longer", m.Network(ctx))

	require.NoError(t, os.Remove(filepath.Join(e.confDir, "10-net.conflist")))
	require.Error(t, m.Status(ctx))
	require.Empty(t, m.Network(ctx))
}

// TestConfigChangeWithinOneTimestampTick covers changes the names, sizes
// and modification times of the files cannot show: a file rewritten with
// the same size, and a plugin installed, within the timestamp granularity
// of the file system (a jiffy on Linux) of the previous look.
func TestConfigChangeWithinOneTimestampTick(t *testing.T) {
	e := newFakeEnv(t)
	e.plugin("net", fakeOpts{})
	e.plugin("plugB", fakeOpts{})
	conf := filepath.Join(e.confDir, "10-net.conflist")
	e.conf("10-net.conflist", fakeConflist("netA", "1.0.0", `{"type":"net"}`, `{"type":"plugA"}`))
	m := e.manager()
	ctx := fakeContext(t)

	binInfo, err := os.Stat(e.binDir)
	require.NoError(t, err)
	require.ErrorContains(t, m.Status(ctx), `plugin "plugA" not found`)
	e.plugin("plugA", fakeOpts{})
	require.NoError(t, os.Chtimes(e.binDir, binInfo.ModTime(), binInfo.ModTime()))
	require.NoError(t, m.Status(ctx), "plugin installed in the same tick")
	require.Equal(t, "netA", m.Network(ctx))

	confInfo, err := os.Stat(conf)
	require.NoError(t, err)
	e.conf("10-net.conflist", fakeConflist("netB", "1.0.0", `{"type":"net"}`, `{"type":"plugB"}`))
	require.NoError(t, os.Chtimes(conf, confInfo.ModTime(), confInfo.ModTime()))
	newInfo, err := os.Stat(conf)
	require.NoError(t, err)
	require.Equal(t, confInfo.Size(), newInfo.Size())
	require.Equal(t, "netB", m.Network(ctx), "config rewritten with the same size in the same tick")
}

// TestConfigBehindSymlinkChange covers a conf dir laid out as a
// Kubernetes ConfigMap volume: the config is a symlink through ..data,
// and an update swaps ..data, leaving the config's own link untouched.
func TestConfigBehindSymlinkChange(t *testing.T) {
	e := newFakeEnv(t)
	e.plugin("net", fakeOpts{})
	old := time.Now().Add(-time.Hour)
	v1 := filepath.Join(e.confDir, "..v1")
	require.NoError(t, os.Mkdir(v1, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(v1, "10-net.conflist"), []byte(fakeConflist("one", "1.0.0", `{"type":"net"}`)), 0o644))
	require.NoError(t, os.Chtimes(filepath.Join(v1, "10-net.conflist"), old, old))
	require.NoError(t, os.Symlink("..v1", filepath.Join(e.confDir, "..data")))
	link := filepath.Join(e.confDir, "10-net.conflist")
	require.NoError(t, os.Symlink("..data/10-net.conflist", link))
	tv := []unix.Timeval{unix.NsecToTimeval(old.UnixNano()), unix.NsecToTimeval(old.UnixNano())}
	require.NoError(t, unix.Lutimes(link, tv))
	require.NoError(t, os.Chtimes(e.binDir, old, old))
	m := e.manager()
	ctx := fakeContext(t)
	require.Equal(t, "one", m.Network(ctx))

	v2 := filepath.Join(e.confDir, "..v2")
	require.NoError(t, os.Mkdir(v2, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(v2, "10-net.conflist"), []byte(fakeConflist("two-longer", "1.0.0", `{"type":"net"}`)), 0o644))
	require.NoError(t, os.Symlink("..v2", filepath.Join(e.confDir, "..data.tmp")))
	require.NoError(t, os.Rename(filepath.Join(e.confDir, "..data.tmp"), filepath.Join(e.confDir, "..data")))
	require.NoError(t, unix.Lutimes(link, tv))

	require.Equal(t, "two-longer", m.Network(ctx))
}
