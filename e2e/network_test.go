//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// podIP returns the primary IP PodSandboxStatus reports.
func (e *rtEnv) podIP(t testing.TB, id string) string {
	t.Helper()
	st, err := e.rt().PodSandboxStatus(context.Background(), &cri.PodSandboxStatusRequest{PodSandboxId: id})
	require.NoError(t, err)
	ip := st.GetStatus().GetNetwork().GetIp()
	require.NotEmpty(t, ip, "pod %s has no IP", id)
	return ip
}

// sleeper runs a pod with one busybox container that sleeps, and returns
// the pod ID, the container ID and the pod's IP.
func (e *rtEnv) sleeper(t testing.TB, name string, mutate func(*cri.PodSandboxConfig)) (string, string, string) {
	t.Helper()
	cfg := e.podConfig(name, nil)
	if mutate != nil {
		mutate(cfg)
	}
	pod := e.runPod(t, cfg)
	ctr := e.run(t, pod, cfg, name, "sleep", "3600")
	return pod, ctr, e.podIP(t, pod)
}

func TestPodNetworkPodsReachEachOther(t *testing.T) {
	e := newRuntimeEnv(t)
	_, a, ipA := e.sleeper(t, "net-a", nil)
	_, b, ipB := e.sleeper(t, "net-b", nil)
	_, subnet, _ := net.ParseCIDR(e.d.net.subnet)
	require.True(t, subnet.Contains(net.ParseIP(ipA)), "pod IP %s outside %s", ipA, e.d.net.subnet)
	require.True(t, subnet.Contains(net.ParseIP(ipB)), "pod IP %s outside %s", ipB, e.d.net.subnet)
	require.NotEqual(t, ipA, ipB)

	// The pod sees its own address on eth0, and its hosts file names it.
	require.Contains(t, e.mustExec(t, a, "ip", "-4", "addr", "show", "eth0"), ipA+"/24")
	require.Contains(t, e.mustExec(t, a, "cat", "/etc/hosts"), ipA+"\tnet-a")

	e.mustExec(t, a, "ping", "-c", "1", "-W", "5", ipB)
	e.mustExec(t, b, "ping", "-c", "1", "-W", "5", ipA)
	// loopback is up (the loopback plugin ran in the pod).
	e.mustExec(t, a, "ping", "-c", "1", "-W", "5", "127.0.0.1")
}

// extNet is a network namespace outside the node, joined to it by a veth:
// host side 172.31.<n>.1/30, outside 172.31.<n>.2/30. Traffic from pods to
// it leaves the node, so it is masqueraded to 172.31.<n>.1.
type extNet struct {
	name, hostIf, hostIP, extIP string
}

func newExtNet(t *testing.T, n int) *extNet {
	x := &extNet{
		name:   fmt.Sprintf("crid-e2e-ext%d", n),
		hostIf: fmt.Sprintf("crid-ext%d", n),
		hostIP: fmt.Sprintf("172.31.%d.1", n),
		extIP:  fmt.Sprintf("172.31.%d.2", n),
	}
	run := func(args ...string) {
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		require.NoError(t, err, "%v: %s", args, out)
	}
	run("ip", "netns", "add", x.name)
	t.Cleanup(func() {
		_ = exec.Command("ip", "link", "del", x.hostIf).Run()
		_ = exec.Command("ip", "netns", "del", x.name).Run()
	})
	run("ip", "link", "add", x.hostIf, "type", "veth", "peer", "name", "ext0", "netns", x.name)
	run("ip", "addr", "add", x.hostIP+"/30", "dev", x.hostIf)
	run("ip", "link", "set", x.hostIf, "up")
	run("ip", "-n", x.name, "addr", "add", x.extIP+"/30", "dev", "ext0")
	run("ip", "-n", x.name, "link", "set", "ext0", "up")
	run("ip", "-n", x.name, "link", "set", "lo", "up")
	return x
}

