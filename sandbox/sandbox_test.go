package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestLifecycle(t *testing.T) {
	m, stateDir := newManager(t)
	ctx := context.Background()
	cfg := podConfig("web")
	sb := run(t, m, cfg)

	require.Len(t, sb.ID, 64)
	require.Equal(t, StateReady, sb.State)
	dir := filepath.Join(stateDir, sb.ID)
	require.Equal(t, filepath.Join(dir, "netns"), sb.NetNSPath)
	require.Equal(t, filepath.Join(dir, "shm"), sb.ShmPath)

	// Lookup by full ID, by prefix, by List.
	got, err := m.Get(sb.ID[:5])
	require.NoError(t, err)
	require.Equal(t, sb, got)
	require.Len(t, m.List(Filter{Labels: map[string]string{"app": "web"}}), 1)
	require.Empty(t, m.List(Filter{Labels: map[string]string{"app": "other"}}))
	require.Len(t, m.List(Filter{State: StateReady, ID: sb.ID[:3]}), 1)

	// Namespaces are the pod's own.
	for _, ns := range []struct{ kind, path string }{
		{"net", sb.NetNSPath}, {"ipc", sb.IPCNSPath}, {"uts", sb.UTSNSPath}, {"pid", sb.PIDNSPath},
	} {
		require.NotEqual(t, inode(t, "/proc/self/ns/"+ns.kind), inode(t, ns.path), ns.kind)
		if ns.kind != "pid" {
			require.True(t, isPinned(ns.path), ns.kind)
		}
	}
	// Hostname, seen inside the UTS namespace.
	require.NoError(t, inNamespace(t, sb.UTSNSPath, unix.CLONE_NEWUTS, func() error {
		var u unix.Utsname
		if err := unix.Uname(&u); err != nil {
			return err
		}
		if h := unix.ByteSliceToString(u.Nodename[:]); h != "host-web" {
			return fmt.Errorf("hostname in pod is %q", h)
		}
		return nil
	}))
	// Loopback is up in the netns.
	require.NoError(t, inNamespace(t, sb.NetNSPath, unix.CLONE_NEWNET, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if lo.Attrs().Flags&net.FlagUp == 0 {
			return errors.New("lo is down")
		}
		return nil
	}))

	// Files.
	require.Equal(t, "host-web\n", readFile(t, sb.HostnamePath))
	hosts := readFile(t, sb.HostsPath)
	require.Contains(t, hosts, "127.0.0.1\tlocalhost\n")
	require.Contains(t, hosts, "::1\tlocalhost ip6-localhost ip6-loopback\n")
	require.Equal(t, "search default.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n",
		readFile(t, sb.ResolvConfPath))

	// shm: a 64 MiB tmpfs, nosuid,nodev,noexec.
	var st unix.Statfs_t
	require.NoError(t, unix.Statfs(sb.ShmPath, &st))
	require.EqualValues(t, unix.TMPFS_MAGIC, st.Type)
	require.EqualValues(t, 64<<20, st.Blocks*uint64(st.Bsize))
	require.NotZero(t, st.Flags&unix.ST_NOSUID)
	require.NotZero(t, st.Flags&unix.ST_NODEV)
	require.NotZero(t, st.Flags&unix.ST_NOEXEC)
	fi, err := os.Stat(sb.ShmPath)
	require.NoError(t, err)
	require.Equal(t, os.ModeDir|os.ModeSticky|0o777, fi.Mode())

	// Pause process: PID 1 of its namespace.
	require.NotZero(t, sb.PausePID)
	require.True(t, pauseAlive(sb.PausePID, sb.PauseStartTime))
	status := readFile(t, fmt.Sprintf("/proc/%d/status", sb.PausePID))
	require.Regexp(t, `(?m)^NSpid:\s+\d+\s+1$`, status)

	// A container may be created while Ready.
	called := false
	require.NoError(t, m.WithReady(ctx, sb.ID, func(_ context.Context, s *Sandbox) error {
		called = true
		require.Equal(t, sb.ID, s.ID)
		return nil
	}))
	require.True(t, called)

	// Stop.
	require.NoError(t, m.Stop(ctx, sb.ID))
	stopped, err := m.Get(sb.ID)
	require.NoError(t, err)
	require.Equal(t, StateNotReady, stopped.State)
	_, err = os.Stat(fmt.Sprintf("/proc/%d", sb.PausePID))
	require.ErrorIs(t, err, os.ErrNotExist, "pause process killed and reaped")
	for _, p := range []string{sb.NetNSPath, sb.IPCNSPath, sb.UTSNSPath} {
		require.NoFileExists(t, p)
	}
	require.Empty(t, mountsUnder(t, stateDir))
	err = m.WithReady(ctx, sb.ID, func(context.Context, *Sandbox) error { return nil })
	require.ErrorIs(t, err, ErrSandboxNotReady)
	require.True(t, errdefs.IsFailedPrecondition(err))
	require.NoError(t, m.Stop(ctx, sb.ID), "stop is idempotent")

	// The name is held by a NotReady sandbox: Run is refused with the holder.
	_, err = m.Run(ctx, cfg)
	var re *ReservedError
	require.ErrorAs(t, err, &re)
	require.Equal(t, sb.ID, re.ID)
	require.True(t, errdefs.IsFailedPrecondition(err))
	require.True(t, errdefs.IsConflict(err))

	// Remove.
	require.NoError(t, m.Remove(ctx, sb.ID))
	require.NoDirExists(t, dir)
	entries, err := os.ReadDir(stateDir)
	require.NoError(t, err)
	require.Empty(t, entries)
	_, err = m.Get(sb.ID)
	require.ErrorIs(t, err, errdefs.ErrNotFound)
	require.ErrorIs(t, m.Remove(ctx, sb.ID), errdefs.ErrNotFound)
	require.ErrorIs(t, m.Stop(ctx, sb.ID), errdefs.ErrNotFound)

	// The name is free again.
	sb2 := run(t, m, cfg)
	require.NotEqual(t, sb.ID, sb2.ID)
}

