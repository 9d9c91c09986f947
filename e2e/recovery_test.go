//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestRecoveryAfterKill kills crid with SIGKILL while a pod runs a
// long-lived container and one that exits while crid is down; the
// restarted crid reports both truly. A graceful restart (SIGTERM) leaves
// containers running too.
func TestRecoveryAfterKill(t *testing.T) {
	e := newRuntimeEnv(t)
	pod := e.podConfig("recover", nsOpts(runtime.NamespaceMode_POD, runtime.NamespaceMode_POD, runtime.NamespaceMode_POD))
	podID := e.runPod(t, pod)
	longID := e.run(t, podID, pod, "long", "sleep", "100006")
	shortID := e.run(t, podID, pod, "short", "sh", "-c", "sleep 2; exit 7")

	_, longInfo := e.ctrVerbose(t, longID)
	_, shortInfo := e.ctrVerbose(t, shortID)
	longStart := procStart(longInfo.Pid)
	require.NotZero(t, longStart)
	require.NotZero(t, procStart(shortInfo.Pid))

	e.d.kill9(t)
	require.Eventually(t, func() bool { return procStart(shortInfo.Pid) == 0 }, 10*time.Second, 50*time.Millisecond,
		"the short container exits while crid is down")
	e.d.start(t)

	require.Equal(t, runtime.PodSandboxState_SANDBOX_READY, e.podState(t, podID))
	st, info := e.ctrVerbose(t, longID)
	require.Equal(t, runtime.ContainerState_CONTAINER_RUNNING, st.GetState())
	require.Equal(t, longInfo.Pid, info.Pid, "same process")
	require.Equal(t, longStart, procStart(info.Pid), "still alive, not a reused pid")
	require.Equal(t, "alive\n", e.mustExec(t, longID, "echo", "alive"))

	st = e.ctrStatus(t, shortID)
	require.Equal(t, runtime.ContainerState_CONTAINER_EXITED, st.GetState())
	require.EqualValues(t, 7, st.GetExitCode())
	require.Equal(t, "Error", st.GetReason())
	require.Positive(t, st.GetFinishedAt())

	resp, err := e.rt().ListContainers(context.Background(), &runtime.ListContainersRequest{})
	require.NoError(t, err)
	require.ElementsMatch(t, []string{longID, shortID}, ctrIDs(resp.GetContainers()))

	// Graceful restart: containers keep running.
	e.d.restart(t)
	require.Equal(t, runtime.PodSandboxState_SANDBOX_READY, e.podState(t, podID))
	st, info = e.ctrVerbose(t, longID)
	require.Equal(t, runtime.ContainerState_CONTAINER_RUNNING, st.GetState())
	require.Equal(t, longInfo.Pid, info.Pid)
	require.Equal(t, longStart, procStart(info.Pid))
	require.EqualValues(t, 7, e.ctrStatus(t, shortID).GetExitCode())

	// The recovered container is still stoppable (sleep, not PID 1 with a
	// PID=POD pod, dies of the TERM).
	e.stopCtr(t, longID, 5)
	st = e.ctrStatus(t, longID)
	require.Equal(t, runtime.ContainerState_CONTAINER_EXITED, st.GetState())
	require.EqualValues(t, 143, st.GetExitCode())
	require.Zero(t, procStart(info.Pid), "the process is gone")

	_, err = e.rt().StopPodSandbox(context.Background(), &runtime.StopPodSandboxRequest{PodSandboxId: podID})
	require.NoError(t, err, "%s", e.d.Logs())
	_, err = e.rt().RemovePodSandbox(context.Background(), &runtime.RemovePodSandboxRequest{PodSandboxId: podID})
	require.NoError(t, err, "%s", e.d.Logs())
	require.Empty(t, cgroupDirsUnder(t, e.cgParent))
}

