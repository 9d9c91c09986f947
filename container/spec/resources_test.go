package spec

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestResources(t *testing.T) {
	in := baseInput(t)
	in.Linux.Resources = &Resources{
		CPUPeriod: 100000, CPUQuota: 50000, CPUShares: 512,
		MemoryLimitInBytes: 1 << 28, MemorySwapLimitInBytes: 1 << 29,
		CpusetCpus: "0-1", CpusetMems: "0", PidsLimit: 100,
	}
	s, err := Generate(in)
	require.NoError(t, err)
	r := s.Linux.Resources
	assert.Equal(t, &specs.LinuxCPU{Shares: ptr[uint64](512), Quota: ptr[int64](50000), Period: ptr[uint64](100000), Cpus: "0-1", Mems: "0"}, r.CPU)
	assert.Equal(t, &specs.LinuxMemory{Limit: ptr[int64](1 << 28), Swap: ptr[int64](1 << 29)}, r.Memory)
	assert.Equal(t, &specs.LinuxPids{Limit: ptr[int64](100)}, r.Pids)
	assert.Equal(t, []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}}, r.Devices)

	t.Run("no resources", func(t *testing.T) {
		s, err := Generate(baseInput(t))
		require.NoError(t, err)
		assert.Nil(t, s.Linux.Resources.CPU)
		assert.Nil(t, s.Linux.Resources.Memory)
		assert.Nil(t, s.Linux.Resources.Pids)
		assert.Equal(t, 0, *s.Process.OOMScoreAdj)
	})
	t.Run("negative shares", func(t *testing.T) {
		in := baseInput(t)
		in.Linux.Resources = &Resources{CPUShares: -1}
		_, err := Generate(in)
		requireInvalid(t, err, "")
	})
}

func TestOOMScoreAdjClamp(t *testing.T) {
	for _, tc := range []struct {
		desc      string
		req       int64
		min, want int
	}{
		{desc: "allowed", req: 500, min: 0, want: 500},
		{desc: "kubelet's -998 clamped to own score", req: -998, min: 0, want: 0},
		{desc: "clamped to negative minimum", req: -998, min: -500, want: -500},
		{desc: "full privilege", req: -998, min: -1000, want: -998},
		{desc: "above kernel max", req: 5000, min: 0, want: 1000},
		{desc: "below kernel min", req: -5000, min: -2000, want: -1000},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			in := baseInput(t)
			in.Linux.Resources = &Resources{OOMScoreAdj: tc.req}
			in.Host.OOMScoreAdjMin = tc.min
			s, err := Generate(in)
			require.NoError(t, err)
			assert.Equal(t, tc.want, *s.Process.OOMScoreAdj)
		})
	}
}

func TestHugepagesAndUnified(t *testing.T) {
	limits := []HugepageLimit{{PageSize: "2MB", Limit: 1 << 21}}
	t.Run("dropped without hugetlb", func(t *testing.T) {
		var buf bytes.Buffer
		in := baseInput(t)
		in.Logger = slog.New(slog.NewTextHandler(&buf, nil))
		in.Linux.Resources = &Resources{HugepageLimits: limits, Unified: map[string]string{"memory.oom.group": "1"}}
		s, err := Generate(in)
		require.NoError(t, err)
		assert.Empty(t, s.Linux.Resources.HugepageLimits)
		assert.Empty(t, s.Linux.Resources.Unified)
		assert.Contains(t, buf.String(), "hugetlb controller is absent")
		assert.Contains(t, buf.String(), "dropping unified")
	})
	t.Run("kept with hugetlb on v2", func(t *testing.T) {
		in := baseInput(t)
		in.Host.HugetlbAvailable, in.Host.CgroupV2 = true, true
		in.Linux.Resources = &Resources{HugepageLimits: limits, Unified: map[string]string{"memory.oom.group": "1"}}
		s, err := Generate(in)
		require.NoError(t, err)
		assert.Equal(t, []specs.LinuxHugepageLimit{{Pagesize: "2MB", Limit: 1 << 21}}, s.Linux.Resources.HugepageLimits)
		assert.Equal(t, map[string]string{"memory.oom.group": "1"}, s.Linux.Resources.Unified)
	})
	t.Run("bad page size", func(t *testing.T) {
		in := baseInput(t)
		in.Host.HugetlbAvailable = true
		in.Linux.Resources = &Resources{HugepageLimits: []HugepageLimit{{PageSize: "2MB/../x"}}}
		_, err := Generate(in)
		requireInvalid(t, err, "hugepage")
	})
}

