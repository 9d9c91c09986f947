//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The crictl scenarios of issue 6: what the seed design promises, done the
// way an operator would, with crictl and JSON files.

// crictlPod writes the pod's config and runs it with crictl runp.
func (e *rtEnv) crictlPod(t *testing.T, pod *runtime.PodSandboxConfig) (id, file string) {
	t.Helper()
	file = writeJSON(t, pod.GetMetadata().GetName()+"-pod.json", pod)
	id = strings.TrimSpace(e.d.mustCrictl(t, "runp", file))
	require.Len(t, id, 64)
	return id, file
}

// crictlRun creates and starts a container with crictl.
func (e *rtEnv) crictlRun(t *testing.T, podID, podFile string, ctr *runtime.ContainerConfig) string {
	t.Helper()
	file := writeJSON(t, ctr.GetMetadata().GetName()+"-ctr.json", ctr)
	id := strings.TrimSpace(e.d.mustCrictl(t, "create", podID, file, podFile))
	require.Len(t, id, 64)
	e.d.mustCrictl(t, "start", id)
	return id
}

func writeJSON(t *testing.T, name string, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, b, 0o644))
	return p
}

// crictlExec runs cmd in ctr with crictl exec -s and returns its stdout
// without trailing newlines (crictl adds some of its own).
func (e *rtEnv) crictlExec(t *testing.T, ctr string, cmd ...string) string {
	t.Helper()
	return strings.TrimRight(e.d.mustCrictl(t, append([]string{"exec", "-s", ctr}, cmd...)...), "\n")
}

func (e *rtEnv) crictlPid(t *testing.T, ctr string) int {
	t.Helper()
	var inspect struct {
		Info struct {
			Pid int `json:"pid"`
		} `json:"info"`
	}
	require.NoError(t, json.Unmarshal([]byte(e.d.mustCrictl(t, "inspect", ctr)), &inspect))
	require.Positive(t, inspect.Info.Pid)
	return inspect.Info.Pid
}

func TestScenarioContainersOfAPodShareHostnameIPCAndNetwork(t *testing.T) {
	e := newRuntimeEnv(t)
	pod := e.podConfig("shared", nil)
	podID, podFile := e.crictlPod(t, pod)
	a := e.crictlRun(t, podID, podFile, e.ctrConfig(pod, "a", "sleep", "3600"))
	b := e.crictlRun(t, podID, podFile, e.ctrConfig(pod, "b", "sleep", "3600"))

	// Hostname: the pod's, in both.
	require.Equal(t, "shared", e.crictlExec(t, a, "hostname"))
	require.Equal(t, "shared", e.crictlExec(t, b, "hostname"))

	// IPC: a SysV message queue made in a's IPC namespace (by the host's
	// ipcmk, entered into a: busybox has no ipcmk) is seen from b, and not
	// from the host.
	hostBefore, err := os.ReadFile("/proc/sysvipc/msg")
	require.NoError(t, err)
	out, err := exec.Command("nsenter", fmt.Sprintf("--ipc=/proc/%d/ns/ipc", e.crictlPid(t, a)), "ipcmk", "-Q").CombinedOutput()
	require.NoError(t, err, "%s", out)
	qid := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(out)), "Message queue id:"))
	require.NotEmpty(t, qid, "%s", out)
	msgB := e.crictlExec(t, b, "cat", "/proc/sysvipc/msg")
	require.True(t, hasQueue(msgB, qid), "queue %s not seen in b:\n%s", qid, msgB)
	hostAfter, err := os.ReadFile("/proc/sysvipc/msg")
	require.NoError(t, err)
	require.Equal(t, string(hostBefore), string(hostAfter), "the pod's queue is visible on the host")

	// Network: b reaches a listener of a on the pod's loopback.
	go e.d.crictl("exec", a, "sh", "-c", "echo from-a | nc -l -p 7777") //nolint:errcheck // ends with the container
	require.Eventually(t, func() bool {
		out, err := e.d.crictl("exec", "-s", b, "sh", "-c", "nc 127.0.0.1 7777 </dev/null")
		return err == nil && strings.Contains(out, "from-a")
	}, 20*time.Second, 200*time.Millisecond)
}

