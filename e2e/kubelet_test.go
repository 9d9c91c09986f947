//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crid-dev/crid/internal/mount"
)

// A real kubelet (issue 6, part 3): kubelet in standalone mode (no API
// server) runs a static pod through crid, and tears it down when its
// manifest goes.

// kubeletVersion is the release hack/build-kubelet.sh builds and caches.
const kubeletVersion = "v1.37.2"

// Host paths kubelet uses whatever its flags say: the directory of its
// legacy symlinks to the containers' logs, and the device plugins' socket
// directory (pluginapi.DevicePluginPath). The test removes what kubelet
// leaves there.
const (
	kubeletContainerLogsDir = "/var/log/containers"
	kubeletDevicePluginsDir = "/var/lib/kubelet/device-plugins"
)

// kubeletSysctls are the kernel settings kubelet's container manager
// (cm.setupKernelTunables) writes when they differ and
// protectKernelDefaults is false, with the values it wants. The test shows
// kubelet those values through bind mounts in kubelet's own mount namespace,
// so that the machine's settings (kernel.panic_on_oops, …) stay as they are.
var kubeletSysctls = []struct{ path, value string }{
	{"vm/overcommit_memory", "1"},
	{"vm/panic_on_oom", "0"},
	{"kernel/panic", "10"},
	{"kernel/panic_on_oops", "1"},
	{"kernel/keys/root_maxkeys", "1000000"},
	{"kernel/keys/root_maxbytes", "25000000"},
}

// kubeletBinary builds kubelet with hack/build-kubelet.sh, or finds it in
// the script's cache, and returns its path.
func kubeletBinary(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	start := time.Now()
	cmd := exec.CommandContext(ctx, "bash", "../hack/build-kubelet.sh", kubeletVersion)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "hack/build-kubelet.sh:\n%s", stderr.String())
	bin := strings.TrimSpace(stdout.String())
	t.Logf("kubelet %s: %s (%s)", kubeletVersion, bin, time.Since(start).Round(time.Second))
	return bin
}

// kubeletNode is one standalone kubelet on crid and everything it was given:
// directories, ports and the bridge that holds its node IP.
type kubeletNode struct {
	name      string // --hostname-override
	dir       string // config, manifests, pod logs, kubelet's log: kept when the test fails
	root      string // --root-dir
	manifests string // staticPodPath
	podLogs   string // podLogsDir
	logFile   string // proc's
	bridge    string // holds the node IP
	nodeIP    string
	port      int // kubelet's API: on loopback, or on nodeIP with an API server
	healthz   int
	// kubeconfig is the API server's kubeconfig, "" for standalone mode.
	kubeconfig string

	proc *clusterProc
}