// TestKubeletRetry cancels RunPodSandbox and CreateContainer mid-way, as
// kubelet's deadline does, and retries with the same request: the retry
// gets the one sandbox/container, never "name is reserved".
func TestKubeletRetry(t *testing.T) {
	e := newRuntimeEnv(t)
	rt := e.rt()
	var cancelledRuns, cancelledCreates int
	for _, delay := range []time.Duration{2 * time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond, 50 * time.Millisecond} {
		t.Run(delay.String(), func(t *testing.T) {
			name := fmt.Sprintf("retry-%d", delay.Milliseconds())
			pod := e.podConfig(name, nsOpts(runtime.NamespaceMode_POD, runtime.NamespaceMode_POD, runtime.NamespaceMode_POD))

			ctx, cancel := context.WithTimeout(context.Background(), delay)
			first, err := rt.RunPodSandbox(ctx, &runtime.RunPodSandboxRequest{Config: pod})
			cancel()
			if err != nil {
				require.Contains(t, []codes.Code{codes.DeadlineExceeded, codes.Canceled}, status.Code(err), "%v", err)
				cancelledRuns++
			}
			t.Logf("RunPodSandbox cut after %s: %v", delay, err)
			podID := e.runPod(t, pod)
			if err == nil {
				require.Equal(t, first.GetPodSandboxId(), podID)
			}
			list, err := rt.ListPodSandbox(context.Background(), &runtime.ListPodSandboxRequest{Filter: &runtime.PodSandboxFilter{
				LabelSelector: map[string]string{"pod": name}}})
			require.NoError(t, err)
			require.Equal(t, []string{podID}, podIDs(list.GetItems()), "exactly one sandbox with the name")
			require.Equal(t, runtime.PodSandboxState_SANDBOX_READY, e.podState(t, podID))

			cfg := e.ctrConfig(pod, "c", "sleep", "100007")
			ctx, cancel = context.WithTimeout(context.Background(), delay)
			firstC, err := rt.CreateContainer(ctx, &runtime.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
			cancel()
			if err != nil {
				require.Contains(t, []codes.Code{codes.DeadlineExceeded, codes.Canceled}, status.Code(err), "%v", err)
				cancelledCreates++
			}
			t.Logf("CreateContainer cut after %s: %v", delay, err)
			ctrID := e.create(t, podID, pod, cfg)
			if err == nil {
				require.Equal(t, firstC.GetContainerId(), ctrID)
			}
			cl, err := rt.ListContainers(context.Background(), &runtime.ListContainersRequest{Filter: &runtime.ContainerFilter{PodSandboxId: podID}})
			require.NoError(t, err)
			require.Equal(t, []string{ctrID}, ctrIDs(cl.GetContainers()), "exactly one container with the name")
			e.start(t, ctrID)
			require.Equal(t, runtime.ContainerState_CONTAINER_RUNNING, e.ctrStatus(t, ctrID).GetState())
		})
	}
	require.Positive(t, cancelledRuns, "some RunPodSandbox was cut mid-way")
	require.Positive(t, cancelledCreates, "some CreateContainer was cut mid-way")
}

// TestNoLeaks runs 100 create/remove cycles and then checks that nothing
// is left: mounts, monitor and pause processes, cgroups, state files,
// snapshots, and crid's own fds.
func TestNoLeaks(t *testing.T) {
	e := newRuntimeEnv(t)
	rt := e.rt()
	ctx := context.Background()
	cycle := func(i int) {
		ns := nsOpts(runtime.NamespaceMode_POD, runtime.NamespaceMode_CONTAINER, runtime.NamespaceMode_POD)
		if i%2 == 1 {
			ns.Pid = runtime.NamespaceMode_POD // with a pause process
		}
		pod := e.podConfig(fmt.Sprintf("leak-%d", i), ns)
		podID := e.runPod(t, pod)
		id := e.create(t, podID, pod, e.ctrConfig(pod, "c", "sleep", "100008"))
		e.start(t, id)
		_, err := rt.StopContainer(ctx, &runtime.StopContainerRequest{ContainerId: id, Timeout: 0})
		require.NoError(t, err, "cycle %d\n%s", i, e.d.Logs())
		_, err = rt.RemoveContainer(ctx, &runtime.RemoveContainerRequest{ContainerId: id})
		require.NoError(t, err, "cycle %d", i)
		_, err = rt.StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{PodSandboxId: podID})
		require.NoError(t, err, "cycle %d", i)
		_, err = rt.RemovePodSandbox(ctx, &runtime.RemovePodSandboxRequest{PodSandboxId: podID})
		require.NoError(t, err, "cycle %d", i)
	}
	// Warm up (lazily opened files, gRPC buffers), then measure.
	cycle(-1)
	cycle(-2)
	cridPid := e.d.cmd.Process.Pid
	fdsBefore := fdCount(t, cridPid)

	start := time.Now()
	for i := range 100 {
		cycle(i)
	}
	t.Logf("100 cycles in %s", time.Since(start))

	sandboxesMount := filepath.Join(e.d.state, "sandboxes")
	require.Equal(t, []string{sandboxesMount}, mountsUnder(t, e.d.root, e.d.state),
		"only the sandbox state dir's own private mount is left")

	var stray []string
	for _, p := range listProcs() {
		if p.pid == cridPid {
			continue
		}
		args := strings.Join(p.argv, " ")
		if strings.Contains(args, e.d.dir) || p.exe == cridBin || strings.Contains(args, "100008") {
			stray = append(stray, fmt.Sprintf("%d %s %q (%s)", p.pid, p.comm, args, p.state))
		}
	}
	require.Empty(t, stray, "no monitor, pause, runtime or container process is left")

	require.Empty(t, cgroupDirsUnder(t, e.cgParent), "no cgroups left under %s", e.cgParent)

	ents, err := os.ReadDir(filepath.Join(e.d.state, "containers"))
	require.NoError(t, err)
	var names []string
	for _, de := range ents {
		names = append(names, de.Name())
	}
	slices.Sort(names)
	require.Equal(t, []string{"exits", "sockets"}, names, "no container bundle left")
	require.Zero(t, countEntries(t, filepath.Join(e.d.state, "containers", "exits")), "no exit file left")
	require.Zero(t, countEntries(t, filepath.Join(e.d.state, "containers", "sockets")), "no socket link left")
	require.Zero(t, countEntries(t, filepath.Join(e.d.state, "sandboxes")), "no sandbox dir left")
	require.Zero(t, countEntries(t, filepath.Join(e.d.state, "runtime", "runc")), "runc keeps no container state")
	requireCleanStore(t, e.d)
	_, snaps := e.d.storeDirs()
	img, _ := e.d.storeDirs()
	require.Equal(t, countEntries(t, filepath.Join(img, "layerdb", "sha256")), countEntries(t, filepath.Join(snaps, "snapshots")),
		"snapshots are back to the image layers only")

	fdsAfter := fdCount(t, cridPid)
	t.Logf("crid fds: %d before, %d after", fdsBefore, fdsAfter)
	require.LessOrEqual(t, fdsAfter, fdsBefore+5, "crid's fds do not grow with cycles")

	// A crid that exits with no pods leaves no mount at all.
	e.d.stop(t)
	require.Empty(t, mountsUnder(t, e.d.dir), "mounts left after crid exited")
}