// listen opens a TCP listener inside the outside namespace.
func (x *extNet) listen(t *testing.T, port int) net.Listener {
	var (
		l   net.Listener
		err error
	)
	done := make(chan struct{})
	stuck := false
	go func() {
		defer func() {
			close(done)
			if stuck {
				select {}
			}
		}()
		// Back to the host's netns before the thread is unlocked. A locked
		// goroutine must not simply end: its thread would exit, and the
		// kernel sends Pdeathsig to every child that thread forked, which
		// may be this test's crid.
		runtime.LockOSThread()
		self, ferr := os.Open("/proc/thread-self/ns/net")
		if ferr != nil {
			err = ferr
			return
		}
		defer self.Close()
		f, ferr := os.Open("/run/netns/" + x.name)
		if ferr != nil {
			err = ferr
			return
		}
		defer f.Close()
		if err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			return
		}
		l, err = net.Listen("tcp", fmt.Sprintf("%s:%d", x.extIP, port))
		if serr := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); serr != nil {
			// Stuck in the other netns: keep the thread locked forever
			// rather than let it exit or serve other goroutines.
			err = errors.Join(err, serr)
			stuck = true
			return
		}
		runtime.UnlockOSThread()
	}()
	<-done
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	return l
}

// httpGetInPod fetches / from host:port with busybox nc inside container
// ctr (the static busybox's wget crashes in glibc's resolver) and returns
// the raw response.
func httpGetInPod(t *testing.T, e *rtEnv, ctr, host string, port int) string {
	t.Helper()
	return e.mustExec(t, ctr, "sh", "-c",
		fmt.Sprintf("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 10 %s %d", host, port))
}

func TestPodNetworkReachesOutsideThroughNAT(t *testing.T) {
	e := newRuntimeEnv(t)
	x := newExtNet(t, e.d.net.n)
	l := x.listen(t, 8080)
	peers := make(chan string, 4)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		peers <- r.RemoteAddr
		io.WriteString(w, "hello from outside\n")
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	_, ctr, podIP := e.sleeper(t, "nat", nil)
	out := httpGetInPod(t, e, ctr, x.extIP, 8080)
	require.Contains(t, out, "hello from outside\n")
	peer := <-peers
	host, _, err := net.SplitHostPort(peer)
	require.NoError(t, err)
	// Masqueraded: the outside sees the node's address, not the pod's.
	require.Equal(t, x.hostIP, host, "pod %s was not masqueraded", podIP)
}

func TestPodNetworkHostPort(t *testing.T) {
	e := newRuntimeEnv(t)
	pod, ctr, podIP := e.sleeper(t, "hostport", func(c *cri.PodSandboxConfig) {
		c.PortMappings = []*cri.PortMapping{{Protocol: cri.Protocol_TCP, ContainerPort: 991, HostPort: 9901}}
	})
	_ = pod
	e.mustExec(t, ctr, "sh", "-c", "mkdir -p /www && echo hostport-ok > /www/index.html && httpd -p 991 -h /www")
	// The listener is in the pod; wait until it answers on the pod's IP.
	var body string
	require.Eventually(t, func() bool {
		resp, err := (&http.Client{Timeout: 2 * time.Second}).Get("http://" + podIP + ":991/")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return resp.StatusCode == 200
	}, 20*time.Second, 100*time.Millisecond)
	require.Equal(t, "hostport-ok\n", body)

	// From the node's loopback (portmap's DNAT for locally originated
	// traffic, with SNAT so that the reply comes back).
	get := func(url string) string {
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(url)
		require.NoError(t, err, "GET %s", url)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return string(b)
	}
	require.Equal(t, "hostport-ok\n", get("http://127.0.0.1:9901/"))

	// From another pod, through the node's address on the bridge.
	_, other, _ := e.sleeper(t, "hostport-client", nil)
	out := httpGetInPod(t, e, other, e.d.net.gateway, 9901)
	require.Contains(t, out, "\r\n\r\nhostport-ok\n")

	// Removing the pod removes its DNAT: nothing answers on 9901 any more.
	_, err := e.rt().StopPodSandbox(context.Background(), &cri.StopPodSandboxRequest{PodSandboxId: pod})
	require.NoError(t, err)
	require.NotContains(t, iptablesSave(t), podIP+":991")
	_, err = (&http.Client{Timeout: 2 * time.Second}).Get("http://127.0.0.1:9901/")
	require.Error(t, err)
}

