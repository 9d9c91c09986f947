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
//   - 10pods-ms: wall time from starting 10 pods at once (RunPodSandbox,
//     CreateContainer, StartContainer each) until all are running, and the
//     CPU time that took: the machine's (jiffies from /proc/stat, so run it
//     on an idle machine), the runtime's own, and its children's (the CNI
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
	var runs, stops, waves []time.Duration
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

		ids := make([]string, 10)
		var wg sync.WaitGroup
		errs := make(chan error, 10)
		cpu0 := busyJiffies()
		p0 := procCPU(pid)
		t0 := time.Now()
		for n := range 10 {
			wg.Add(1)
			go func(n int) {
				defer wg.Done()
				cfg := podCfg(fmt.Sprintf("wave-%d-%d", i, n))
				resp, err := rt.RunPodSandbox(ctx, &runtime.RunPodSandboxRequest{Config: cfg})
				if err != nil {
					errs <- err
					return
				}
				ids[n] = resp.PodSandboxId
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
		waves = append(waves, time.Since(t0))
		p1 := procCPU(pid)
		waveCPU = append(waveCPU, time.Duration(busyJiffies()-cpu0)*10*time.Millisecond)
		childCPU = append(childCPU, time.Duration(p1[1]-p0[1])*10*time.Millisecond)
		runtimeCPU = append(runtimeCPU, time.Duration(p1[0]-p0[0])*10*time.Millisecond)
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
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(median(runs)), "runp-ms")
	b.ReportMetric(ms(median(stops)), "stopp-ms")
	b.ReportMetric(ms(median(waves)), "10pods-ms")
	b.ReportMetric(ms(median(waveCPU)), "10pods-cpu-ms")
	b.ReportMetric(ms(median(runtimeCPU)), "10pods-runtime-cpu-ms")
	b.ReportMetric(ms(median(childCPU)), "10pods-children-cpu-ms")
	b.ReportMetric(0, "ns/op")
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