// freeLoopbackPort is a TCP port on 127.0.0.1 that nothing listens on now.
func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startKubelet starts kubelet against e's crid with its cgroups under
// e.cgParent, and stops it, with everything it left, when the test ends.
// With a kubeconfig it registers with that API server as a node, and
// serves its API on the node IP, where the API server reaches it;
// kubeconfig "" is standalone mode.
func startKubelet(t *testing.T, e *rtEnv, bin, kubeconfig string) *kubeletNode {
	t.Helper()
	id := randomHex(t, 3)
	var octet int
	_, err := fmt.Sscanf(randomHex(t, 1), "%x", &octet)
	require.NoError(t, err)
	dir, err := os.MkdirTemp("", "crid-e2e-kubelet-")
	require.NoError(t, err)
	root, err := os.MkdirTemp("", "crid-e2e-kubelet-root-")
	require.NoError(t, err)
	k := &kubeletNode{
		name:      "crid-e2e-" + id,
		dir:       dir,
		root:      root,
		manifests: filepath.Join(dir, "manifests"),
		podLogs:   filepath.Join(dir, "pods"),
		logFile:   filepath.Join(dir, "kubelet.log"),
		bridge:    "crid-kl" + id,
		// 10.216.0.0/16 is this test's: the pod networks use 10.213.
		nodeIP:  fmt.Sprintf("10.216.%d.1", octet),
		port:    freeLoopbackPort(t),
		healthz: freeLoopbackPort(t),

		kubeconfig: kubeconfig,
	}
	for _, d := range []string{k.manifests, k.podLogs, filepath.Join(dir, "sysctl")} {
		require.NoError(t, os.MkdirAll(d, 0o755))
	}
	// The host directories kubelet may create, parents last, that are not
	// there yet: cleanup removes them.
	var created []string
	for _, d := range []string{kubeletContainerLogsDir, kubeletDevicePluginsDir, filepath.Dir(kubeletDevicePluginsDir)} {
		if _, err := os.Lstat(d); os.IsNotExist(err) {
			created = append(created, d)
		}
	}
	// Registered first so that it runs after kubelet has stopped.
	t.Cleanup(func() { k.cleanup(t, created) })

	// kubelet rejects a loopback node IP; a bridge of its own holds one.
	runIP(t, "link", "add", k.bridge, "type", "bridge")
	runIP(t, "addr", "add", k.nodeIP+"/32", "dev", k.bridge)
	runIP(t, "link", "set", k.bridge, "up")

	// cgroupRoot must exist in every hierarchy before kubelet starts.
	mnts, err := cgroupMounts()
	require.NoError(t, err)
	for _, m := range mnts {
		require.NoError(t, os.MkdirAll(filepath.Join(m, e.cgParent), 0o755))
	}

	// The root dir is a shared mount, so that what kubelet mounts below it
	// (volumes) in its own mount namespace is seen by crid in this one.
	require.NoError(t, unix.Mount(k.root, k.root, "", unix.MS_BIND, ""))
	require.NoError(t, unix.Mount("", k.root, "", unix.MS_SHARED, ""))

	config := filepath.Join(dir, "kubelet.yaml")
	require.NoError(t, os.WriteFile(config, []byte(k.config(e)), 0o644))
	script := k.wrapper(t)
	args := []string{"--mount", "--propagation", "unchanged", "--", "sh", "-ec", script, "kubelet-wrapper", bin,
		"--config=" + config,
		"--root-dir=" + k.root,
		"--cert-dir=" + filepath.Join(k.root, "pki"),
		"--hostname-override=" + k.name,
		"--node-ip=" + k.nodeIP,
		"--v=2",
	}
	if kubeconfig != "" {
		args = append(args, "--kubeconfig="+kubeconfig)
	}
	// unshare execs sh, which execs kubelet: Pdeathsig stays armed.
	k.proc = startClusterProc(t, k.dir, "kubelet", "unshare", args...)
	k.logFile = k.proc.logFile
	k.waitHealthy(t, 2*time.Minute)
	return k
}

