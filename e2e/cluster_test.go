//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// A one-node cluster (issue 6, part 4): etcd, kube-apiserver,
// kube-controller-manager and kube-scheduler on loopback, and a kubelet on
// crid registered as the node; kubectl drives it as a user would.

// etcdVersion is the release hack/build-kube.sh builds with the control
// plane (kubeletVersion).
const etcdVersion = "v3.7.3"

// kubeBinaries builds the control plane and kubectl with
// hack/build-kube.sh, or finds them in its cache, and returns the
// directory of the kube binaries and etcd's.
func kubeBinaries(t *testing.T) (kubeDir, etcdDir string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Minute)
	defer cancel()
	start := time.Now()
	cmd := exec.CommandContext(ctx, "bash", "../hack/build-kube.sh", kubeletVersion, etcdVersion)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "hack/build-kube.sh:\n%s", stderr.String())
	dirs := strings.Fields(stdout.String())
	require.Len(t, dirs, 2, "hack/build-kube.sh printed %q", stdout.String())
	t.Logf("kube %s: %s, etcd %s: %s (%s)", kubeletVersion, dirs[0], etcdVersion, dirs[1], time.Since(start).Round(time.Second))
	return dirs[0], dirs[1]
}

// cluster is the control plane, the node and kubectl's configuration.
type cluster struct {
	e       *rtEnv
	k       *kubeletNode
	dir     string // kubeconfigs, keys, etcd data, logs: kept when the test fails
	kubectl string
	admin   string // admin's kubeconfig
	procs   []*clusterProc
}

// writeKubeconfig writes a kubeconfig for the API server on port with a
// bearer token. The API server's certificate is the self-signed one it
// makes itself; on loopback the clients skip verifying it.
func writeKubeconfig(t *testing.T, path string, port int, token string) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: crid-e2e
  cluster:
    server: https://127.0.0.1:%d
    insecure-skip-tls-verify: true
users:
- name: crid-e2e
  user:
    token: %s
contexts:
- name: crid-e2e
  context:
    cluster: crid-e2e
    user: crid-e2e
    namespace: default
