package spec

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCapabilities(t *testing.T) {
	without := func(drop ...string) []string {
		return sortCaps(slices.DeleteFunc(slices.Clone(DefaultCaps), func(c string) bool { return slices.Contains(drop, c) }))
	}
	for _, tc := range []struct {
		desc    string
		caps    Capabilities
		lastCap int
		want    []string
		wantErr string
	}{
		{desc: "default", want: sortCaps(slices.Clone(DefaultCaps))},
		{desc: "add without prefix", caps: Capabilities{Add: []string{"SYS_ADMIN"}}, want: sortCaps(append(slices.Clone(DefaultCaps), "CAP_SYS_ADMIN"))},
		{desc: "add with prefix lower case", caps: Capabilities{Add: []string{"cap_net_admin"}}, want: sortCaps(append(slices.Clone(DefaultCaps), "CAP_NET_ADMIN"))},
		{desc: "drop", caps: Capabilities{Drop: []string{"NET_RAW", "CAP_MKNOD"}}, want: without("CAP_NET_RAW", "CAP_MKNOD")},
		{desc: "drop wins over add", caps: Capabilities{Add: []string{"NET_RAW"}, Drop: []string{"NET_RAW"}}, want: without("CAP_NET_RAW")},
		{desc: "add ALL", caps: Capabilities{Add: []string{"ALL"}}, want: allCaps},
		{desc: "add ALL limited by cap_last_cap", caps: Capabilities{Add: []string{"ALL"}}, lastCap: 37, want: allCaps[:38]},
		{desc: "add ALL drop one", caps: Capabilities{Add: []string{"ALL"}, Drop: []string{"CHOWN"}}, want: allCaps[1:]},
		{desc: "drop ALL", caps: Capabilities{Drop: []string{"all"}}, want: []string{}},
		{desc: "drop ALL add one", caps: Capabilities{Drop: []string{"ALL"}, Add: []string{"NET_BIND_SERVICE"}}, want: []string{"CAP_NET_BIND_SERVICE"}},
		{desc: "unknown add", caps: Capabilities{Add: []string{"FLY"}}, wantErr: "unknown capability"},
		{desc: "unknown drop", caps: Capabilities{Drop: []string{"CAP_NOPE"}}, wantErr: "unknown capability"},
		{desc: "cap beyond cap_last_cap", caps: Capabilities{Add: []string{"BPF"}}, lastCap: 37, wantErr: "unknown capability"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			in := baseInput(t)
			in.Linux.Security.Capabilities = tc.caps
			in.Host.LastCap = tc.lastCap
			s, err := Generate(in)
			if tc.wantErr != "" {
				requireInvalid(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			c := s.Process.Capabilities
			assert.Equal(t, tc.want, c.Bounding)
			assert.Equal(t, tc.want, c.Effective)
			assert.Equal(t, tc.want, c.Permitted)
			assert.Empty(t, c.Inheritable, "no inheritable caps (CVE-2022-24769)")
			assert.Empty(t, c.Ambient)
		})
	}
	t.Run("ambient", func(t *testing.T) {
		in := baseInput(t)
		in.Linux.Security.Capabilities = Capabilities{Drop: []string{"ALL"}, AddAmbient: []string{"NET_BIND_SERVICE"}}
		s, err := Generate(in)
		require.NoError(t, err)
		want := []string{"CAP_NET_BIND_SERVICE"}
		assert.Equal(t, &specs.LinuxCapabilities{Bounding: want, Effective: want, Permitted: want, Inheritable: want, Ambient: want}, s.Process.Capabilities)
	})
}

func TestPrivileged(t *testing.T) {
	in := baseInput(t)
	in.Linux.Security.Privileged = true
	in.Linux.Security.Capabilities = Capabilities{Drop: []string{"ALL"}} // ignored when privileged
	in.Linux.Security.Seccomp = SecurityProfile{Type: ProfileRuntimeDefault}
	in.Linux.Security.MaskedPaths = []string{"/proc/kcore"}
	s, err := Generate(in)
	require.NoError(t, err)
	assert.Equal(t, allCaps, s.Process.Capabilities.Bounding)
	assert.Equal(t, allCaps, s.Process.Capabilities.Effective)
	assert.Empty(t, s.Linux.MaskedPaths)
	assert.Empty(t, s.Linux.ReadonlyPaths)
	assert.Nil(t, s.Linux.Seccomp)
	assert.Equal(t, []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}, s.Linux.Resources.Devices)
	var paths []string
	for _, d := range s.Linux.Devices {
		paths = append(paths, d.Path)
	}
	assert.Contains(t, paths, "/dev/null")
	assert.NotContains(t, paths, "/dev/console")
	assert.NotContains(t, paths, "/dev/ptmx")
}