func TestPodNetworkHostNetworkPod(t *testing.T) {
	e := newRuntimeEnv(t)
	before := e.d.net.allocatedIPs(t)
	cfg := e.podConfig("hostnet", nsOpts(cri.NamespaceMode_NODE, cri.NamespaceMode_CONTAINER, cri.NamespaceMode_POD))
	cfg.Hostname = ""
	pod := e.runPod(t, cfg)
	ctr := e.run(t, pod, cfg, "hostnet", "sleep", "3600")

	hostLinks := linkNames(t, "/sys/class/net")
	inside := strings.Fields(e.mustExec(t, ctr, "ls", "/sys/class/net"))
	require.ElementsMatch(t, hostLinks, inside, "a host-network pod sees the node's interfaces")

	hostname, err := os.Hostname()
	require.NoError(t, err)
	require.Equal(t, hostname, strings.TrimSpace(e.mustExec(t, ctr, "hostname")))
	hostResolv, err := os.ReadFile("/etc/resolv.conf")
	require.NoError(t, err)
	require.Equal(t, string(hostResolv), e.mustExec(t, ctr, "cat", "/etc/resolv.conf"))

	// No CNI: no address allocated, no attachment cached, no IP reported.
	require.Equal(t, before, e.d.net.allocatedIPs(t))
	require.Empty(t, cniCacheEntries(t, e.d.net.cacheDir))
	st, err := e.rt().PodSandboxStatus(context.Background(), &cri.PodSandboxStatusRequest{PodSandboxId: pod})
	require.NoError(t, err)
	require.Empty(t, st.GetStatus().GetNetwork().GetIp())
}

func linkNames(t testing.TB, dir string) []string {
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func cniCacheEntries(t testing.TB, cacheDir string) []string {
	ents, err := os.ReadDir(filepath.Join(cacheDir, "results"))
	if os.IsNotExist(err) {
		return nil
	}
	require.NoError(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// iptablesSave is the node's whole ruleset as iptables-save prints it.
func iptablesSave(t testing.TB) string {
	out, err := exec.Command("iptables-save").CombinedOutput()
	require.NoError(t, err, "%s", out)
	return string(out)
}

// rulesMentioning counts iptables rules (not chains) that mention any of
// the strings.
func rulesMentioning(save string, keys []string) int {
	n := 0
	for _, l := range strings.Split(save, "\n") {
		if !strings.HasPrefix(l, "-A ") {
			continue
		}
		for _, k := range keys {
			if strings.Contains(l, k) {
				n++
				break
			}
		}
	}
	return n
}

// netnsMounts are the nsfs mounts below dir.
func netnsMounts(t testing.TB, dir string) []string {
	var below []string
	for _, m := range mountsUnder(t, dir) {
		if m != dir {
			below = append(below, m)
		}
	}
	return below
}

func TestPodNetworkNoLeaksAfter100Pods(t *testing.T) {
	e := newRuntimeEnv(t)
	ruleKeys := []string{e.d.net.subnet, "10.213." + fmt.Sprint(e.d.net.n) + "."}
	// Warm up once: the first pod creates the bridge and portmap's
	// top-level chains, which stay by design.
	warm := e.runPod(t, e.podConfig("leak-warm", nil))
	e.removePod(t, warm)
	baseSave := iptablesSave(t)
	baseRules := rulesMentioning(baseSave, ruleKeys)
	baseTotal := strings.Count(baseSave, "\n-A ")

	const pods, parallel = 100, 4
	var wg sync.WaitGroup
	errs := make(chan error, pods)
	sem := make(chan struct{}, parallel)
	for i := 0; i < pods; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			cfg := e.podConfig(fmt.Sprintf("leak-%d", i), nil)
			if i%2 == 0 { // half of them publish a port: portmap rules too
				cfg.PortMappings = []*cri.PortMapping{{Protocol: cri.Protocol_TCP, ContainerPort: 80, HostPort: int32(19100 + i)}}
			}
			ctx := context.Background()
			resp, err := e.rt().RunPodSandbox(ctx, &cri.RunPodSandboxRequest{Config: cfg})
			if err != nil {
				errs <- fmt.Errorf("run pod %d: %w", i, err)
				return
			}
			if _, err := e.rt().StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: resp.PodSandboxId}); err != nil {
				errs <- fmt.Errorf("stop pod %d: %w", i, err)
				return
			}
			if _, err := e.rt().RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: resp.PodSandboxId}); err != nil {
				errs <- fmt.Errorf("remove pod %d: %w", i, err)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err, e.d.Logs())
	}

	require.Empty(t, e.d.net.allocatedIPs(t), "leaked IPs in host-local's store")
	require.Empty(t, e.d.net.vethsOnBridge(t), "leaked veths")
	require.Empty(t, netnsMounts(t, filepath.Join(e.d.state, "sandboxes")), "leaked netns/shm mounts")
	require.Empty(t, cniCacheEntries(t, e.d.net.cacheDir), "leaked CNI cache entries")
	save := iptablesSave(t)
	require.Equal(t, baseRules, rulesMentioning(save, ruleKeys), "leaked iptables rules for the pod subnet")
	require.Equal(t, baseTotal, strings.Count(save, "\n-A "), "iptables rule count changed")
	for i := 0; i < pods; i += 2 {
		require.NotContains(t, save, fmt.Sprintf("--dport %d ", 19100+i), "leaked hostPort rule")
	}
}