// config is kubelet's KubeletConfiguration: every port on loopback (the
// API's on the node IP when an API server must reach it), settings this
// cgroup v1 machine needs, and no eviction or image GC that the test
// machine's disk could trigger.
func (k *kubeletNode) config(e *rtEnv) string {
	address := "127.0.0.1"
	if k.kubeconfig != "" {
		address = k.nodeIP
	}
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
staticPodPath: %q
fileCheckFrequency: 1s
syncFrequency: 5s
containerRuntimeEndpoint: %q
address: %s
port: %d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %d
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
cgroupDriver: cgroupfs
cgroupRoot: %q
cgroupsPerQOS: true
enforceNodeAllocatable: []
failCgroupV1: false
failSwapOn: false
makeIPTablesUtilChains: false
podLogsDir: %q
resolvConf: /etc/resolv.conf
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {}
featureGates:
  VolumeBindMountOptions: true
`, k.manifests, "unix://"+e.d.sock, address, k.port, k.healthz, e.cgParent, k.podLogs)
}

// wrapper is the shell script unshare runs in kubelet's new mount
// namespace: it covers kubeletSysctls with files holding the values kubelet
// wants, then execs kubelet ("$@").
func (k *kubeletNode) wrapper(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("mount --make-rprivate /proc\n")
	for _, s := range kubeletSysctls {
		f := filepath.Join(k.dir, "sysctl", strings.ReplaceAll(s.path, "/", "."))
		require.NoError(t, os.WriteFile(f, []byte(s.value+"\n"), 0o644))
		fmt.Fprintf(&b, "mount --bind %q /proc/sys/%s\n", f, s.path)
	}
	b.WriteString("exec \"$@\"\n")
	return b.String()
}

func runIP(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	require.NoError(t, err, "ip %s: %s", strings.Join(args, " "), out)
}

// waitHealthy waits until kubelet's healthz answers ok.
func (k *kubeletNode) waitHealthy(t *testing.T, d time.Duration) {
	t.Helper()
	url := fmt.Sprintf("http://127.0.0.1:%d/healthz", k.healthz)
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(d)
	var last string
	for {
		if err, ok := k.proc.exited(); ok {
			t.Fatalf("kubelet exited: %v\n%s", err, k.logTail(60))
		}
		resp, err := client.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.TrimSpace(string(body)) == "ok" {
				return
			}
			last = fmt.Sprintf("%s: %s", resp.Status, body)
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("kubelet not healthy after %s: %s\n%s", d, last, k.logTail(60))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// logTail is the last n lines of kubelet's log.
func (k *kubeletNode) logTail(n int) string { return k.proc.logTail(n) }

// stop sends SIGTERM and waits; a kubelet still running after 30 s is
// killed.
func (k *kubeletNode) stop(t *testing.T) {
	if k.proc != nil {
		k.proc.stop(t)
	}
}

// cleanup removes what kubelet and the test left on the host: mounts under
// the root dir (deepest first), the directories, the bridge, kubelet's
// symlinks in /var/log/containers, its device plugin socket, and the host
// directories in created.
func (k *kubeletNode) cleanup(t *testing.T, created []string) {
	mnts := mountsUnder(t, k.root)
	slices.Reverse(mnts) // mountinfo lists a parent before what is mounted below it
	for _, m := range mnts {
		if err := mount.Unmount(m); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	}
	if left := mountsUnder(t, k.root); len(left) > 0 {
		t.Errorf("cleanup: still mounted under %s: %v", k.root, left)
	} else if err := os.RemoveAll(k.root); err != nil {
		t.Errorf("cleanup: %v", err)
	}
	_ = exec.Command("ip", "link", "del", k.bridge).Run()
	ents, _ := os.ReadDir(kubeletContainerLogsDir)
	for _, de := range ents {
		p := filepath.Join(kubeletContainerLogsDir, de.Name())
		if target, err := os.Readlink(p); err == nil && strings.HasPrefix(target, k.podLogs+"/") {
			_ = os.Remove(p)
		}
	}
	_ = os.Remove(filepath.Join(kubeletDevicePluginsDir, "kubelet.sock"))
	for _, d := range created {
		if d == kubeletDevicePluginsDir {
			_ = os.RemoveAll(d) // kubelet's alone: its socket and checkpoint
			continue
		}
		_ = os.Remove(d) // only when empty
	}
	if t.Failed() {
		t.Logf("kubelet dir kept: %s (log: %s)", k.dir, k.logFile)
		return
	}
	os.RemoveAll(k.dir)
}

// podName is the name kubelet gives a static pod: the manifest's name and
// the node's.
func (k *kubeletNode) podName(name string) string { return name + "-" + k.name }

// kubeletSandboxes lists the sandboxes kubelet made for the pod podName.
func kubeletSandboxes(t *testing.T, e *rtEnv, podName string) []*runtime.PodSandbox {
	t.Helper()
	resp, err := e.rt().ListPodSandbox(context.Background(), &runtime.ListPodSandboxRequest{
		Filter: &runtime.PodSandboxFilter{LabelSelector: map[string]string{"io.kubernetes.pod.name": podName}}})
	require.NoError(t, err)
	return resp.GetItems()
}

// kubeletContainers lists the containers kubelet made for the pod podName.
func kubeletContainers(t *testing.T, e *rtEnv, podName string) []*runtime.Container {
	t.Helper()
	resp, err := e.rt().ListContainers(context.Background(), &runtime.ListContainersRequest{
		Filter: &runtime.ContainerFilter{LabelSelector: map[string]string{"io.kubernetes.pod.name": podName}}})
	require.NoError(t, err)
	return resp.GetContainers()
}

// waitFor polls cond every 500 ms until it holds or d has passed; kubelet
// exiting fails the test at once.
func (k *kubeletNode) waitFor(t *testing.T, e *rtEnv, what string, d time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if err, ok := k.proc.exited(); ok {
			t.Fatalf("kubelet exited while waiting for %s (%s): %v\n%s", what, state, err, k.logTail(60))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s (%s)\n%s\ncrid log:\n%s", what, d, state, k.logTail(80), e.d.Logs())
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// cridFailedRequests are the lines of crid's log for RPCs that failed.
func cridFailedRequests(logs string) []string {
	var out []string
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, "request failed") {
			out = append(out, l)
		}
	}
	return out
}

func TestKubeletStandaloneStaticPod(t *testing.T) {
	bin := kubeletBinary(t)
	e := newRuntimeEnv(t)
	k := startKubelet(t, e, bin, "")

	const name = "logger"
	pod := k.podName(name)
	manifest := filepath.Join(k.manifests, name+".yaml")
	// The shell is PID 1: without the trap it would ignore SIGTERM and wait
	// for the grace period's SIGKILL.
	require.NoError(t, os.WriteFile(manifest, []byte(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
  namespace: default
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: logger
    image: %s
    imagePullPolicy: Always
    command: ["sh", "-c", "trap 'exit 0' TERM; i=0; while true; do echo crid-kubelet-line $i; i=$((i+1)); sleep 1; done"]
`, name, e.image)), 0o644))

	// kubelet pulls the image, runs the sandbox and starts the container.
	var ctrID, podID string
	k.waitFor(t, e, "static pod's container running", 3*time.Minute, func() (bool, string) {
		for _, c := range kubeletContainers(t, e, pod) {
			if c.GetMetadata().GetName() == "logger" && c.GetState() == runtime.ContainerState_CONTAINER_RUNNING {
				ctrID, podID = c.GetId(), c.GetPodSandboxId()
				return true, ""
			}
		}
		return false, fmt.Sprintf("sandboxes %v", kubeletSandboxes(t, e, pod))
	})
	require.Equal(t, runtime.PodSandboxState_SANDBOX_READY, e.podState(t, podID))
	t.Logf("pod %s: sandbox %.12s, container %.12s", pod, podID, ctrID)

	// Its cgroups are under kubelet's cgroup root.
	inspect := e.d.mustCrictl(t, "inspectp", podID)
	require.Contains(t, inspect, e.cgParent+"/kubepods", "sandbox's cgroup parent: %s", inspect)

	// crictl logs shows the lines it writes each second.
	k.waitFor(t, e, "two log lines", 30*time.Second, func() (bool, string) {
		out, err := e.d.crictl("logs", ctrID)
		if err != nil {
			return false, err.Error()
		}
		return strings.Contains(out, "crid-kubelet-line 0\n") && strings.Contains(out, "crid-kubelet-line 1\n"), out
	})

	// crictl exec -s (ExecSync).
	require.Equal(t, "ok", strings.TrimSpace(e.d.mustCrictl(t, "exec", "-s", ctrID, "echo", "ok")))

	// kubelet is still healthy with the pod running (PLEG relists through
	// crid's List/Status RPCs).
	k.waitHealthy(t, 10*time.Second)

	// Removing the manifest tears the pod down: the container stops, the
	// sandbox goes NotReady.
	require.NoError(t, os.Remove(manifest))
	k.waitFor(t, e, "static pod torn down", 2*time.Minute, func() (bool, string) {
		for _, c := range kubeletContainers(t, e, pod) {
			if c.GetState() == runtime.ContainerState_CONTAINER_RUNNING || c.GetState() == runtime.ContainerState_CONTAINER_CREATED {
				return false, fmt.Sprintf("container %.12s %s", c.GetId(), c.GetState())
			}
		}
		for _, s := range kubeletSandboxes(t, e, pod) {
			if s.GetState() == runtime.PodSandboxState_SANDBOX_READY {
				return false, fmt.Sprintf("sandbox %.12s %s", s.GetId(), s.GetState())
			}
		}
		return true, ""
	})

	// kubelet's garbage collector (every minute) then removes the
	// container and the sandbox.
	k.waitFor(t, e, "static pod's container and sandbox removed", 3*time.Minute, func() (bool, string) {
		c, s := kubeletContainers(t, e, pod), kubeletSandboxes(t, e, pod)
		return len(c) == 0 && len(s) == 0, fmt.Sprintf("%d containers, %d sandboxes left", len(c), len(s))
	})

	// Every RPC kubelet made that crid failed is shown; one that crid
	// counts as its own fault (logged at ERROR, not NotFound and the like)
	// fails the test.
	k.stop(t)
	for _, l := range cridFailedRequests(e.d.Logs()) {
		t.Logf("crid: %s", l)
		if strings.Contains(l, "level=ERROR") {
			t.Errorf("crid failed a request of kubelet's: %s", l)
		}
	}
}