func TestRemoveWithoutStop(t *testing.T) {
	m, stateDir := newManager(t)
	sb := run(t, m, podConfig("direct"))
	require.NoError(t, m.Remove(context.Background(), sb.ID))
	require.Empty(t, mountsUnder(t, stateDir))
	_, err := os.Stat(fmt.Sprintf("/proc/%d", sb.PausePID))
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestNodeNamespaces(t *testing.T) {
	m, stateDir := newManager(t)
	cfg := podConfig("hostnet")
	cfg.Hostname = ""
	cfg.DNS = DNSConfig{}
	cfg.Namespaces = NamespaceOptions{Network: NamespaceNode, IPC: NamespaceNode, PID: NamespaceNode}
	sb := run(t, m, cfg)

	require.Empty(t, sb.NetNSPath)
	require.Empty(t, sb.IPCNSPath)
	require.Empty(t, sb.UTSNSPath)
	require.Empty(t, sb.PIDNSPath)
	require.Zero(t, sb.PausePID)
	require.Equal(t, "/dev/shm", sb.ShmPath)
	host, err := os.Hostname()
	require.NoError(t, err)
	require.Equal(t, host, sb.Hostname)
	require.Equal(t, readFile(t, "/etc/hosts"), readFile(t, sb.HostsPath))
	require.Equal(t, readFile(t, "/etc/resolv.conf"), readFile(t, sb.ResolvConfPath))
	require.Empty(t, mountsUnder(t, stateDir), "nothing to mount for a host pod")

	// Pod network but host IPC and container PID: netns and utsns only.
	cfg = podConfig("mixed")
	cfg.Hostname = ""
	cfg.Namespaces = NamespaceOptions{IPC: NamespaceNode, PID: NamespaceContainer}
	sb = run(t, m, cfg)
	require.NotEmpty(t, sb.NetNSPath)
	require.NotEmpty(t, sb.UTSNSPath)
	require.Empty(t, sb.IPCNSPath)
	require.Zero(t, sb.PausePID)
	require.Equal(t, "mixed", sb.Hostname, "the pod name is the default hostname")
	require.Len(t, mountsUnder(t, stateDir), 2)
}

func TestPodHostnameTruncated(t *testing.T) {
	cfg := podConfig(strings.Repeat("a", 62) + "-b")
	cfg.Hostname = ""
	h, err := cfg.podHostname(os.Hostname)
	require.NoError(t, err)
	require.Equal(t, strings.Repeat("a", 62), h)
}

func TestInvalidConfig(t *testing.T) {
	m, stateDir := newManager(t)
	for _, tc := range []struct {
		desc string
		mut  func(*Config)
	}{
		{desc: "no name", mut: func(c *Config) { c.Metadata.Name = "" }},
		{desc: "underscore in name", mut: func(c *Config) { c.Metadata.Name = "a_b" }},
		{desc: "bad network mode", mut: func(c *Config) { c.Namespaces.Network = NamespaceContainer }},
		{desc: "bad pid mode", mut: func(c *Config) { c.Namespaces.PID = "HOST" }},
		{desc: "hostname with newline", mut: func(c *Config) { c.Hostname = "a\n1.2.3.4 evil" }},
		{desc: "dns server not an IP", mut: func(c *Config) { c.DNS.Servers = []string{"8.8.8.8\nnameserver 1.1.1.1"} }},
		{desc: "search with control char", mut: func(c *Config) { c.DNS.Searches = []string{"a\x00b"} }},
		{desc: "option with space", mut: func(c *Config) { c.DNS.Options = []string{"ndots:5 rotate"} }},
		{desc: "host sysctl", mut: func(c *Config) { c.Sysctls = map[string]string{"kernel.core_pattern": "|/evil"} }},
		{desc: "net sysctl with host network", mut: func(c *Config) {
			c.Namespaces.Network = NamespaceNode
			c.Sysctls = map[string]string{"net.ipv4.ip_forward": "1"}
		}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			cfg := podConfig("bad")
			tc.mut(&cfg)
			_, err := m.Run(context.Background(), cfg)
			require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
			entries, err := os.ReadDir(stateDir)
			require.NoError(t, err)
			require.Empty(t, entries, "nothing created")
		})
	}
}