func TestMaskedReadonlyPaths(t *testing.T) {
	for _, tc := range []struct {
		desc               string
		masked, ro         []string
		wantMasked, wantRO []string
	}{
		{desc: "nil means defaults", wantMasked: DefaultMaskedPaths, wantRO: DefaultReadonlyPaths},
		{desc: "empty means none (unmasked procMount)", masked: []string{}, ro: []string{}, wantMasked: []string{}, wantRO: []string{}},
		{desc: "explicit", masked: []string{"/proc/x"}, ro: []string{"/proc/y"}, wantMasked: []string{"/proc/x"}, wantRO: []string{"/proc/y"}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			in := baseInput(t)
			in.Linux.Security.MaskedPaths, in.Linux.Security.ReadonlyPaths = tc.masked, tc.ro
			s, err := Generate(in)
			require.NoError(t, err)
			assert.Equal(t, tc.wantMasked, s.Linux.MaskedPaths)
			assert.Equal(t, tc.wantRO, s.Linux.ReadonlyPaths)
		})
	}
	assert.Equal(t, []string{"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
		"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
		"/sys/devices/virtual/powercap"}, DefaultMaskedPaths)
	assert.Equal(t, []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}, DefaultReadonlyPaths)
}

// allowed reports whether the profile allows name unconditionally (no args).
func allowed(p *specs.LinuxSeccomp, name string) bool {
	for _, r := range p.Syscalls {
		if r.Action == specs.ActAllow && len(r.Args) == 0 && slices.Contains(r.Names, name) {
			return true
		}
	}
	return false
}

func TestDefaultSeccomp(t *testing.T) {
	in := baseInput(t)
	in.Linux.Security.Seccomp = SecurityProfile{Type: ProfileRuntimeDefault}
	s, err := Generate(in)
	require.NoError(t, err)
	p := s.Linux.Seccomp
	require.NotNil(t, p)
	assert.Equal(t, specs.ActErrno, p.DefaultAction)
	require.NotNil(t, p.DefaultErrnoRet)
	assert.Equal(t, uint(1), *p.DefaultErrnoRet)
	for _, sc := range []string{"read", "write", "execve", "futex", "chroot"} {
		assert.True(t, allowed(p, sc), sc)
	}
	for _, sc := range []string{"mount", "umount2", "unshare", "setns", "ptrace", "reboot", "bpf", "kexec_load", "init_module", "open_by_handle_at", "clone3", "clone", "keyctl", "add_key"} {
		assert.False(t, allowed(p, sc), sc)
	}
	// clone is allowed only without namespace flags; clone3 gets ENOSYS.
	var cloneRule, clone3Rule *specs.LinuxSyscall
	for i, r := range p.Syscalls {
		switch {
		case slices.Equal(r.Names, []string{"clone"}):
			cloneRule = &p.Syscalls[i]
		case slices.Equal(r.Names, []string{"clone3"}):
			clone3Rule = &p.Syscalls[i]
		}
	}
	require.NotNil(t, cloneRule)
	assert.Equal(t, specs.OpMaskedEqual, cloneRule.Args[0].Op)
	assert.Equal(t, uint64(nsCloneFlags), cloneRule.Args[0].Value)
	require.NotNil(t, clone3Rule)
	assert.Equal(t, specs.ActErrno, clone3Rule.Action)
	assert.Equal(t, uint(38), *clone3Rule.ErrnoRet)

	t.Run("CAP_SYS_ADMIN opens mount and clone", func(t *testing.T) {
		in := baseInput(t)
		in.Linux.Security.Seccomp = SecurityProfile{Type: ProfileRuntimeDefault}
		in.Linux.Security.Capabilities.Add = []string{"SYS_ADMIN", "SYS_PTRACE"}
		s, err := Generate(in)
		require.NoError(t, err)
		for _, sc := range []string{"mount", "clone", "clone3", "unshare", "ptrace"} {
			assert.True(t, allowed(s.Linux.Seccomp, sc), sc)
		}
	})
	t.Run("dropping SYS_CHROOT removes chroot", func(t *testing.T) {
		in := baseInput(t)
		in.Linux.Security.Seccomp = SecurityProfile{Type: ProfileRuntimeDefault}
		in.Linux.Security.Capabilities.Drop = []string{"SYS_CHROOT"}
		s, err := Generate(in)
		require.NoError(t, err)
		assert.False(t, allowed(s.Linux.Seccomp, "chroot"))
	})
	t.Run("arches", func(t *testing.T) {
		assert.Equal(t, []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32}, defaultSeccomp("amd64", nil).Architectures)
		assert.Equal(t, []specs.Arch{specs.ArchAARCH64, specs.ArchARM}, defaultSeccomp("arm64", nil).Architectures)
		assert.True(t, allowed(defaultSeccomp("amd64", nil), "arch_prctl"))
		assert.False(t, allowed(defaultSeccomp("arm64", nil), "arch_prctl"))
		assert.True(t, allowed(defaultSeccomp("arm64", nil), "set_tls"))
	})
	t.Run("unconfined", func(t *testing.T) {
		in := baseInput(t)
		s, err := Generate(in)
		require.NoError(t, err)
		assert.Nil(t, s.Linux.Seccomp)
	})
}

