//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// BenchmarkPodNetwork measures what issue 4 compares with containerd, each
// through the CRI on a pod network (bridge + host-local + portmap, with
// ipMasq, and loopback):
//
//   - runp-ms, stopp-ms: medians of RunPodSandbox and StopPodSandbox over
//     20 sequential pods (critest's benchmark measures the same calls);
//   - 10pods-ms: wall time from starting 10 pods at once (RunPodSandbox
//     each) until all are ready;
//   - 10pods-ctr-ms: the same with a container in each pod (RunPodSandbox,
//     CreateContainer, StartContainer) until all are running, and the CPU
//     time that took: the machine's (jiffies from /proc/stat, so run it on
//     an idle machine), the runtime's own, and its children's (the CNI
//     plugins, and for crid runc start/delete too).
//
// With BENCH_CRI_ENDPOINT (and BENCH_IMAGE, BENCH_RUNTIME_PID) it measures
// another runtime instead, set up with the same network by
// hack/bench-containerd.sh, for a back-to-back comparison.
func BenchmarkPodNetwork(b *testing.B) {
	ctx := context.Background()
	var (
		rt    runtime.RuntimeServiceClient
		image string
		pid   int
	)
	if ep := os.Getenv("BENCH_CRI_ENDPOINT"); ep != "" {
		conn, err := grpc.NewClient(ep, grpc.WithTransportCredentials(insecure.NewCredentials()))
		require.NoError(b, err)
		b.Cleanup(func() { conn.Close() })
		rt, image = runtime.NewRuntimeServiceClient(conn), os.Getenv("BENCH_IMAGE")
		pid, err = strconv.Atoi(os.Getenv("BENCH_RUNTIME_PID"))
		require.NoError(b, err, "BENCH_RUNTIME_PID")
		_, err = runtime.NewImageServiceClient(conn).PullImage(ctx, &runtime.PullImageRequest{Image: &runtime.ImageSpec{Image: image}})
		require.NoError(b, err)
	} else {
		reg, _ := pushSet(b, []string{"basic"})
		d := startDaemon(b)
		image = reg.Addr() + "/crid-test/busybox:latest"
		d.mustCrictl(b, "pull", image)
		rt, pid = d.runtime(), d.cmd.Process.Pid
	}
	parent := fmt.Sprintf("/crid-bench-%d", time.Now().UnixNano())
	b.Cleanup(func() { removeCgroupParent(parent) })
	podCfg := func(name string) *runtime.PodSandboxConfig {
		return &runtime.PodSandboxConfig{
			Metadata:     &runtime.PodSandboxMetadata{Name: name, Namespace: "bench", Uid: "uid-" + name},
			Hostname:     name,
			LogDirectory: b.TempDir(),
			Linux:        &runtime.LinuxPodSandboxConfig{CgroupParent: parent},
		}
	}
	var runs, stops, waves, sandboxWaves []time.Duration
	// CPU time of a wave: the whole machine's, crid's own, and that of the
	// processes the runtime waited for: the CNI plugins and what they run,
	// and for crid also `runc start` and `runc delete` (containerd's shims
	// run those).
	var waveCPU, runtimeCPU, childCPU []time.Duration
	for i := range b.N {
		for n := range 20 {
			cfg := podCfg(fmt.Sprintf("seq-%d-%d", i, n))
			t0 := time.Now()
			resp, err := rt.RunPodSandbox(ctx, &runtime.RunPodSandboxRequest{Config: cfg})
			require.NoError(b, err)
			runs = append(runs, time.Since(t0))
			t0 = time.Now()
			_, err = rt.StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{PodSandboxId: resp.PodSandboxId})
			require.NoError(b, err)
			stops = append(stops, time.Since(t0))
			_, err = rt.RemovePodSandbox(ctx, &runtime.RemovePodSandboxRequest{PodSandboxId: resp.PodSandboxId})
			require.NoError(b, err)
		}

		// Pods alone first (what "10 pods started at once" counts), then
		// pods each with a running container.
		sandboxWaves = append(sandboxWaves, podWave(b, rt, i, "sb", podCfg, "", nil).wall)
		w := podWave(b, rt, i, "wave", podCfg, image, func() [2]int64 { return procCPU(pid) })
		waves = append(waves, w.wall)
		waveCPU, runtimeCPU, childCPU = append(waveCPU, w.cpu), append(runtimeCPU, w.runtimeCPU), append(childCPU, w.childCPU)
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(median(runs)), "runp-ms")
	b.ReportMetric(ms(median(stops)), "stopp-ms")
	b.ReportMetric(ms(median(sandboxWaves)), "10pods-ms")
	b.ReportMetric(ms(median(waves)), "10pods-ctr-ms")
	b.ReportMetric(ms(median(waveCPU)), "10pods-ctr-cpu-ms")
	b.ReportMetric(ms(median(runtimeCPU)), "10pods-ctr-runtime-cpu-ms")
	b.ReportMetric(ms(median(childCPU)), "10pods-ctr-children-cpu-ms")
	b.ReportMetric(0, "ns/op")
}