func TestNamespaces(t *testing.T) {
	type nsMap map[specs.LinuxNamespaceType]string
	for _, tc := range []struct {
		desc         string
		opts         NamespaceOptions
		sb           func(*SandboxPaths)
		cgroupV2     bool
		want         nsMap
		wantHostname string
		wantErr      string
	}{
		{desc: "pod", want: nsMap{"mount": "", "network": "/run/netns/s1", "ipc": "/run/ipcns/s1", "uts": "/run/utsns/s1", "pid": "/proc/42/ns/pid"}},
		{desc: "pod on cgroup v2", cgroupV2: true, want: nsMap{"mount": "", "network": "/run/netns/s1", "ipc": "/run/ipcns/s1", "uts": "/run/utsns/s1", "pid": "/proc/42/ns/pid", "cgroup": ""}},
		{desc: "container pid and ipc", opts: NamespaceOptions{PID: NamespaceContainer, IPC: NamespaceContainer},
			want: nsMap{"mount": "", "network": "/run/netns/s1", "ipc": "", "uts": "/run/utsns/s1", "pid": ""}},
		{desc: "node everything", opts: NamespaceOptions{Network: NamespaceNode, PID: NamespaceNode, IPC: NamespaceNode},
			sb:   func(s *SandboxPaths) { *s = SandboxPaths{HostNetwork: true, HostIPC: true, HostPID: true} },
			want: nsMap{"mount": ""}},
		{desc: "target pid", opts: NamespaceOptions{PID: NamespaceTarget, TargetID: "t1", TargetPIDNSPath: "/proc/77/ns/pid"},
			want: nsMap{"mount": "", "network": "/run/netns/s1", "ipc": "/run/ipcns/s1", "uts": "/run/utsns/s1", "pid": "/proc/77/ns/pid"}},
		{desc: "target without path", opts: NamespaceOptions{PID: NamespaceTarget, TargetID: "t1"}, wantErr: "target"},
		{desc: "sandbox without uts path gets a new uts and the hostname",
			sb:   func(s *SandboxPaths) { s.UTSNS = "" },
			want: nsMap{"mount": "", "network": "/run/netns/s1", "ipc": "/run/ipcns/s1", "uts": "", "pid": "/proc/42/ns/pid"}, wantHostname: "pod-a"},
		{desc: "pod network without a path", sb: func(s *SandboxPaths) { s.NetNS = "" }, wantErr: "network namespace"},
		{desc: "pod pid without a path", sb: func(s *SandboxPaths) { s.PIDNS = "" }, wantErr: "pid namespace"},
		{desc: "host pid sandbox", sb: func(s *SandboxPaths) { s.PIDNS, s.HostPID = "", true },
			want: nsMap{"mount": "", "network": "/run/netns/s1", "ipc": "/run/ipcns/s1", "uts": "/run/utsns/s1"}},
		{desc: "unknown pid mode", opts: NamespaceOptions{PID: 9}, wantErr: "unknown pid"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			in := baseInput(t)
			in.Linux.Security.Namespaces = tc.opts
			in.Host.CgroupV2 = tc.cgroupV2
			if tc.sb != nil {
				tc.sb(&in.Sandbox)
			}
			s, err := Generate(in)
			if tc.wantErr != "" {
				requireInvalid(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			got := nsMap{}
			for _, n := range s.Linux.Namespaces {
				_, dup := got[n.Type]
				assert.False(t, dup, "duplicate namespace %s", n.Type)
				got[n.Type] = n.Path
			}
			assert.Equal(t, tc.want, got)
			assert.Equal(t, tc.wantHostname, s.Hostname)
		})
	}
}

func TestSysctls(t *testing.T) {
	for _, tc := range []struct {
		desc    string
		sysctls map[string]string
		want    map[string]string
		sb      func(*Input)
		wantErr string
	}{
		{desc: "net with pod netns", sysctls: map[string]string{"net.ipv4.ip_unprivileged_port_start": "0", "net.ipv4.ping_group_range": "0 2147483647"}},
		{desc: "slash form is converted like kubelet does", sysctls: map[string]string{"net/ipv4/conf/eth0.100/forwarding": "1"},
			want: map[string]string{"net.ipv4.conf.eth0/100.forwarding": "1"}},
		{desc: "ipc with pod ipc", sysctls: map[string]string{"kernel.shmmax": "1000", "kernel.msgmax": "10", "kernel.sem": "250 32000 32 128", "fs.mqueue.msg_max": "10"}},
		{desc: "net with host network", sysctls: map[string]string{"net.ipv4.ip_forward": "1"},
			sb: func(in *Input) { in.Sandbox.HostNetwork = true }, wantErr: "private network"},
		{desc: "ipc with host ipc", sysctls: map[string]string{"kernel.shmmax": "1"},
			sb: func(in *Input) { in.Sandbox.HostIPC = true }, wantErr: "private ipc"},
		{desc: "not namespaced", sysctls: map[string]string{"kernel.core_pattern": "core"}, wantErr: "not namespaced"},
		{desc: "cr8escape value", sysctls: map[string]string{"kernel.shm_rmid_forced": "1+kernel.core_pattern=|/x"}, wantErr: "invalid value"},
		{desc: "newline value", sysctls: map[string]string{"net.ipv4.ip_forward": "1\n"}, wantErr: "invalid value"},
		{desc: "empty value", sysctls: map[string]string{"net.ipv4.ip_forward": ""}, wantErr: "invalid value"},
		{desc: "bad name", sysctls: map[string]string{"net..x": "1"}, wantErr: "invalid sysctl name"},
		{desc: "dotdot name", sysctls: map[string]string{"net/../kernel/core_pattern": "1"}, wantErr: "invalid sysctl name"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			in := baseInput(t)
			in.Linux.Sysctls = tc.sysctls
			if tc.sb != nil {
				tc.sb(&in)
			}
			s, err := Generate(in)
			if tc.wantErr != "" {
				requireInvalid(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			want := tc.want
			if want == nil {
				want = tc.sysctls
			}
			assert.Equal(t, want, s.Linux.Sysctl)
		})
	}
}

func TestDevices(t *testing.T) {
	in := baseInput(t)
	in.Devices = []Device{{ContainerPath: "/dev/mynull", HostPath: "/dev/null", Permissions: "rw"}, {ContainerPath: "/dev/zero", HostPath: "/dev/zero"}}
	s, err := Generate(in)
	require.NoError(t, err)
	require.Len(t, s.Linux.Devices, 2)
	d := s.Linux.Devices[0]
	assert.Equal(t, "/dev/mynull", d.Path)
	assert.Equal(t, "c", d.Type)
	assert.Equal(t, int64(1), d.Major)
	assert.Equal(t, int64(3), d.Minor)
	assert.Equal(t, []specs.LinuxDeviceCgroup{
		{Allow: false, Access: "rwm"},
		{Allow: true, Type: "c", Major: ptr[int64](1), Minor: ptr[int64](3), Access: "rw"},
		{Allow: true, Type: "c", Major: ptr[int64](1), Minor: ptr[int64](5), Access: "rwm"},
	}, s.Linux.Resources.Devices)

	notDev := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(notDev, nil, 0o644))
	for _, tc := range []struct {
		desc    string
		dev     Device
		wantErr string
	}{
		{desc: "bad permissions", dev: Device{ContainerPath: "/dev/x", HostPath: "/dev/null", Permissions: "rwx"}, wantErr: "permissions"},
		{desc: "not a device", dev: Device{ContainerPath: "/dev/x", HostPath: notDev}, wantErr: "not a device"},
		{desc: "missing", dev: Device{ContainerPath: "/dev/x", HostPath: "/dev/nope-crid"}, wantErr: "stat device"},
		{desc: "relative target", dev: Device{ContainerPath: "dev/x", HostPath: "/dev/null"}, wantErr: "absolute"},
		{desc: "dotdot target", dev: Device{ContainerPath: "/dev/../x", HostPath: "/dev/null"}, wantErr: `".."`},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			in := baseInput(t)
			in.Devices = []Device{tc.dev}
			_, err := Generate(in)
			requireInvalid(t, err, tc.wantErr)
		})
	}
}

func TestProbeHelpers(t *testing.T) {
	assert.False(t, v1HasController([]byte("9:name=systemd:/\n8:pids:/\n4:memory:/x\n0::/\n"), "hugetlb"))
	assert.True(t, v1HasController([]byte("3:hugetlb:/\n0::/\n"), "hugetlb"))
	assert.True(t, v1HasController([]byte("3:cpu,hugetlb:/\n"), "hugetlb"))
	assert.False(t, v1HasController([]byte("0::/hugetlb\n"), "hugetlb"))

	h, err := ProbeHost()
	require.NoError(t, err)
	data, err := os.ReadFile("/proc/self/oom_score_adj")
	require.NoError(t, err)
	assert.NotZero(t, h.LastCap)
	t.Logf("host: %+v (oom_score_adj %s)", h, bytes.TrimSpace(data))
}