func TestSysctlValidation(t *testing.T) {
	pod := NamespaceOptions{}
	hostNet := NamespaceOptions{Network: NamespaceNode}
	hostIPC := NamespaceOptions{IPC: NamespaceNode}
	for _, tc := range []struct {
		desc, name, value string
		ns                NamespaceOptions
		ok                bool
		path              string
	}{
		{desc: "net with pod netns", name: "net.ipv4.ip_unprivileged_port_start", value: "80", ns: pod, ok: true, path: "net/ipv4/ip_unprivileged_port_start"},
		{desc: "net slash form keeps dots", name: "net/ipv4/conf/eth0.100/forwarding", value: "1", ns: pod, ok: true, path: "net/ipv4/conf/eth0.100/forwarding"},
		{desc: "net range value", name: "net.ipv4.ip_local_port_range", value: "1024 65000", ns: pod, ok: true},
		{desc: "net with host netns", name: "net.ipv4.ip_forward", value: "1", ns: hostNet},
		{desc: "shm", name: "kernel.shmmax", value: "1000000", ns: pod, ok: true},
		{desc: "shm_rmid_forced", name: "kernel.shm_rmid_forced", value: "1", ns: pod, ok: true},
		{desc: "msg", name: "kernel.msgmax", value: "8192", ns: pod, ok: true},
		{desc: "sem", name: "kernel.sem", value: "250 32000 32 128", ns: pod, ok: true},
		{desc: "mqueue", name: "fs.mqueue.msg_max", value: "10", ns: pod, ok: true},
		{desc: "slash ipc", name: "kernel/shmmni", value: "4096", ns: pod, ok: true},
		{desc: "shm with host ipc", name: "kernel.shmmax", value: "1", ns: hostIPC},
		{desc: "mqueue with host ipc", name: "fs.mqueue.msg_max", value: "10", ns: hostIPC},
		{desc: "core_pattern", name: "kernel.core_pattern", value: "core", ns: pod},
		{desc: "semx is not sem", name: "kernel.semx", value: "1", ns: pod},
		{desc: "hostname is not ours", name: "kernel.hostname", value: "x", ns: pod},
		{desc: "vm", name: "vm.overcommit_memory", value: "1", ns: pod},
		{desc: "fs not mqueue", name: "fs.file-max", value: "1", ns: pod},
		{desc: "cr8escape value", name: "kernel.shm_rmid_forced", value: "1+kernel.core_pattern=|/evil", ns: pod},
		{desc: "newline in value", name: "net.ipv4.ip_forward", value: "1\n", ns: pod},
		{desc: "equals in value", name: "net.ipv4.ip_forward", value: "1=2", ns: pod},
		{desc: "empty value", name: "net.ipv4.ip_forward", value: "", ns: pod},
		{desc: "dotdot", name: "net/../kernel/core_pattern", value: "x", ns: pod},
		{desc: "empty component", name: "net..ipv4", value: "1", ns: pod},
		{desc: "leading slash", name: "/net/ipv4/ip_forward", value: "1", ns: pod},
		{desc: "star", name: "net.ipv4.*", value: "1", ns: pod},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			s, err := validateSysctl(tc.name, tc.value, tc.ns)
			if !tc.ok {
				require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
				return
			}
			require.NoError(t, err)
			if tc.path != "" {
				require.Equal(t, tc.path, s.path)
			}
		})
	}
}

func TestSysctlApplied(t *testing.T) {
	m, _ := newManager(t)
	read := func(p string) string {
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		return strings.TrimSpace(string(b))
	}
	hostPort := read("/proc/sys/net/ipv4/ip_unprivileged_port_start")
	hostShmmni := read("/proc/sys/kernel/shmmni")
	cfg := podConfig("sysctl")
	cfg.Sysctls = map[string]string{
		"net.ipv4.ip_unprivileged_port_start": "81",
		"kernel/shmmni":                       "1234",
	}
	sb := run(t, m, cfg)

	var inPod string
	require.NoError(t, inNamespace(t, sb.NetNSPath, unix.CLONE_NEWNET, func() error {
		b, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start")
		inPod = strings.TrimSpace(string(b))
		return err
	}))
	require.Equal(t, "81", inPod)
	require.NoError(t, inNamespace(t, sb.IPCNSPath, unix.CLONE_NEWIPC, func() error {
		b, err := os.ReadFile("/proc/sys/kernel/shmmni")
		inPod = strings.TrimSpace(string(b))
		return err
	}))
	require.Equal(t, "1234", inPod)
	require.Equal(t, hostPort, read("/proc/sys/net/ipv4/ip_unprivileged_port_start"), "host untouched")
	require.Equal(t, hostShmmni, read("/proc/sys/kernel/shmmni"), "host untouched")
}