// removePod stops and removes a pod through the CRI.
func (e *rtEnv) removePod(t testing.TB, id string) {
	t.Helper()
	_, err := e.rt().StopPodSandbox(context.Background(), &cri.StopPodSandboxRequest{PodSandboxId: id})
	require.NoError(t, err, e.d.Logs())
	_, err = e.rt().RemovePodSandbox(context.Background(), &cri.RemovePodSandboxRequest{PodSandboxId: id})
	require.NoError(t, err, e.d.Logs())
}

// flakyPlugin installs, in a bin dir of its own searched before Debian's,
// a plugin "flaky-bridge" that runs the real bridge plugin and then, on
// the first ADD only, fails anyway: the worst case, an address allocated
// and a veth created by a plugin that reports failure.
func flakyPlugin(t *testing.T, binDir, mode string) {
	script := `#!/bin/sh
dir=$(dirname "$0")
in=$(cat)
if [ "$CNI_COMMAND" = ADD ] && [ ! -e "$dir/failed-once" ]; then
	printf '%s' "$in" | /usr/lib/cni/bridge > "$dir/real-add-output" 2>&1
	touch "$dir/failed-once"
	case "` + mode + `" in
	hang) sleep 8 ;;
	esac
	echo '{"cniVersion":"1.0.0","code":999,"msg":"injected failure after a successful bridge ADD"}'
	exit 1
fi
printf '%s' "$in" | exec /usr/lib/cni/bridge
`
	require.NoError(t, os.WriteFile(filepath.Join(binDir, "flaky-bridge"), []byte(script), 0o755))
}

// withFlakyNetwork points the daemon's first CNI bin dir at binDir and
// installs a config whose main plugin is flaky-bridge.
func withFlakyNetwork(binDir string) daemonOption {
	return func(d *daemon, b *strings.Builder) {
		d.noPodNet = true
		d.extraCNIBinDir = binDir
	}
}

func installFlakyConfig(t *testing.T, d *daemon) {
	conf := strings.Replace(d.net.conflist(), `"type": "bridge"`, `"type": "flaky-bridge"`, 1)
	require.NoError(t, os.WriteFile(filepath.Join(d.net.confDir, "10-e2e.conflist"), []byte(conf), 0o644))
}