current-context: crid-e2e
`, port, token)), 0o600))
}

// startCluster starts etcd, the API server, the controller manager, the
// scheduler and a kubelet on e's crid, and waits until the node is Ready.
func startCluster(t *testing.T, e *rtEnv) *cluster {
	t.Helper()
	kubeletBin := kubeletBinary(t)
	kubeDir, etcdDir := kubeBinaries(t)
	dir, err := os.MkdirTemp("", "crid-e2e-cluster-")
	require.NoError(t, err)
	c := &cluster{e: e, dir: dir, kubectl: filepath.Join(kubeDir, "kubectl"), admin: filepath.Join(dir, "admin.kubeconfig")}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("cluster dir kept: %s (etcd, kube-apiserver, kube-controller-manager, kube-scheduler logs)", dir)
			return
		}
		os.RemoveAll(dir)
	})

	// etcd, one member, on loopback.
	etcdClient, etcdPeer := freeLoopbackPort(t), freeLoopbackPort(t)
	clientURL := fmt.Sprintf("http://127.0.0.1:%d", etcdClient)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPeer)
	etcd := startClusterProc(t, dir, "etcd", filepath.Join(etcdDir, "etcd"),
		"--name=crid-e2e",
		"--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+clientURL, "--advertise-client-urls="+clientURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=crid-e2e="+peerURL,
		"--unsafe-no-fsync")
	c.procs = append(c.procs, etcd)
	c.waitHTTP(t, etcd, clientURL+"/health", "", 1*time.Minute)

	// Static tokens: the admin (kubectl, controller manager, scheduler) and
	// the node. Authorization is AlwaysAllow: the cluster is on loopback,
	// for this test alone.
	adminToken, nodeToken := randomHex(t, 16), randomHex(t, 16)
	tokens := filepath.Join(dir, "tokens.csv")
	require.NoError(t, os.WriteFile(tokens, []byte(fmt.Sprintf("%s,admin,admin,system:masters\n%s,crid-e2e-kubelet,crid-e2e-kubelet,system:nodes\n",
		adminToken, nodeToken)), 0o600))
	saKey := filepath.Join(dir, "sa.key")
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(saKey, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600))

	apiPort := freeLoopbackPort(t)
	api := startClusterProc(t, dir, "kube-apiserver", filepath.Join(kubeDir, "kube-apiserver"),
		"--etcd-servers="+clientURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", apiPort),
		"--cert-dir="+filepath.Join(dir, "apiserver-certs"),
		"--token-auth-file="+tokens,
		"--authorization-mode=AlwaysAllow",
		// 10.217.0.0/24: no other test's (pods are on 10.213, nodes on 10.216).
		"--service-cluster-ip-range=10.217.0.0/24",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+saKey,
		"--service-account-signing-key-file="+saKey,
		// Pods run without a service account token: no projected token
		// volume, no wait for the default service account.
		"--disable-admission-plugins=ServiceAccount",
		// A loopback address may not be an endpoint of the kubernetes
		// service; no pod here uses it.
		"--endpoint-reconciler-type=none",
		"--kubelet-preferred-address-types=InternalIP",
		"--feature-gates=VolumeBindMountOptions=true",
		"--profiling=false")
	c.procs = append(c.procs, api)
	c.waitHTTP(t, api, fmt.Sprintf("https://127.0.0.1:%d/readyz", apiPort), adminToken, 2*time.Minute)

	writeKubeconfig(t, c.admin, apiPort, adminToken)
	nodeKubeconfig := filepath.Join(dir, "node.kubeconfig")
	writeKubeconfig(t, nodeKubeconfig, apiPort, nodeToken)

	c.procs = append(c.procs, startClusterProc(t, dir, "kube-controller-manager", filepath.Join(kubeDir, "kube-controller-manager"),
		"--kubeconfig="+c.admin,
		"--leader-elect=false",
		"--secure-port=0",
		"--service-account-private-key-file="+saKey,
		"--profiling=false"))
	c.procs = append(c.procs, startClusterProc(t, dir, "kube-scheduler", filepath.Join(kubeDir, "kube-scheduler"),
		"--kubeconfig="+c.admin,
		"--leader-elect=false",
		"--secure-port=0",
		"--profiling=false"))

	c.k = startKubelet(t, e, kubeletBin, nodeKubeconfig)
	nodeName := c.k.name
	c.waitFor(t, "node "+nodeName+" Ready", 3*time.Minute, func() (bool, string) {
		out, _, err := c.run(nil, "get", "node", nodeName, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status} {.status.conditions[?(@.type=="Ready")].message}`)
		if err != nil {
			return false, err.Error()
		}
		return strings.HasPrefix(out, "True"), out
	})
	return c
}