// TestSysctlUnknownRollsBack: a well-formed sysctl the kernel does not have
// fails Run after the namespaces exist; everything is rolled back.
func TestSysctlUnknownRollsBack(t *testing.T) {
	m, stateDir := newManager(t)
	cfg := podConfig("unknown")
	cfg.Sysctls = map[string]string{"net.ipv4.no_such_sysctl": "1"}
	_, err := m.Run(context.Background(), cfg)
	require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
	require.Empty(t, mountsUnder(t, stateDir))
	entries, err := os.ReadDir(stateDir)
	require.NoError(t, err)
	require.Empty(t, entries)
	require.Empty(t, m.List(Filter{}))
	// The name was released: a good config takes it.
	cfg.Sysctls = nil
	run(t, m, cfg)
}

func TestPauseFailureRollsBack(t *testing.T) {
	m, stateDir := newManager(t)
	m.pause = []string{filepath.Join(t.TempDir(), "no-such-pause")}
	_, err := m.Run(context.Background(), podConfig("nopause"))
	require.Error(t, err)
	require.Empty(t, mountsUnder(t, stateDir))
	entries, err := os.ReadDir(stateDir)
	require.NoError(t, err)
	require.Empty(t, entries)
	m.mu.RLock()
	assert.Empty(t, m.names, "name released")
	m.mu.RUnlock()
}

func TestDNSFromHost(t *testing.T) {
	m, _ := newManager(t)
	cfg := podConfig("hostdns")
	cfg.DNS = DNSConfig{}
	sb := run(t, m, cfg)
	require.Equal(t, readFile(t, "/etc/resolv.conf"), readFile(t, sb.ResolvConfPath))
}

func TestUpdate(t *testing.T) {
	m, stateDir := newManager(t)
	sb := run(t, m, podConfig("ip"))
	hostsInode := inode(t, sb.HostsPath)
	require.NoError(t, m.Update(sb.ID, func(s *Sandbox) error {
		s.IP = "10.1.2.3"
		s.AdditionalIPs = []string{"fd00::3"}
		s.Config.Extra = map[string]string{"cni": "result"}
		s.State = StateNotReady // ignored
		return nil
	}))
	got, err := m.Get(sb.ID)
	require.NoError(t, err)
	require.Equal(t, "10.1.2.3", got.IP)
	require.Equal(t, []string{"fd00::3"}, got.AdditionalIPs)
	require.Equal(t, "result", got.Config.Extra["cni"])
	require.Equal(t, StateReady, got.State)
	require.Contains(t, readFile(t, sb.HostsPath), "10.1.2.3\thost-ip\n")
	require.Equal(t, hostsInode, inode(t, sb.HostsPath), "rewritten in place: bind mounts see it")

	boom := errors.New("boom")
	require.ErrorIs(t, m.Update(sb.ID, func(s *Sandbox) error { s.IP = "1.1.1.1"; return boom }), boom)

	m2, err := New(context.Background(), Options{StateDir: stateDir})
	require.NoError(t, err)
	got, err = m2.Get(sb.ID)
	require.NoError(t, err)
	require.Equal(t, "10.1.2.3", got.IP, "persisted")
	require.ErrorIs(t, m.Update("ffff", func(*Sandbox) error { return nil }), errdefs.ErrNotFound)
}

func TestGetPrefix(t *testing.T) {
	m, _ := newManager(t)
	ids := map[byte]string{}
	var shared byte
	// 17 IDs: two share their first hex digit (pigeonhole).
	for i := 0; shared == 0; i++ {
		cfg := podConfig(fmt.Sprintf("p%d", i))
		cfg.Namespaces = NamespaceOptions{Network: NamespaceNode, IPC: NamespaceNode, PID: NamespaceNode}
		sb := run(t, m, cfg)
		if _, ok := ids[sb.ID[0]]; ok {
			shared = sb.ID[0]
		}
		ids[sb.ID[0]] = sb.ID
	}
	_, err := m.Get(string(shared))
	require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
	_, err = m.Get("")
	require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
	_, err = m.Get("g")
	require.ErrorIs(t, err, errdefs.ErrNotFound)
	got, err := m.Get(ids[shared])
	require.NoError(t, err)
	require.Equal(t, ids[shared], got.ID)
}
