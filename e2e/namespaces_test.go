//go:build e2e

package e2e

import (
	"os"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestPodNamespaces checks from inside containers what a pod shares: UTS
// (hostname), IPC, network and, with PID=POD, processes; that a second
// pod shares none of it; that NODE modes give the host's namespaces; and
// the pod files written from the pod's config.
//
// busybox-static has neither ipcs nor ipcmk (nor readlink), so IPC sharing
// is shown by the namespace link targets (read with `ls -l`), by an
// IPC-namespaced sysctl set on the pod (kernel.shmmax) being what both
// containers read and the other pod not, and by the pod's /dev/shm.
func TestPodNamespaces(t *testing.T) {
	e := newRuntimeEnv(t)

	podA := e.podConfig("pod-a", nsOpts(runtime.NamespaceMode_POD, runtime.NamespaceMode_POD, runtime.NamespaceMode_POD))
	podA.DnsConfig = &runtime.DNSConfig{
		Servers:  []string{"10.96.0.10", "10.96.0.11"},
		Searches: []string{"e2e.svc.cluster.local", "svc.cluster.local"},
		Options:  []string{"ndots:5", "timeout:2"},
	}
	podA.Linux.Sysctls = map[string]string{"kernel.shmmax": "123456789"}
	aID := e.runPod(t, podA)
	a1 := e.run(t, aID, podA, "a1", "sleep", "100001")
	a2 := e.run(t, aID, podA, "a2", "sleep", "100002")

	podB := e.podConfig("pod-b", nil) // PID=CONTAINER, kubelet's default
	bID := e.runPod(t, podB)
	b1 := e.run(t, bID, podB, "b1", "sleep", "100003")
	b2 := e.run(t, bID, podB, "b2", "sleep", "100004")

	t.Run("uts", func(t *testing.T) {
		for _, id := range []string{a1, a2} {
			require.Equal(t, "pod-a\n", e.mustExec(t, id, "hostname"))
			require.Equal(t, "pod-a\n", e.mustExec(t, id, "cat", "/etc/hostname"))
		}
		require.Equal(t, "pod-b\n", e.mustExec(t, b1, "hostname"))
		require.Equal(t, e.nsInside(t, a1, "uts"), e.nsInside(t, a2, "uts"))
		require.NotEqual(t, e.nsInside(t, a1, "uts"), e.nsInside(t, b1, "uts"))
	})

	t.Run("ipc", func(t *testing.T) {
		require.Equal(t, e.nsInside(t, a1, "ipc"), e.nsInside(t, a2, "ipc"))
		require.Equal(t, e.nsInside(t, b1, "ipc"), e.nsInside(t, b2, "ipc"))
		require.NotEqual(t, e.nsInside(t, a1, "ipc"), e.nsInside(t, b1, "ipc"))
		for _, id := range []string{a1, a2} {
			require.Equal(t, "123456789\n", e.mustExec(t, id, "cat", "/proc/sys/kernel/shmmax"),
				"the pod's IPC sysctl is seen by every container of the pod")
		}
		require.NotEqual(t, "123456789\n", e.mustExec(t, b1, "cat", "/proc/sys/kernel/shmmax"))

		e.mustExec(t, a1, "sh", "-c", "echo shared > /dev/shm/from-a1")
		require.Equal(t, "shared\n", e.mustExec(t, a2, "cat", "/dev/shm/from-a1"), "the pod's /dev/shm is shared")
		_, _, code := e.execOut(t, b1, "cat", "/dev/shm/from-a1")
		require.NotZero(t, code, "another pod has its own /dev/shm")
	})

	t.Run("net", func(t *testing.T) {
		require.Equal(t, e.nsInside(t, a1, "net"), e.nsInside(t, a2, "net"))
		require.Equal(t, e.nsInside(t, b1, "net"), e.nsInside(t, b2, "net"))
		require.NotEqual(t, e.nsInside(t, a1, "net"), e.nsInside(t, b1, "net"))
		hostNet, err := os.Readlink("/proc/self/ns/net")
		require.NoError(t, err)
		require.NotEqual(t, hostNet, e.nsInside(t, a1, "net"))
		for _, id := range []string{a1, b1} {
			out := e.mustExec(t, id, "ip", "addr", "show", "lo")
			require.Contains(t, out, ",UP", "loopback is up: %s", out)
			require.Contains(t, out, "inet 127.0.0.1/8", out)
		}
	})

	t.Run("pid pod", func(t *testing.T) {
		require.Equal(t, e.nsInside(t, a1, "pid"), e.nsInside(t, a2, "pid"))
		out := e.mustExec(t, a2, "ps")
		require.Contains(t, out, "sleep 100001", "a2 sees a1's process")
		require.Contains(t, out, "sleep 100002")
		require.NotContains(t, out, "sleep 100003", "a2 does not see another pod's processes")
	})

	t.Run("pid container", func(t *testing.T) {
		require.NotEqual(t, e.nsInside(t, b1, "pid"), e.nsInside(t, b2, "pid"))
		out := e.mustExec(t, b2, "ps")
		require.Contains(t, out, "sleep 100004")
		require.NotContains(t, out, "sleep 100003", "b2 sees only itself")
		require.Equal(t, "sleep\x00100004\x00", e.mustExec(t, b2, "cat", "/proc/1/cmdline"), "b2's init is PID 1")
	})

	t.Run("files", func(t *testing.T) {
		require.Equal(t, "search e2e.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\nnameserver 10.96.0.11\noptions ndots:5 timeout:2\n",
			e.mustExec(t, a1, "cat", "/etc/resolv.conf"))
		hosts := e.mustExec(t, a1, "cat", "/etc/hosts")
		require.Contains(t, hosts, "127.0.0.1\tlocalhost\n")
		require.Contains(t, hosts, "::1\tlocalhost ip6-localhost ip6-loopback\n")
		require.Equal(t, hosts, e.mustExec(t, a2, "cat", "/etc/hosts"))
		// No DNS config: the host's resolv.conf.
		hostResolv, err := os.ReadFile("/etc/resolv.conf")
		require.NoError(t, err)
		require.Equal(t, string(hostResolv), e.mustExec(t, b1, "cat", "/etc/resolv.conf"))
	})

	t.Run("node modes", func(t *testing.T) {
		podN := e.podConfig("pod-node", nsOpts(runtime.NamespaceMode_NODE, runtime.NamespaceMode_NODE, runtime.NamespaceMode_NODE))
		podN.Hostname = ""
		nID := e.runPod(t, podN)
		n1 := e.run(t, nID, podN, "n1", "sleep", "100005")
		for _, kind := range []string{"net", "ipc", "pid", "uts"} {
			host, err := os.Readlink("/proc/self/ns/" + kind)
			require.NoError(t, err)
			require.Equal(t, host, e.nsInside(t, n1, kind), "%s namespace of a NODE pod is the host's", kind)
		}
		hostname, err := os.Hostname()
		require.NoError(t, err)
		require.Equal(t, hostname+"\n", e.mustExec(t, n1, "hostname"))
		hostHosts, err := os.ReadFile("/etc/hosts")
		require.NoError(t, err)
		require.Equal(t, string(hostHosts), e.mustExec(t, n1, "cat", "/etc/hosts"))
		// Host PID: this test process is visible inside.
		cmdline, err := os.ReadFile("/proc/self/cmdline")
		require.NoError(t, err)
		require.Equal(t, string(cmdline), e.mustExec(t, n1, "cat", "/proc/"+strconv.Itoa(os.Getpid())+"/cmdline"))
		// The pod's own containers still differ from it.
		require.NotEqual(t, e.nsInside(t, n1, "net"), e.nsInside(t, a1, "net"))
	})
}