// hasQueue reports whether /proc/sysvipc/msg content lists queue msqid.
func hasQueue(procMsg, msqid string) bool {
	for _, l := range strings.Split(procMsg, "\n")[1:] {
		if f := strings.Fields(l); len(f) > 1 && f[1] == msqid {
			return true
		}
	}
	return false
}

func TestScenarioWhiteoutHidesLowerLayerFile(t *testing.T) {
	e := newRuntimeEnv(t)
	image := strings.TrimSuffix(e.image, "busybox:latest") + "layered:latest"
	e.d.mustCrictl(t, "pull", image)
	pod := e.podConfig("whiteout", nil)
	podID, podFile := e.crictlPod(t, pod)
	cfg := e.ctrConfig(pod, "w", "sleep", "3600")
	cfg.Image = &runtime.ImageSpec{Image: image}
	c := e.crictlRun(t, podID, podFile, cfg)

	// Layer 2 wrote data/a, data/b, data/dir/{x,y}; layer 3 deleted data/a
	// (.wh.a) and made data/dir opaque with a new z; layer 4 added data/c.
	require.Equal(t, "b\nc\ndir", e.crictlExec(t, c, "ls", "-1", "/data"))
	require.Equal(t, "z", e.crictlExec(t, c, "ls", "-1", "/data/dir"))
	_, err := e.d.crictl("exec", "-s", c, "cat", "/data/a")
	require.Error(t, err, "a file deleted by an upper layer's whiteout is visible")
	// No whiteout markers leak into the container.
	require.NotContains(t, e.crictlExec(t, c, "ls", "-a", "/data", "/data/dir"), ".wh.")
}

func TestScenarioHostPortWithCrictl(t *testing.T) {
	e := newRuntimeEnv(t)
	pod := e.podConfig("crictl-hostport", nil)
	pod.PortMappings = []*runtime.PortMapping{{Protocol: runtime.Protocol_TCP, ContainerPort: 991, HostPort: 9901}}
	podID, podFile := e.crictlPod(t, pod)
	c := e.crictlRun(t, podID, podFile, e.ctrConfig(pod, "httpd", "sh", "-c",
		"mkdir -p /www && echo crictl-hostport > /www/index.html && exec httpd -f -p 991 -h /www"))
	var body string
	require.Eventually(t, func() bool {
		resp, err := (&http.Client{Timeout: 2 * time.Second}).Get("http://127.0.0.1:9901/")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return resp.StatusCode == http.StatusOK
	}, 20*time.Second, 100*time.Millisecond, "host port 9901 never answered")
	require.Equal(t, "crictl-hostport\n", body)
	e.d.mustCrictl(t, "stop", "--timeout", "1", c)
	e.d.mustCrictl(t, "stopp", podID)
	e.d.mustCrictl(t, "rmp", podID)
	_, err := (&http.Client{Timeout: 2 * time.Second}).Get("http://127.0.0.1:9901/")
	require.Error(t, err, "the host port answers after the pod is gone")
}

func TestScenarioVolumeOutlivesItsContainer(t *testing.T) {
	e := newRuntimeEnv(t)
	vol := t.TempDir()
	pod := e.podConfig("volume", nil)
	podID, podFile := e.crictlPod(t, pod)
	withVolume := func(name string, args ...string) *runtime.ContainerConfig {
		cfg := e.ctrConfig(pod, name, args...)
		cfg.Mounts = []*runtime.Mount{{ContainerPath: "/data", HostPath: vol}}
		return cfg
	}
	writer := e.crictlRun(t, podID, podFile, withVolume("writer", "sh", "-c", "echo kept > /data/note; sync; sleep 3600"))
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(filepath.Join(vol, "note"))
		return err == nil && string(b) == "kept\n"
	}, 20*time.Second, 50*time.Millisecond)
	e.d.mustCrictl(t, "stop", "--timeout", "1", writer)
	e.d.mustCrictl(t, "rm", writer)

	reader := e.crictlRun(t, podID, podFile, withVolume("reader", "sleep", "3600"))
	require.Equal(t, "kept", e.crictlExec(t, reader, "cat", "/data/note"))
}