func TestLocalhostSeccomp(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.json")
	writeFile(t, good, `{"defaultAction":"SCMP_ACT_LOG","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"}]}`)
	bad := filepath.Join(dir, "bad.json")
	writeFile(t, bad, `{"defaultAction":`)
	noDefault := filepath.Join(dir, "nodefault.json")
	writeFile(t, noDefault, `{"syscalls":[]}`)
	huge := filepath.Join(dir, "huge.json")
	writeFile(t, huge, `{"defaultAction":"SCMP_ACT_LOG","x":"`+strings.Repeat("a", maxSeccompProfileSize)+`"}`)
	for _, tc := range []struct {
		desc, path, wantErr string
	}{
		{desc: "valid", path: good},
		{desc: "invalid json", path: bad, wantErr: "parse seccomp profile"},
		{desc: "no default action", path: noDefault, wantErr: "defaultAction"},
		{desc: "too large", path: huge, wantErr: "larger than"},
		{desc: "missing", path: filepath.Join(dir, "nope.json"), wantErr: "not found"},
		{desc: "relative", path: "good.json", wantErr: "absolute"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			in := baseInput(t)
			in.Linux.Security.Seccomp = SecurityProfile{Type: ProfileLocalhost, LocalhostRef: tc.path}
			s, err := Generate(in)
			if tc.wantErr != "" {
				requireInvalid(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, specs.LinuxSeccompAction("SCMP_ACT_LOG"), s.Linux.Seccomp.DefaultAction)
			assert.Equal(t, []string{"read"}, s.Linux.Seccomp.Syscalls[0].Names)
		})
	}
}

func TestAppArmor(t *testing.T) {
	for _, tc := range []struct {
		desc    string
		p       SecurityProfile
		host    Host
		want    string
		wantErr func(error) bool
	}{
		{desc: "disabled, unconfined", p: SecurityProfile{Type: ProfileUnconfined}},
		{desc: "disabled, runtime default ignored", p: SecurityProfile{Type: ProfileRuntimeDefault}},
		{desc: "disabled, localhost unconfined", p: SecurityProfile{Type: ProfileLocalhost, LocalhostRef: "unconfined"}},
		{desc: "disabled, named profile refused", p: SecurityProfile{Type: ProfileLocalhost, LocalhostRef: "my-prof"}, wantErr: errdefs.IsInvalidArgument},
		{desc: "enabled, named profile", p: SecurityProfile{Type: ProfileLocalhost, LocalhostRef: "my-prof"}, host: Host{AppArmorEnabled: true}, want: "my-prof"},
		{desc: "enabled, runtime default", p: SecurityProfile{Type: ProfileRuntimeDefault}, host: Host{AppArmorEnabled: true, AppArmorDefaultProfile: "crid-default"}, want: "crid-default"},
		{desc: "enabled, runtime default not configured", p: SecurityProfile{Type: ProfileRuntimeDefault}, host: Host{AppArmorEnabled: true}, wantErr: errdefs.IsNotImplemented},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			in := baseInput(t)
			in.Linux.Security.Apparmor = tc.p
			in.Linux.Security.SelinuxOptions = &SELinuxOptions{Type: "spc_t"} // ignored: no SELinux here
			in.Host.AppArmorEnabled, in.Host.AppArmorDefaultProfile = tc.host.AppArmorEnabled, tc.host.AppArmorDefaultProfile
			s, err := Generate(in)
			if tc.wantErr != nil {
				require.Error(t, err)
				assert.True(t, tc.wantErr(err), err.Error())
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, s.Process.ApparmorProfile)
			assert.Empty(t, s.Process.SelinuxLabel)
		})
	}
}

func TestNoImageVolumes(t *testing.T) {
	in := baseInput(t)
	in.Image.Volumes = map[string]struct{}{"/var/lib/data": {}, "/etc": {}}
	s, err := Generate(in)
	require.NoError(t, err)
	assert.Nil(t, mountByDest(s, "/var/lib/data"))
	assert.Nil(t, mountByDest(s, "/etc"))
}
