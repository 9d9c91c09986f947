//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// benchPodFiles writes critest-like pod and container configs for crictl.
func benchPodFiles(b *testing.B, dir, image string, n int, cgroupParent string) (pod, ctr string) {
	b.Helper()
	pod = filepath.Join(dir, fmt.Sprintf("pod-%d.json", n))
	ctr = filepath.Join(dir, fmt.Sprintf("ctr-%d.json", n))
	podJSON, _ := json.Marshal(map[string]any{
		"metadata":      map[string]any{"name": fmt.Sprintf("bench-%d", n), "namespace": "bench", "uid": fmt.Sprintf("uid-%d", n)},
		"log_directory": filepath.Join(dir, "logs", strconv.Itoa(n)),
		"linux":         map[string]any{"cgroup_parent": cgroupParent},
	})
	ctrJSON, _ := json.Marshal(map[string]any{
		"metadata": map[string]any{"name": "busybox"},
		"image":    map[string]any{"image": image},
		"command":  []string{"sleep", "3600"},
		"log_path": "busybox/0.log",
	})
	require.NoError(b, os.WriteFile(pod, podJSON, 0o644))
	require.NoError(b, os.WriteFile(ctr, ctrJSON, 0o644))
	return pod, ctr
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func removeCgroupParent(parent string) {
	for _, h := range []string{"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "systemd", "net_cls", "perf_event", "unified"} {
		_ = os.Remove(filepath.Join("/sys/fs/cgroup", h, parent))
	}
}

// BenchmarkPodCycle runs the seven crictl steps of a pod's life (runp,
// create, start, stop, rm, stopp, rmp) for 20 sequential pods and reports
// the median of each step and of the whole cycle, as issue 3 measures
// containerd and CRI-O. It then runs the same seven steps as CRI calls on
// one gRPC connection (grpc-cycle-ms): the runtime's share of the cycle,
// without the ~60 ms each crictl process takes to start on this machine.
//
// With BENCH_CRI_ENDPOINT and BENCH_IMAGE it measures another runtime
// (hack/bench-containerd.sh), for the back-to-back comparison.
func BenchmarkPodCycle(b *testing.B) {
	var crictl func(testing.TB, ...string) string
	var image string
	var rt runtime.RuntimeServiceClient
	if ep := os.Getenv("BENCH_CRI_ENDPOINT"); ep != "" {
		image = os.Getenv("BENCH_IMAGE")
		conn, err := grpc.NewClient(ep, grpc.WithTransportCredentials(insecure.NewCredentials()))
		require.NoError(b, err)
		b.Cleanup(func() { conn.Close() })
		rt = runtime.NewRuntimeServiceClient(conn)
		crictl = func(tb testing.TB, args ...string) string {
			tb.Helper()
			full := append([]string{"--runtime-endpoint", ep, "--image-endpoint", ep, "--timeout", "120s"}, args...)
			cmd := exec.Command(crictlBin, full...)
			cmd.Env = append(os.Environ(), "CRI_CONFIG_FILE=/dev/null")
			out, err := cmd.Output()
			require.NoError(tb, err, "crictl %v", args)
			return string(out)
		}
	} else {
		reg, _ := pushSet(b, []string{"basic"})
		d := startDaemon(b)
		image = reg.Addr() + "/crid-test/busybox:latest"
		crictl = d.mustCrictl
		rt = d.runtime()
	}
	crictl(b, "pull", image)
	parent := fmt.Sprintf("/crid-bench-%d", time.Now().UnixNano())
	b.Cleanup(func() { removeCgroupParent(parent) })
	dir := b.TempDir()
	steps := []string{"runp", "create", "start", "stop", "rm", "stopp", "rmp"}
	times := map[string][]time.Duration{}
	var cycles []time.Duration
	for i := range b.N {
		for n := range 20 {
			pod, ctr := benchPodFiles(b, dir, image, i*20+n, parent)
			cycleStart := time.Now()
			var podID, ctrID string
			for _, step := range steps {
				var args []string
				switch step {
				case "runp":
					args = []string{"runp", pod}
				case "create":
					args = []string{"create", podID, ctr, pod}
				case "start", "stop", "rm":
					args = []string{step, ctrID}
				default:
					args = []string{step, podID}
				}
				start := time.Now()
				out := strings.TrimSpace(crictl(b, args...))
				times[step] = append(times[step], time.Since(start))
				switch step {
				case "runp":
					podID = out
				case "create":
					ctrID = out
				}
			}
			cycles = append(cycles, time.Since(cycleStart))
		}
	}
	var grpcCycles []time.Duration
	ctx := context.Background()
	for i := range b.N {
		for n := range 20 {
			podCfg := &runtime.PodSandboxConfig{
				Metadata:     &runtime.PodSandboxMetadata{Name: fmt.Sprintf("grpc-%d", i*20+n), Namespace: "bench", Uid: fmt.Sprintf("grpc-uid-%d", i*20+n)},
				LogDirectory: filepath.Join(dir, "grpc-logs", strconv.Itoa(i*20+n)),
				Linux:        &runtime.LinuxPodSandboxConfig{CgroupParent: parent},
			}
			ctrCfg := &runtime.ContainerConfig{
				Metadata: &runtime.ContainerMetadata{Name: "busybox"},
				Image:    &runtime.ImageSpec{Image: image},
				Command:  []string{"sleep", "3600"},
				LogPath:  "busybox/0.log",
			}
			start := time.Now()
			pod, err := rt.RunPodSandbox(ctx, &runtime.RunPodSandboxRequest{Config: podCfg})
			require.NoError(b, err)
			c, err := rt.CreateContainer(ctx, &runtime.CreateContainerRequest{PodSandboxId: pod.PodSandboxId, Config: ctrCfg, SandboxConfig: podCfg})
			require.NoError(b, err)
			_, err = rt.StartContainer(ctx, &runtime.StartContainerRequest{ContainerId: c.ContainerId})
			require.NoError(b, err)
			_, err = rt.StopContainer(ctx, &runtime.StopContainerRequest{ContainerId: c.ContainerId})
			require.NoError(b, err)
			_, err = rt.RemoveContainer(ctx, &runtime.RemoveContainerRequest{ContainerId: c.ContainerId})
			require.NoError(b, err)
			_, err = rt.StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{PodSandboxId: pod.PodSandboxId})
			require.NoError(b, err)
			_, err = rt.RemovePodSandbox(ctx, &runtime.RemovePodSandboxRequest{PodSandboxId: pod.PodSandboxId})
			require.NoError(b, err)
			grpcCycles = append(grpcCycles, time.Since(start))
		}
	}
	for _, step := range steps {
		b.ReportMetric(float64(median(times[step]).Microseconds())/1000, step+"-ms")
	}
	b.ReportMetric(float64(median(cycles).Microseconds())/1000, "cycle-ms")
	b.ReportMetric(float64(median(grpcCycles).Microseconds())/1000, "grpc-cycle-ms")
}