func TestPodNetworkPluginFailingOnceLeavesNothing(t *testing.T) {
	bin := t.TempDir()
	flakyPlugin(t, bin, "fail")
	e := newRuntimeEnv(t, withFlakyNetwork(bin))
	installFlakyConfig(t, e.d)

	cfg := e.podConfig("flaky", nil)
	_, err := e.rt().RunPodSandbox(context.Background(), &cri.RunPodSandboxRequest{Config: cfg})
	require.Error(t, err)
	require.Contains(t, err.Error(), "injected failure")
	out, rerr := os.ReadFile(filepath.Join(bin, "real-add-output"))
	require.NoError(t, rerr)
	require.Contains(t, string(out), `"address"`, "the real bridge ADD ran and allocated an address: %s", out)

	require.Empty(t, e.d.net.allocatedIPs(t), "the failed ADD's address was released")
	require.Empty(t, e.d.net.vethsOnBridge(t), "the failed ADD's veth was removed")
	require.Empty(t, cniCacheEntries(t, e.d.net.cacheDir))
	require.Empty(t, netnsMounts(t, filepath.Join(e.d.state, "sandboxes")))
	list, err := e.rt().ListPodSandbox(context.Background(), &cri.ListPodSandboxRequest{})
	require.NoError(t, err)
	require.Empty(t, list.GetItems())

	// kubelet's retry, same name: succeeds.
	id := e.runPod(t, cfg)
	require.Len(t, e.d.net.allocatedIPs(t), 1)
	e.removePod(t, id)
	require.Empty(t, e.d.net.allocatedIPs(t))
}

func TestPodNetworkCrashDuringAddLeavesNothing(t *testing.T) {
	bin := t.TempDir()
	flakyPlugin(t, bin, "hang")
	e := newRuntimeEnv(t, withFlakyNetwork(bin))
	installFlakyConfig(t, e.d)

	cfg := e.podConfig("crash-add", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	go e.rt().RunPodSandbox(ctx, &cri.RunPodSandboxRequest{Config: cfg}) //nolint:errcheck // crid is killed under it
	require.Eventually(t, func() bool {
		_, err := os.Stat(filepath.Join(bin, "failed-once"))
		return err == nil
	}, 20*time.Second, 20*time.Millisecond, "the plugin never ran")
	require.Len(t, e.d.net.allocatedIPs(t), 1, "the bridge allocated an address before the crash")

	e.d.kill9(t)
	e.d.start(t)

	require.Empty(t, e.d.net.allocatedIPs(t), "recovery released the address")
	require.Empty(t, e.d.net.vethsOnBridge(t))
	require.Empty(t, netnsMounts(t, filepath.Join(e.d.state, "sandboxes")))
	require.Contains(t, e.d.Logs(), "sandbox creation never finished")
	id := e.runPod(t, cfg)
	e.removePod(t, id)
	require.Empty(t, e.d.net.allocatedIPs(t))
}

func TestPodNetworkReadyFollowsConfig(t *testing.T) {
	e := newRuntimeEnv(t, withoutPodNetwork())
	ready := func() (*cri.RuntimeCondition, bool) {
		st, err := e.rt().Status(context.Background(), &cri.StatusRequest{})
		require.NoError(t, err)
		for _, c := range st.GetStatus().GetConditions() {
			if c.GetType() == cri.NetworkReady {
				return c, c.GetStatus()
			}
		}
		t.Fatal("no NetworkReady condition")
		return nil, false
	}
	c, ok := ready()
	require.False(t, ok)
	require.Equal(t, "NetworkPluginNotReady", c.GetReason())
	require.Contains(t, c.GetMessage(), "no valid CNI network config found in "+e.d.net.confDir)

	_, err := e.rt().RunPodSandbox(context.Background(), &cri.RunPodSandboxRequest{Config: e.podConfig("early", nil)})
	require.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
	// A host-network pod needs no pod network.
	hn := e.runPod(t, e.podConfig("early-hostnet", nsOpts(cri.NamespaceMode_NODE, cri.NamespaceMode_CONTAINER, cri.NamespaceMode_POD)))
	e.removePod(t, hn)

	// The operator installs a config: no restart needed.
	e.d.net.install(t)
	_, ok = ready()
	require.True(t, ok)
	id := e.runPod(t, e.podConfig("late", nil))
	require.NotEmpty(t, e.podIP(t, id))
}