// waitHTTP waits until url answers 200 (with token as bearer when set).
func (c *cluster) waitHTTP(t *testing.T, p *clusterProc, url, token string, d time.Duration) {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} // the API server's self-signed cert, on loopback
	deadline := time.Now().Add(d)
	var last string
	for {
		if err, ok := p.exited(); ok {
			t.Fatalf("%s exited: %v\n%s", p.name, err, p.logTail(60))
		}
		req, err := http.NewRequest(http.MethodGet, url, nil)
		require.NoError(t, err)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = fmt.Sprintf("%s: %s", resp.Status, body)
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after %s: %s\n%s", p.name, d, last, p.logTail(60))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// run runs kubectl with the admin's kubeconfig, stdin from stdin (nil: no
// input). err is an *exec.ExitError for a non-zero exit, with stderr in
// the returned string.
func (c *cluster) run(stdin io.Reader, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.kubectl, append([]string{"--kubeconfig=" + c.admin}, args...)...)
	var o, e bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// must runs kubectl and fails the test unless it exits 0.
func (c *cluster) must(t *testing.T, stdin io.Reader, args ...string) string {
	t.Helper()
	out, stderr, err := c.run(stdin, args...)
	require.NoError(t, err, "kubectl %s: %s%s", strings.Join(args, " "), stderr, out)
	return out
}

// waitFor polls cond every second until it holds or d has passed; a
// control-plane process or kubelet exiting fails the test at once, and a
// timeout shows the pods and the logs.
func (c *cluster) waitFor(t *testing.T, what string, d time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, state := cond()
		if ok {
			return
		}
		for _, p := range c.procs {
			if err, ok := p.exited(); ok {
				t.Fatalf("%s exited while waiting for %s (%s): %v\n%s", p.name, what, state, err, p.logTail(60))
			}
		}
		if c.k != nil {
			if err, ok := c.k.proc.exited(); ok {
				t.Fatalf("kubelet exited while waiting for %s (%s): %v\n%s", what, state, err, c.k.logTail(60))
			}
		}
		if time.Now().After(deadline) {
			pods, _, _ := c.run(nil, "get", "pods", "-o", "wide")
			events, _, _ := c.run(nil, "get", "events", "--sort-by=.lastTimestamp")
			var kl string
			if c.k != nil {
				kl = c.k.logTail(60)
			}
			t.Fatalf("%s: not after %s (%s)\npods:\n%s\nevents:\n%s\n%s\ncrid failed requests:\n%s",
				what, d, state, pods, events, kl, strings.Join(cridFailedRequests(c.e.d.Logs()), "\n"))
		}
		time.Sleep(time.Second)
	}
}

// podField is kubectl get pod name -o jsonpath=path.
func (c *cluster) podField(name, path string) (string, error) {
	out, stderr, err := c.run(nil, "get", "pod", name, "-o", "jsonpath="+path)
	if err != nil {
		return "", fmt.Errorf("%w: %s", err, stderr)
	}
	return out, nil
}

func (c *cluster) waitRunning(t *testing.T, name string) {
	t.Helper()
	c.waitFor(t, "pod "+name+" Running", 3*time.Minute, func() (bool, string) {
		phase, err := c.podField(name, "{.status.phase} {.status.containerStatuses[*].state}")
		if err != nil {
			return false, err.Error()
		}
		return strings.HasPrefix(phase, "Running"), phase
	})
}

// clusterPods are the pods the test applies, besides the one kubectl run
// makes. The shells trap SIGTERM: as PID 1 they would ignore it and wait
// for the grace period's SIGKILL.
const clusterPods = `apiVersion: v1
kind: ConfigMap
metadata:
  name: crid-cfg
data:
  greeting: crid-configmap-value
---
apiVersion: v1
kind: Pod
metadata:
  name: features
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: main
    image: IMAGE
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 5; touch /tmp/ready; while true; do sleep 1; done"]
    env:
    - name: CRID_POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    readinessProbe:
      exec:
        command: ["cat", "/tmp/ready"]
      periodSeconds: 1
    resources:
      limits:
        memory: 64Mi
    volumeMounts:
    - name: scratch
      mountPath: /scratch
      bindMountOptions: ["noexec"]
    - name: cfg
      mountPath: /cfg
  volumes:
  - name: scratch
    emptyDir: {}
  - name: cfg
    configMap:
      name: crid-cfg
---
apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: httpd
    image: IMAGE
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "mkdir -p /www && echo crid-port-forward-page > /www/index.html && exec httpd -f -p 8080 -h /www"]
---
apiVersion: v1
kind: Pod
metadata:
  name: echoer
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: echoer
    image: IMAGE
    imagePullPolicy: IfNotPresent
    stdin: true
    command: ["sh", "-c", "trap 'exit 0' TERM; while read l; do echo got-$l; done; sleep 100000"]
---
apiVersion: v1
kind: Pod
metadata:
  name: crasher
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: crasher
    image: IMAGE
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "n=$(cat /state/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /state/n; echo crash-run-$n; sleep 5; exit 1"]
    volumeMounts:
    - name: state
      mountPath: /state
  volumes:
  - name: state
    emptyDir: {}
---
apiVersion: v1
kind: Pod
metadata:
  name: hog
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 5
  containers:
  - name: hog
    image: IMAGE
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a)"]
    resources:
      limits:
        memory: 32Mi
`