// procMem returns a process's RSS and PSS in KiB (smaps_rollup).
func procMem(pid int) (rss, pss int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "Rss:":
			rss = v
		case "Pss:":
			pss = v
		}
	}
	return rss, pss
}

// processesMentioning lists PIDs whose command line contains s.
func processesMentioning(s string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(cmd), s) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// childrenOf lists the PIDs whose parent is ppid.
func childrenOf(ppid int) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		i := strings.LastIndexByte(string(b), ')')
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(ppid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// BenchmarkPodMemory starts 10 one-container pods (CRI's default namespace
// options, so each shares a PID namespace and has a pause process, as
// critest's and crictl's pods do) and reports the memory each running pod
// adds: its conmon and pause processes plus the daemon's own growth, in RSS
// and PSS.
func BenchmarkPodMemory(b *testing.B) {
	reg, _ := pushSet(b, []string{"basic"})
	image := reg.Addr() + "/crid-test/busybox:latest"
	const pods = 10
	for range b.N {
		d := startDaemon(b)
		d.mustCrictl(b, "pull", image)
		parent := fmt.Sprintf("/crid-bench-%d", time.Now().UnixNano())
		ctx := context.Background()
		daemonRSS0, daemonPSS0 := procMem(d.cmd.Process.Pid)
		var ids []string
		for n := range pods {
			resp, err := d.runtime().RunPodSandbox(ctx, &runtime.RunPodSandboxRequest{Config: &runtime.PodSandboxConfig{
				Metadata: &runtime.PodSandboxMetadata{Name: fmt.Sprintf("m%d", n), Namespace: "bench", Uid: fmt.Sprintf("u%d", n)},
				Linux:    &runtime.LinuxPodSandboxConfig{CgroupParent: parent},
			}})
			require.NoError(b, err)
			c, err := d.runtime().CreateContainer(ctx, &runtime.CreateContainerRequest{PodSandboxId: resp.GetPodSandboxId(),
				Config: &runtime.ContainerConfig{Metadata: &runtime.ContainerMetadata{Name: "c"},
					Image: &runtime.ImageSpec{Image: image}, Command: []string{"sleep", "3600"}},
				SandboxConfig: &runtime.PodSandboxConfig{Metadata: &runtime.PodSandboxMetadata{Name: fmt.Sprintf("m%d", n)}}})
			require.NoError(b, err)
			_, err = d.runtime().StartContainer(ctx, &runtime.StartContainerRequest{ContainerId: c.GetContainerId()})
			require.NoError(b, err)
			ids = append(ids, resp.GetPodSandboxId())
		}
		time.Sleep(time.Second) // let monitors settle
		var rss, pss int64
		// conmon names the container's bundle (under the state dir); pause
		// processes are the daemon's own children.
		added := map[int]bool{}
		for _, pid := range processesMentioning(d.state) {
			added[pid] = true
		}
		for _, pid := range childrenOf(d.cmd.Process.Pid) {
			added[pid] = true
		}
		delete(added, d.cmd.Process.Pid)
		for pid := range added {
			r, p := procMem(pid)
			rss, pss = rss+r, pss+p
		}
		daemonRSS1, daemonPSS1 := procMem(d.cmd.Process.Pid)
		rss += max(daemonRSS1-daemonRSS0, 0)
		pss += max(daemonPSS1-daemonPSS0, 0)
		b.ReportMetric(float64(rss)/pods/1024, "RSS-MiB/pod")
		b.ReportMetric(float64(pss)/pods/1024, "PSS-MiB/pod")
		b.ReportMetric(float64(daemonRSS1-daemonRSS0)/pods/1024, "daemon-RSS-MiB/pod")
		for _, id := range ids {
			_, err := d.runtime().StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{PodSandboxId: id})
			require.NoError(b, err)
			_, err = d.runtime().RemovePodSandbox(ctx, &runtime.RemovePodSandboxRequest{PodSandboxId: id})
			require.NoError(b, err)
		}
		removeCgroupParent(parent)
	}
}