// waveResult is the wall and CPU time of one podWave.
type waveResult struct {
	wall, cpu, runtimeCPU, childCPU time.Duration
}

// podWave starts 10 pods at once and returns when all are running: with
// image set, each pod also creates and starts a container running it. Then
// it stops and removes them (not counted). cpu, when set, returns the
// runtime's own and its waited-for children's CPU ticks.
func podWave(b *testing.B, rt runtime.RuntimeServiceClient, iter int, prefix string, podCfg func(string) *runtime.PodSandboxConfig, image string, cpu func() [2]int64) waveResult {
	ctx := context.Background()
	ids := make([]string, 10)
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	var p0 [2]int64
	if cpu != nil {
		p0 = cpu()
	}
	cpu0 := busyJiffies()
	t0 := time.Now()
	for n := range 10 {
		wg.Add(1)
		go func(n int) {
			defer wg.Done()
			cfg := podCfg(fmt.Sprintf("%s-%d-%d", prefix, iter, n))
			resp, err := rt.RunPodSandbox(ctx, &runtime.RunPodSandboxRequest{Config: cfg})
			if err != nil {
				errs <- err
				return
			}
			ids[n] = resp.PodSandboxId
			if image == "" {
				return
			}
			c, err := rt.CreateContainer(ctx, &runtime.CreateContainerRequest{PodSandboxId: resp.PodSandboxId, SandboxConfig: cfg,
				Config: &runtime.ContainerConfig{
					Metadata: &runtime.ContainerMetadata{Name: "busybox"},
					Image:    &runtime.ImageSpec{Image: image},
					Command:  []string{"sleep", "3600"},
					LogPath:  "busybox.log",
				}})
			if err != nil {
				errs <- err
				return
			}
			if _, err := rt.StartContainer(ctx, &runtime.StartContainerRequest{ContainerId: c.ContainerId}); err != nil {
				errs <- err
			}
		}(n)
	}
	wg.Wait()
	res := waveResult{wall: time.Since(t0), cpu: time.Duration(busyJiffies()-cpu0) * 10 * time.Millisecond}
	if cpu != nil {
		p1 := cpu()
		res.runtimeCPU = time.Duration(p1[0]-p0[0]) * 10 * time.Millisecond
		res.childCPU = time.Duration(p1[1]-p0[1]) * 10 * time.Millisecond
	}
	close(errs)
	for err := range errs {
		require.NoError(b, err)
	}
	for _, id := range ids {
		if id == "" {
			continue
		}
		_, err := rt.StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{PodSandboxId: id})
		require.NoError(b, err)
		_, err = rt.RemovePodSandbox(ctx, &runtime.RemovePodSandboxRequest{PodSandboxId: id})
		require.NoError(b, err)
	}
	return res
}

// busyJiffies is the machine's non-idle CPU time in clock ticks.
func busyJiffies() int64 {
	b, _ := os.ReadFile("/proc/stat")
	f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])
	var sum int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		sum += n
	}
	return sum
}

// procCPU returns a process's own CPU time and that of its waited-for
// children, in clock ticks (USER_HZ, 100 on Linux).
func procCPU(pid int) [2]int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	p := func(i int) int64 { n, _ := strconv.ParseInt(f[i], 10, 64); return n }
	// fields 14-17 (1-based) are utime stime cutime cstime; f starts at field 3
	return [2]int64{p(11) + p(12), p(13) + p(14)}
}