func TestOneNodeCluster(t *testing.T) {
	e := newRuntimeEnv(t)
	c := startCluster(t, e)

	c.must(t, strings.NewReader(strings.ReplaceAll(clusterPods, "IMAGE", e.image)), "apply", "-f", "-")

	t.Run("run", func(t *testing.T) {
		c.must(t, nil, "run", "hello", "--image="+e.image, "--image-pull-policy=IfNotPresent", "--restart=Never",
			"--overrides", `{"spec":{"terminationGracePeriodSeconds":5}}`,
			"--command", "--", "sh", "-c", "trap 'exit 0' TERM; echo crid-hello-from-kubectl-run; while true; do sleep 1; done")
		c.waitRunning(t, "hello")
	})

	t.Run("logs", func(t *testing.T) {
		c.waitFor(t, "kubectl logs hello", 30*time.Second, func() (bool, string) {
			out, stderr, err := c.run(nil, "logs", "hello")
			return err == nil && strings.Contains(out, "crid-hello-from-kubectl-run\n"), out + stderr
		})
	})

	t.Run("exec-stdin-exit-code", func(t *testing.T) {
		out, stderr, err := c.run(strings.NewReader("crid-stdin-line\n"), "exec", "-i", "hello", "--", "sh", "-c", "cat; exit 3")
		var ee *exec.ExitError
		require.True(t, errors.As(err, &ee), "kubectl exec: want exit 3, got %v: %s", err, stderr)
		require.Equal(t, 3, ee.ExitCode(), "kubectl exec exit code; stderr: %s", stderr)
		require.Equal(t, "crid-stdin-line\n", out, "stderr: %s", stderr)
	})

	t.Run("port-forward", func(t *testing.T) {
		c.waitRunning(t, "web")
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		cmd := exec.CommandContext(ctx, c.kubectl, "--kubeconfig="+c.admin, "port-forward", "--address=127.0.0.1", "pod/web", ":8080")
		stdout, err := cmd.StdoutPipe()
		require.NoError(t, err)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		require.NoError(t, cmd.Start())
		defer func() { cancel(); _ = cmd.Wait() }()
		port := make(chan int, 1)
		go func() {
			re := regexp.MustCompile(`Forwarding from 127\.0\.0\.1:(\d+) -> 8080`)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				if m := re.FindStringSubmatch(sc.Text()); m != nil {
					p, _ := strconv.Atoi(m[1])
					port <- p
				}
			}
		}()
		var p int
		select {
		case p = <-port:
		case <-time.After(30 * time.Second):
			t.Fatalf("kubectl port-forward did not report its port: %s", stderr.String())
		}
		resp, err := (&http.Client{Timeout: 20 * time.Second}).Get(fmt.Sprintf("http://127.0.0.1:%d/index.html", p))
		require.NoError(t, err, "GET through kubectl port-forward; kubectl: %s", stderr.String())
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
		require.Equal(t, "crid-port-forward-page\n", string(body))
	})

	t.Run("attach", func(t *testing.T) {
		c.waitRunning(t, "echoer")
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, c.kubectl, "--kubeconfig="+c.admin, "attach", "-i", "echoer", "-c", "echoer")
		stdin, err := cmd.StdinPipe()
		require.NoError(t, err)
		stdout, err := cmd.StdoutPipe()
		require.NoError(t, err)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		require.NoError(t, cmd.Start())
		defer func() { cancel(); _ = cmd.Wait() }()
		got := make(chan string, 1)
		go func() {
			var seen strings.Builder
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				seen.WriteString(sc.Text() + "\n")
				if sc.Text() == "got-crid-attach" {
					break
				}
			}
			got <- seen.String()
		}()
		// kubectl attach may connect after the first write; write until
		// the answer comes.
		deadline := time.After(45 * time.Second)
		tick := time.NewTicker(2 * time.Second)
		defer tick.Stop()
		_, _ = io.WriteString(stdin, "crid-attach\n")
		for {
			select {
			case out := <-got:
				require.Contains(t, out, "got-crid-attach\n", "kubectl attach stderr: %s", stderr.String())
				return
			case <-tick.C:
				_, _ = io.WriteString(stdin, "crid-attach\n")
			case <-deadline:
				t.Fatalf("kubectl attach: no echo of stdin after 45s; stderr: %s", stderr.String())
			}
		}
	})

	t.Run("readiness-probe", func(t *testing.T) {
		c.waitFor(t, "pod features Ready", 2*time.Minute, func() (bool, string) {
			out, err := c.podField("features", `{.status.conditions[?(@.type=="Ready")].status}`)
			if err != nil {
				return false, err.Error()
			}
			return out == "True", out
		})
		// The probe reads the file the container makes after 5 s: it failed
		// before (an Unhealthy event), so the pod became Ready through it,
		// not at start.
		out := c.must(t, nil, "get", "events", "--field-selector", "involvedObject.name=features", "-o", "jsonpath={.items[*].reason}")
		require.Contains(t, strings.Fields(out), "Unhealthy", "events of pod features: %s", out)
	})

	inPod := func(t *testing.T, pod string, cmd ...string) string {
		t.Helper()
		return c.must(t, nil, append([]string{"exec", pod, "--"}, cmd...)...)
	}

	t.Run("downward-api-env", func(t *testing.T) {
		c.waitRunning(t, "features")
		require.Equal(t, "features\n", inPod(t, "features", "sh", "-c", "echo $CRID_POD_NAME"))
	})

	t.Run("emptydir-volume", func(t *testing.T) {
		c.waitRunning(t, "features")
		require.Equal(t, "crid-scratch\n", inPod(t, "features", "sh", "-c", "echo crid-scratch > /scratch/f && cat /scratch/f"))
		require.Contains(t, inPod(t, "features", "cat", "/proc/mounts"), " /scratch ")
	})

	t.Run("bind-mount-options", func(t *testing.T) {
		// bindMountOptions (alpha, gate on in this cluster) reach crid
		// as CRI mount_options only because crid advertises them.
		c.waitRunning(t, "features")
		mounts := inPod(t, "features", "cat", "/proc/mounts")
		flags := func(dst string) []string {
			for _, line := range strings.Split(mounts, "\n") {
				if f := strings.Fields(line); len(f) > 3 && f[1] == dst {
					return strings.Split(f[3], ",")
				}
			}
			t.Fatalf("%s not mounted:\n%s", dst, mounts)
			return nil
		}
		require.Contains(t, flags("/scratch"), "noexec")
		require.NotContains(t, flags("/cfg"), "noexec", "a volume without bindMountOptions")
	})

	t.Run("configmap-volume", func(t *testing.T) {
		c.waitRunning(t, "features")
		require.Equal(t, "crid-configmap-value", inPod(t, "features", "cat", "/cfg/greeting"))
	})

	t.Run("memory-limit", func(t *testing.T) {
		c.waitRunning(t, "features")
		require.Equal(t, strconv.Itoa(64<<20)+"\n", inPod(t, "features", "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"))
	})

	t.Run("restart-logs-previous", func(t *testing.T) {
		// Run n of the container prints crash-run-n (its count is in an
		// emptyDir). While run R+1 is up, restartCount is R and
		// --previous shows run R: the state is read again after the logs
		// so that a crash in between is not taken for a mismatch.
		run := regexp.MustCompile(`^crash-run-(\d+)\n$`)
		c.waitFor(t, "pod crasher restarted, logs --previous of the run before", 3*time.Minute, func() (bool, string) {
			const state = "{.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].state.running.startedAt}"
			before, err := c.podField("crasher", state)
			if err != nil {
				return false, err.Error()
			}
			f := strings.Fields(before)
			if len(f) != 2 || f[0] == "0" {
				return false, "restartCount, running since: " + before
			}
			prev, stderr, err := c.run(nil, "logs", "--previous", "crasher")
			if err != nil {
				return false, "kubectl logs --previous: " + stderr
			}
			cur, stderr, err := c.run(nil, "logs", "crasher")
			if err != nil {
				return false, "kubectl logs: " + stderr
			}
			if after, _ := c.podField("crasher", state); after != before {
				return false, "restarted while reading the logs"
			}
			p, q := run.FindStringSubmatch(prev), run.FindStringSubmatch(cur)
			if p == nil || q == nil {
				return false, fmt.Sprintf("previous %q, current %q", prev, cur)
			}
			r, _ := strconv.Atoi(f[0])
			if p[1] != strconv.Itoa(r) || q[1] != strconv.Itoa(r+1) {
				t.Errorf("restartCount %d: previous %q, current %q; want runs %d and %d", r, prev, cur, r, r+1)
			}
			t.Logf("restartCount %d: previous %q, current %q", r, prev, cur)
			return true, ""
		})
	})

	t.Run("oom-killed", func(t *testing.T) {
		// What kubectl shows for a container over its memory limit comes
		// from crid's ContainerStatus reason.
		const f = "{.status.phase} {.status.containerStatuses[0].state.terminated.exitCode} {.status.containerStatuses[0].state.terminated.reason}"
		c.waitFor(t, "pod hog OOM-killed", 3*time.Minute, func() (bool, string) {
			out, err := c.podField("hog", f)
			if err != nil {
				return false, err.Error()
			}
			return out == "Failed 137 OOMKilled", out
		})
	})

	t.Run("delete-cleans-node", func(t *testing.T) {
		c.must(t, nil, "delete", "pods", "--all", "--wait=true", "--timeout=2m")
		c.must(t, nil, "delete", "configmap", "crid-cfg")
		// kubelet stops the pods at once; its garbage collector (every
		// minute) then removes their containers and sandboxes.
		c.waitFor(t, "no sandbox or container left in crid", 3*time.Minute, func() (bool, string) {
			pods, err := e.rt().ListPodSandbox(context.Background(), &runtime.ListPodSandboxRequest{})
			if err != nil {
				return false, err.Error()
			}
			ctrs, err := e.rt().ListContainers(context.Background(), &runtime.ListContainersRequest{})
			if err != nil {
				return false, err.Error()
			}
			return len(pods.GetItems()) == 0 && len(ctrs.GetContainers()) == 0,
				fmt.Sprintf("%d sandboxes, %d containers", len(pods.GetItems()), len(ctrs.GetContainers()))
		})
		require.Empty(t, strings.TrimSpace(e.d.mustCrictl(t, "pods", "-q")))
		require.Empty(t, strings.TrimSpace(e.d.mustCrictl(t, "ps", "-a", "-q")))
	})

	// Every RPC kubelet made that crid failed is shown; one that crid counts
	// as its own fault (logged at ERROR, not NotFound and the like) fails
	// this step.
	t.Run("crid-no-error-for-kubelet", func(t *testing.T) {
		c.k.stop(t)
		for _, l := range cridFailedRequests(e.d.Logs()) {
			t.Logf("crid: %s", l)
			if strings.Contains(l, "level=ERROR") {
				t.Errorf("crid failed a request of kubelet's: %s", l)
			}
		}
	})
}
