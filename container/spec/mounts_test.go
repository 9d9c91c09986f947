package spec

import (
	"os"
	"path/filepath"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func mountByDest(s *specs.Spec, dst string) *specs.Mount {
	for i := range s.Mounts {
		if s.Mounts[i].Destination == dst {
			return &s.Mounts[i]
		}
	}
	return nil
}

func dests(s *specs.Spec) []string {
	var d []string
	for _, m := range s.Mounts {
		d = append(d, m.Destination)
	}
	return d
}

func TestDefaultMounts(t *testing.T) {
	in := baseInput(t)
	s, err := Generate(in)
	require.NoError(t, err)
	assert.Equal(t, []string{"/proc", "/dev", "/dev/pts", "/dev/mqueue", "/sys", "/sys/fs/cgroup",
		"/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/dev/shm"}, dests(s))
	assert.Contains(t, mountByDest(s, "/sys").Options, "ro")
	assert.Contains(t, mountByDest(s, "/sys/fs/cgroup").Options, "ro")
	shm := mountByDest(s, "/dev/shm")
	assert.Equal(t, specs.Mount{Destination: "/dev/shm", Type: "bind", Source: "/sb/shm", Options: []string{"rbind", "rprivate", "rw"}}, *shm)
	assert.Equal(t, specs.Mount{Destination: "/etc/hosts", Type: "bind", Source: "/sb/hosts", Options: []string{"rbind", "rprivate", "rw"}}, *mountByDest(s, "/etc/hosts"))
	assert.Empty(t, s.Linux.RootfsPropagation)

	t.Run("readonly rootfs makes etc files ro", func(t *testing.T) {
		in := baseInput(t)
		in.Linux.Security.ReadonlyRootfs = true
		s, err := Generate(in)
		require.NoError(t, err)
		assert.Contains(t, mountByDest(s, "/etc/resolv.conf").Options, "ro")
	})
	t.Run("no sandbox paths", func(t *testing.T) {
		in := baseInput(t)
		in.Sandbox.HostnamePath, in.Sandbox.HostsPath, in.Sandbox.ResolvConfPath, in.Sandbox.ShmPath = "", "", "", ""
		s, err := Generate(in)
		require.NoError(t, err)
		assert.Equal(t, []string{"/proc", "/dev", "/dev/pts", "/dev/mqueue", "/sys", "/sys/fs/cgroup", "/dev/shm"}, dests(s))
		assert.Equal(t, "tmpfs", mountByDest(s, "/dev/shm").Type)
	})
	t.Run("host ipc binds host /dev/shm", func(t *testing.T) {
		in := baseInput(t)
		in.Linux.Security.Namespaces.IPC = NamespaceNode
		s, err := Generate(in)
		require.NoError(t, err)
		assert.Equal(t, "/dev/shm", mountByDest(s, "/dev/shm").Source)
	})
	t.Run("privileged sysfs and cgroup rw", func(t *testing.T) {
		in := baseInput(t)
		in.Linux.Security.Privileged = true
		s, err := Generate(in)
		require.NoError(t, err)
		assert.Contains(t, mountByDest(s, "/sys").Options, "rw")
		assert.Contains(t, mountByDest(s, "/sys/fs/cgroup").Options, "rw")
	})
}

func TestCRIMounts(t *testing.T) {
	src := t.TempDir()
	for _, tc := range []struct {
		desc      string
		mounts    []Mount
		wantOpts  map[string][]string
		wantProp  string
		wantErr   string
		notWanted []string
	}{
		{desc: "private rw", mounts: []Mount{{ContainerPath: "/data", HostPath: src}},
			wantOpts: map[string][]string{"/data": {"rbind", "rprivate", "rw"}}},
		{desc: "readonly", mounts: []Mount{{ContainerPath: "/data", HostPath: src, Readonly: true}},
			wantOpts: map[string][]string{"/data": {"rbind", "rprivate", "ro"}}},
		{desc: "recursive readonly", mounts: []Mount{{ContainerPath: "/data", HostPath: src, Readonly: true, RecursiveReadOnly: true}},
			wantOpts: map[string][]string{"/data": {"rbind", "rprivate", "ro", "rro"}}},
		{desc: "recursive readonly needs readonly", mounts: []Mount{{ContainerPath: "/data", HostPath: src, RecursiveReadOnly: true}}, wantErr: "recursive read-only"},
		{desc: "recursive readonly needs private", mounts: []Mount{{ContainerPath: "/data", HostPath: src, Readonly: true, RecursiveReadOnly: true, Propagation: PropagationHostToContainer}}, wantErr: "recursive read-only"},
		{desc: "image volume", mounts: []Mount{{ContainerPath: "/data", HostPath: src, Readonly: true, ImageVolume: true}},
			wantOpts: map[string][]string{"/data": {"rbind", "rprivate", "ro", "nosuid", "nodev"}}},
		{desc: "mount options", mounts: []Mount{{ContainerPath: "/data", HostPath: src, Options: []string{"noexec", "nosuid"}}},
			wantOpts: map[string][]string{"/data": {"rbind", "rprivate", "rw", "noexec", "nosuid"}}},
		{desc: "mount options on an image volume, no duplicates", mounts: []Mount{{ContainerPath: "/data", HostPath: src, Readonly: true, ImageVolume: true, Options: []string{"nodev", "noexec", "noexec"}}},
			wantOpts: map[string][]string{"/data": {"rbind", "rprivate", "ro", "nosuid", "nodev", "noexec"}}},
		{desc: "mount option that loosens", mounts: []Mount{{ContainerPath: "/data", HostPath: src, Readonly: true, ImageVolume: true, Options: []string{"suid"}}}, wantErr: `mount option "suid"`},
		{desc: "mount option rw on a read-only mount", mounts: []Mount{{ContainerPath: "/data", HostPath: src, Readonly: true, Options: []string{"rw"}}}, wantErr: `mount option "rw"`},
		{desc: "mount option beyond the API's", mounts: []Mount{{ContainerPath: "/data", HostPath: src, Options: []string{"noatime"}}}, wantErr: `mount option "noatime"`},
		{desc: "mount option with data", mounts: []Mount{{ContainerPath: "/data", HostPath: src, Options: []string{"size=1g"}}}, wantErr: "not allowed"},
		{desc: "mount option changing propagation", mounts: []Mount{{ContainerPath: "/data", HostPath: src, Options: []string{"rshared"}}}, wantErr: "not allowed"},
		{desc: "image volume needs readonly", mounts: []Mount{{ContainerPath: "/data", HostPath: src, ImageVolume: true}}, wantErr: "read-only"},
		{desc: "rslave", mounts: []Mount{{ContainerPath: "/data", HostPath: src, Propagation: PropagationHostToContainer}},
			wantOpts: map[string][]string{"/data": {"rbind", "rslave", "rw"}}, wantProp: "rslave"},
		{desc: "rshared", mounts: []Mount{{ContainerPath: "/data", HostPath: src, Propagation: PropagationBidirectional}},
			wantOpts: map[string][]string{"/data": {"rbind", "rshared", "rw"}}, wantProp: "rshared"},
		{desc: "rshared wins over rslave", mounts: []Mount{
			{ContainerPath: "/a", HostPath: src, Propagation: PropagationBidirectional},
			{ContainerPath: "/b", HostPath: src, Propagation: PropagationHostToContainer}}, wantProp: "rshared"},
		{desc: "unknown propagation", mounts: []Mount{{ContainerPath: "/data", HostPath: src, Propagation: 7}}, wantErr: "propagation"},
		{desc: "relative target", mounts: []Mount{{ContainerPath: "data", HostPath: src}}, wantErr: "absolute"},
		{desc: "dotdot target", mounts: []Mount{{ContainerPath: "/data/../../etc", HostPath: src}}, wantErr: `".."`},
		{desc: "empty target", mounts: []Mount{{HostPath: src}}, wantErr: "absolute"},
		{desc: "root target", mounts: []Mount{{ContainerPath: "/", HostPath: src}}, wantErr: "container root"},
		{desc: "relative source", mounts: []Mount{{ContainerPath: "/data", HostPath: "src"}}, wantErr: "absolute"},
		{desc: "missing source", mounts: []Mount{{ContainerPath: "/data", HostPath: filepath.Join(src, "nope")}}, wantErr: "does not exist"},
		{desc: "request mounts /etc/hosts itself", mounts: []Mount{{ContainerPath: "/etc/hosts", HostPath: src}},
			wantOpts: map[string][]string{"/etc/hosts": {"rbind", "rprivate", "rw"}}},
		{desc: "request mounts /dev/shm replaces the sandbox shm", mounts: []Mount{{ContainerPath: "/dev/shm", HostPath: src}},
			wantOpts: map[string][]string{"/dev/shm": {"rbind", "rprivate", "rw"}}},
		{desc: "request mounts /dev drops default /dev mounts", mounts: []Mount{{ContainerPath: "/dev", HostPath: src}},
			notWanted: []string{"/dev/pts", "/dev/mqueue"}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			in := baseInput(t)
			in.Mounts = tc.mounts
			s, err := Generate(in)
			if tc.wantErr != "" {
				requireInvalid(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			for dst, opts := range tc.wantOpts {
				m := mountByDest(s, dst)
				require.NotNil(t, m, dst)
				assert.Equal(t, opts, m.Options)
				assert.Equal(t, "bind", m.Type)
				assert.Equal(t, src, m.Source)
			}
			seen := map[string]int{}
			for _, d := range dests(s) {
				seen[d]++
				assert.Equal(t, 1, seen[d], "duplicate mount %s", d)
			}
			for _, d := range tc.notWanted {
				assert.Nil(t, mountByDest(s, d), d)
			}
			assert.Equal(t, tc.wantProp, s.Linux.RootfsPropagation)
		})
	}
}

func TestMountOrder(t *testing.T) {
	src := t.TempDir()
	in := baseInput(t)
	in.Mounts = []Mount{{ContainerPath: "/a/b/c", HostPath: src}, {ContainerPath: "/a", HostPath: src}, {ContainerPath: "/a/b", HostPath: src}}
	s, err := Generate(in)
	require.NoError(t, err)
	d := dests(s)
	assert.Less(t, indexOf(d, "/a"), indexOf(d, "/a/b"))
	assert.Less(t, indexOf(d, "/a/b"), indexOf(d, "/a/b/c"))
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

// TestMountTargetSymlinks: the image controls symlinks in the rootfs; mount
// targets must never resolve outside it (CVE-2026-41579).
func TestMountTargetSymlinks(t *testing.T) {
	src := t.TempDir()
	t.Run("CRI target through an absolute symlink resolves inside the rootfs", func(t *testing.T) {
		in := baseInput(t)
		require.NoError(t, os.Symlink("/etc", filepath.Join(in.RootfsPath, "data")))
		in.Mounts = []Mount{{ContainerPath: "/data/conf", HostPath: src}}
		s, err := Generate(in)
		require.NoError(t, err)
		assert.NotNil(t, mountByDest(s, "/etc/conf"))
		assert.Nil(t, mountByDest(s, "/data/conf"))
	})
	t.Run("relative symlink climbing out is clamped to the rootfs", func(t *testing.T) {
		in := baseInput(t)
		require.NoError(t, os.MkdirAll(filepath.Join(in.RootfsPath, "var"), 0o755))
		require.NoError(t, os.Symlink("../../../../../../tmp/x", filepath.Join(in.RootfsPath, "var/run")))
		in.Mounts = []Mount{{ContainerPath: "/var/run/secrets", HostPath: src}}
		s, err := Generate(in)
		require.NoError(t, err)
		assert.NotNil(t, mountByDest(s, "/tmp/x/secrets"))
	})
	t.Run("symlink loop", func(t *testing.T) {
		in := baseInput(t)
		require.NoError(t, os.Symlink("/loop", filepath.Join(in.RootfsPath, "loop")))
		in.Mounts = []Mount{{ContainerPath: "/loop/x", HostPath: src}}
		_, err := Generate(in)
		requireInvalid(t, err, "resolve mount target")
	})
	for _, link := range []string{"dev", "proc", "sys"} {
		t.Run("symlinked /"+link+" is refused", func(t *testing.T) {
			in := baseInput(t)
			require.NoError(t, os.Symlink("/tmp", filepath.Join(in.RootfsPath, link)))
			_, err := Generate(in)
			requireInvalid(t, err, "/"+link+" is a symlink in the image rootfs")
		})
	}
	t.Run("symlinked /dev/pts is refused", func(t *testing.T) {
		in := baseInput(t)
		require.NoError(t, os.MkdirAll(filepath.Join(in.RootfsPath, "dev"), 0o755))
		require.NoError(t, os.Symlink("/etc", filepath.Join(in.RootfsPath, "dev/pts")))
		_, err := Generate(in)
		requireInvalid(t, err, "/dev/pts is a symlink")
	})
	t.Run("symlinked /etc/hosts stays inside", func(t *testing.T) {
		in := baseInput(t)
		require.NoError(t, os.Symlink("/host-etc/hosts", filepath.Join(in.RootfsPath, "etc/hosts")))
		s, err := Generate(in)
		require.NoError(t, err)
		m := mountByDest(s, "/host-etc/hosts")
		require.NotNil(t, m)
		assert.Equal(t, "/sb/hosts", m.Source)
	})
	t.Run("image /dev/shm symlink is irrelevant: /dev is a fresh tmpfs", func(t *testing.T) {
		in := baseInput(t)
		require.NoError(t, os.MkdirAll(filepath.Join(in.RootfsPath, "dev"), 0o755))
		require.NoError(t, os.Symlink("/run/shm", filepath.Join(in.RootfsPath, "dev/shm")))
		s, err := Generate(in)
		require.NoError(t, err)
		assert.NotNil(t, mountByDest(s, "/dev/shm"))
		assert.Nil(t, mountByDest(s, "/run/shm"))
	})
	t.Run("target under another mount is left to runc", func(t *testing.T) {
		in := baseInput(t)
		require.NoError(t, os.MkdirAll(filepath.Join(in.RootfsPath, "vol"), 0o755))
		require.NoError(t, os.Symlink("/etc", filepath.Join(in.RootfsPath, "vol/sub")))
		in.Mounts = []Mount{{ContainerPath: "/vol", HostPath: src}, {ContainerPath: "/vol/sub", HostPath: src}}
		s, err := Generate(in)
		require.NoError(t, err)
		assert.NotNil(t, mountByDest(s, "/vol/sub"), "the image's /vol/sub is hidden by the /vol mount")
	})
	t.Run("device target through a symlink stays inside", func(t *testing.T) {
		in := baseInput(t)
		require.NoError(t, os.Symlink("/etc", filepath.Join(in.RootfsPath, "devs")))
		in.Devices = []Device{{ContainerPath: "/devs/null", HostPath: "/dev/null"}}
		s, err := Generate(in)
		require.NoError(t, err)
		assert.Equal(t, "/etc/null", s.Linux.Devices[0].Path)
	})
}
