//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func requireCode(t testing.TB, want codes.Code, err error, msgAndArgs ...any) {
	t.Helper()
	require.Error(t, err, msgAndArgs...)
	require.Equal(t, want, status.Code(err), append([]any{"error: %v", err}, msgAndArgs...)...)
}

func ctrIDs(cs []*runtime.Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.GetId())
	}
	return out
}

func podIDs(ps []*runtime.PodSandbox) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.GetId())
	}
	return out
}

// TestPodLifecycle drives a pod and its containers through every
// RuntimeService lifecycle RPC and the error codes kubelet relies on.
func TestPodLifecycle(t *testing.T) {
	e := newRuntimeEnv(t)
	ctx := context.Background()
	rt := e.rt()

	pod := e.podConfig("life", nil)
	podID := e.runPod(t, pod)
	require.Equal(t, runtime.PodSandboxState_SANDBOX_READY, e.podState(t, podID))

	// c-trap ignores TERM (its handler only prints), c-zero and c-one exit
	// 0 and 1 on TERM.
	trapID := e.run(t, podID, pod, "c-trap", "sh", "-c", `trap 'echo got TERM' TERM; echo ready; while true; do sleep 0.1; done`)
	zeroID := e.run(t, podID, pod, "c-zero", "sh", "-c", `trap 'exit 0' TERM; while true; do sleep 0.1; done`)
	oneID := e.run(t, podID, pod, "c-one", "sh", "-c", `trap 'exit 1' TERM; while true; do sleep 0.1; done`)

	t.Run("status running", func(t *testing.T) {
		for _, id := range []string{trapID, zeroID, oneID} {
			st, info := e.ctrVerbose(t, id)
			require.Equal(t, runtime.ContainerState_CONTAINER_RUNNING, st.GetState())
			require.Equal(t, id, st.GetId())
			require.Positive(t, st.GetCreatedAt())
			require.GreaterOrEqual(t, st.GetStartedAt(), st.GetCreatedAt())
			require.Zero(t, st.GetFinishedAt())
			require.Equal(t, e.image, st.GetImage().GetImage())
			require.Equal(t, e.imageID, st.GetImageRef())
			require.Positive(t, info.Pid, "verbose info carries the container's pid")
			require.NotZero(t, procStart(info.Pid), "pid %d is alive", info.Pid)
			// StartContainer returns once runc let the process go; its
			// execve of sh may finish a moment later (cmdline is empty
			// until then).
			var cmd []byte
			require.Eventually(t, func() bool {
				var err error
				cmd, err = os.ReadFile("/proc/" + strconv.Itoa(info.Pid) + "/cmdline")
				return err == nil && strings.Contains(string(cmd), "while true")
			}, 5*time.Second, 10*time.Millisecond, "pid %d is the container's sh (cmdline %q)", info.Pid, cmd)
		}
	})

	t.Run("list filters", func(t *testing.T) {
		list := func(f *runtime.ContainerFilter) []string {
			resp, err := rt.ListContainers(ctx, &runtime.ListContainersRequest{Filter: f})
			require.NoError(t, err)
			return ctrIDs(resp.GetContainers())
		}
		require.ElementsMatch(t, []string{trapID, zeroID, oneID}, list(nil))
		require.Equal(t, []string{zeroID}, list(&runtime.ContainerFilter{Id: zeroID[:12]}), "id prefix")
		require.Equal(t, []string{zeroID}, list(&runtime.ContainerFilter{Id: zeroID}), "full id")
		require.ElementsMatch(t, []string{trapID, zeroID, oneID}, list(&runtime.ContainerFilter{
			State: &runtime.ContainerStateValue{State: runtime.ContainerState_CONTAINER_RUNNING}}))
		require.Empty(t, list(&runtime.ContainerFilter{
			State: &runtime.ContainerStateValue{State: runtime.ContainerState_CONTAINER_EXITED}}))
		require.Equal(t, []string{oneID}, list(&runtime.ContainerFilter{LabelSelector: map[string]string{"ctr": "c-one"}}))
		require.Empty(t, list(&runtime.ContainerFilter{LabelSelector: map[string]string{"ctr": "nope"}}))
		require.ElementsMatch(t, []string{trapID, zeroID, oneID}, list(&runtime.ContainerFilter{PodSandboxId: podID}))
		require.Empty(t, list(&runtime.ContainerFilter{PodSandboxId: randomHex(t, 32)}))

		pods := func(f *runtime.PodSandboxFilter) []string {
			resp, err := rt.ListPodSandbox(ctx, &runtime.ListPodSandboxRequest{Filter: f})
			require.NoError(t, err)
			return podIDs(resp.GetItems())
		}
		require.Equal(t, []string{podID}, pods(nil))
		require.Equal(t, []string{podID}, pods(&runtime.PodSandboxFilter{Id: podID[:10]}))
		require.Equal(t, []string{podID}, pods(&runtime.PodSandboxFilter{
			State: &runtime.PodSandboxStateValue{State: runtime.PodSandboxState_SANDBOX_READY}}))
		require.Empty(t, pods(&runtime.PodSandboxFilter{
			State: &runtime.PodSandboxStateValue{State: runtime.PodSandboxState_SANDBOX_NOTREADY}}))
		require.Equal(t, []string{podID}, pods(&runtime.PodSandboxFilter{LabelSelector: map[string]string{"pod": "life"}}))
		require.Empty(t, pods(&runtime.PodSandboxFilter{LabelSelector: map[string]string{"pod": "other"}}))
	})

	t.Run("stop with timeout", func(t *testing.T) {
		start := time.Now()
		e.stopCtr(t, trapID, 2)
		elapsed := time.Since(start)
		require.GreaterOrEqual(t, elapsed, 2*time.Second, "a container that traps TERM gets the whole timeout")
		require.Less(t, elapsed, 10*time.Second)
		st := e.ctrStatus(t, trapID)
		require.Equal(t, runtime.ContainerState_CONTAINER_EXITED, st.GetState())
		require.EqualValues(t, 137, st.GetExitCode(), "killed after the timeout")
		require.Equal(t, "Error", st.GetReason())
		require.GreaterOrEqual(t, st.GetFinishedAt(), st.GetStartedAt())

		start = time.Now()
		e.stopCtr(t, zeroID, 10)
		require.Less(t, time.Since(start), 5*time.Second, "exits on TERM without waiting for the timeout")
		st = e.ctrStatus(t, zeroID)
		require.Equal(t, runtime.ContainerState_CONTAINER_EXITED, st.GetState())
		require.EqualValues(t, 0, st.GetExitCode())
		require.Equal(t, "Completed", st.GetReason())

		e.stopCtr(t, oneID, 10)
		st = e.ctrStatus(t, oneID)
		require.Equal(t, runtime.ContainerState_CONTAINER_EXITED, st.GetState())
		require.EqualValues(t, 1, st.GetExitCode())
		require.Equal(t, "Error", st.GetReason())

		// Stopping again is a no-op that keeps the exit code.
		e.stopCtr(t, oneID, 10)
		require.EqualValues(t, 1, e.ctrStatus(t, oneID).GetExitCode())

		resp, err := rt.ListContainers(ctx, &runtime.ListContainersRequest{Filter: &runtime.ContainerFilter{
			State: &runtime.ContainerStateValue{State: runtime.ContainerState_CONTAINER_EXITED}}})
		require.NoError(t, err)
		require.ElementsMatch(t, []string{trapID, zeroID, oneID}, ctrIDs(resp.GetContainers()))
	})

	t.Run("unknown ids", func(t *testing.T) {
		unknown := randomHex(t, 32)
		_, err := rt.StopContainer(ctx, &runtime.StopContainerRequest{ContainerId: unknown, Timeout: 1})
		require.NoError(t, err, "stop of an unknown container is OK")
		_, err = rt.RemoveContainer(ctx, &runtime.RemoveContainerRequest{ContainerId: unknown})
		require.NoError(t, err, "remove of an unknown container is OK")
		_, err = rt.StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{PodSandboxId: unknown})
		require.NoError(t, err, "stop of an unknown pod is OK")
		_, err = rt.RemovePodSandbox(ctx, &runtime.RemovePodSandboxRequest{PodSandboxId: unknown})
		require.NoError(t, err, "remove of an unknown pod is OK")

		_, err = rt.ContainerStatus(ctx, &runtime.ContainerStatusRequest{ContainerId: unknown})
		requireCode(t, codes.NotFound, err)
		_, err = rt.PodSandboxStatus(ctx, &runtime.PodSandboxStatusRequest{PodSandboxId: unknown})
		requireCode(t, codes.NotFound, err)
		_, err = rt.StartContainer(ctx, &runtime.StartContainerRequest{ContainerId: unknown})
		requireCode(t, codes.NotFound, err)
		_, err = rt.ExecSync(ctx, &runtime.ExecSyncRequest{ContainerId: unknown, Cmd: []string{"true"}})
		requireCode(t, codes.NotFound, err)
		_, err = rt.CreateContainer(ctx, &runtime.CreateContainerRequest{PodSandboxId: unknown,
			Config: e.ctrConfig(pod, "orphan", "true"), SandboxConfig: pod})
		requireCode(t, codes.NotFound, err)
	})

	t.Run("malformed requests", func(t *testing.T) {
		_, err := rt.RunPodSandbox(ctx, &runtime.RunPodSandboxRequest{Config: &runtime.PodSandboxConfig{}})
		requireCode(t, codes.InvalidArgument, err, "pod without metadata")
		_, err = rt.RunPodSandbox(ctx, &runtime.RunPodSandboxRequest{})
		requireCode(t, codes.InvalidArgument, err, "no pod config")
		noMeta := e.ctrConfig(pod, "x", "true")
		noMeta.Metadata = nil
		_, err = rt.CreateContainer(ctx, &runtime.CreateContainerRequest{PodSandboxId: podID, Config: noMeta, SandboxConfig: pod})
		requireCode(t, codes.InvalidArgument, err, "container without metadata")
		_, err = rt.CreateContainer(ctx, &runtime.CreateContainerRequest{Config: e.ctrConfig(pod, "x", "true"), SandboxConfig: pod})
		requireCode(t, codes.InvalidArgument, err, "no pod id")
		_, err = rt.StartContainer(ctx, &runtime.StartContainerRequest{})
		requireCode(t, codes.InvalidArgument, err)
		_, err = rt.StopContainer(ctx, &runtime.StopContainerRequest{})
		requireCode(t, codes.InvalidArgument, err)
		_, err = rt.RemoveContainer(ctx, &runtime.RemoveContainerRequest{})
		requireCode(t, codes.InvalidArgument, err)
		_, err = rt.ContainerStatus(ctx, &runtime.ContainerStatusRequest{})
		requireCode(t, codes.InvalidArgument, err)
		_, err = rt.ExecSync(ctx, &runtime.ExecSyncRequest{ContainerId: trapID})
		requireCode(t, codes.InvalidArgument, err, "exec without a command")
		_, err = rt.StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{})
		requireCode(t, codes.InvalidArgument, err)
		_, err = rt.RemovePodSandbox(ctx, &runtime.RemovePodSandboxRequest{})
		requireCode(t, codes.InvalidArgument, err)
		_, err = rt.PodSandboxStatus(ctx, &runtime.PodSandboxStatusRequest{})
		requireCode(t, codes.InvalidArgument, err)
	})

	t.Run("remove and stop pod", func(t *testing.T) {
		for _, id := range []string{trapID, zeroID} {
			_, err := rt.RemoveContainer(ctx, &runtime.RemoveContainerRequest{ContainerId: id})
			require.NoError(t, err)
			_, err = rt.ContainerStatus(ctx, &runtime.ContainerStatusRequest{ContainerId: id})
			requireCode(t, codes.NotFound, err, "removed container")
			_, err = rt.RemoveContainer(ctx, &runtime.RemoveContainerRequest{ContainerId: id})
			require.NoError(t, err, "second remove is OK")
		}

		_, err := rt.StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{PodSandboxId: podID})
		require.NoError(t, err, "%s", e.d.Logs())
		require.Equal(t, runtime.PodSandboxState_SANDBOX_NOTREADY, e.podState(t, podID))
		_, err = rt.StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{PodSandboxId: podID})
		require.NoError(t, err, "second stop is OK")

		_, err = rt.CreateContainer(ctx, &runtime.CreateContainerRequest{PodSandboxId: podID,
			Config: e.ctrConfig(pod, "late", "true"), SandboxConfig: pod})
		requireCode(t, codes.FailedPrecondition, err, "create in a stopped pod")

		// The pod's remaining container goes with it.
		_, err = rt.RemovePodSandbox(ctx, &runtime.RemovePodSandboxRequest{PodSandboxId: podID})
		require.NoError(t, err, "%s", e.d.Logs())
		_, err = rt.PodSandboxStatus(ctx, &runtime.PodSandboxStatusRequest{PodSandboxId: podID})
		requireCode(t, codes.NotFound, err)
		_, err = rt.ContainerStatus(ctx, &runtime.ContainerStatusRequest{ContainerId: oneID})
		requireCode(t, codes.NotFound, err, "container removed with its pod")
		_, err = rt.RemovePodSandbox(ctx, &runtime.RemovePodSandboxRequest{PodSandboxId: podID})
		require.NoError(t, err, "second remove is OK")
		resp, err := rt.ListPodSandbox(ctx, &runtime.ListPodSandboxRequest{})
		require.NoError(t, err)
		require.Empty(t, resp.GetItems())
		require.Empty(t, cgroupDirsUnder(t, e.cgParent), "no cgroups left under the parent")
	})
}

// TestPodLifecycleWithCrictl runs the same steps with crictl, as a user
// would.
func TestPodLifecycleWithCrictl(t *testing.T) {
	e := newRuntimeEnv(t)
	dir := t.TempDir()
	pod := e.podConfig("crictl-pod", nil)
	podJSON, err := json.Marshal(pod)
	require.NoError(t, err)
	ctr := e.ctrConfig(pod, "crictl-ctr", "sh", "-c", "echo hello from crictl; exec sleep 1000")
	ctrJSON, err := json.Marshal(ctr)
	require.NoError(t, err)
	podFile, ctrFile := dir+"/pod.json", dir+"/ctr.json"
	require.NoError(t, os.WriteFile(podFile, podJSON, 0o644))
	require.NoError(t, os.WriteFile(ctrFile, ctrJSON, 0o644))

	podID := strings.TrimSpace(e.d.mustCrictl(t, "runp", podFile))
	require.Len(t, podID, 64)
	ctrID := strings.TrimSpace(e.d.mustCrictl(t, "create", podID, ctrFile, podFile))
	require.Len(t, ctrID, 64)
	e.d.mustCrictl(t, "start", ctrID)

	out := e.d.mustCrictl(t, "ps", "-q", "--pod", podID, "--state", "running")
	require.Equal(t, ctrID, strings.TrimSpace(out))
	out = e.d.mustCrictl(t, "pods", "-q", "--label", "pod=crictl-pod")
	require.Equal(t, podID, strings.TrimSpace(out))

	var inspect struct {
		Status struct {
			State string `json:"state"`
		} `json:"status"`
		Info struct {
			Pid int `json:"pid"`
		} `json:"info"`
	}
	require.NoError(t, json.Unmarshal([]byte(e.d.mustCrictl(t, "inspect", ctrID)), &inspect))
	require.Equal(t, "CONTAINER_RUNNING", inspect.Status.State)
	require.Positive(t, inspect.Info.Pid)

	// crictl prints stdout and stderr with newlines of its own.
	require.Equal(t, "crictl-pod", strings.TrimSpace(e.d.mustCrictl(t, "exec", "-s", ctrID, "hostname")))
	require.Eventually(t, func() bool {
		out, err := e.d.crictl("logs", ctrID)
		return err == nil && out == "hello from crictl\n"
	}, 5*time.Second, 50*time.Millisecond)

	e.d.mustCrictl(t, "stop", "--timeout", "1", ctrID)
	require.NoError(t, json.Unmarshal([]byte(e.d.mustCrictl(t, "inspect", ctrID)), &inspect))
	require.Equal(t, "CONTAINER_EXITED", inspect.Status.State)
	e.d.mustCrictl(t, "rm", ctrID)
	e.d.mustCrictl(t, "stopp", podID)
	e.d.mustCrictl(t, "rmp", podID)
	require.Empty(t, strings.TrimSpace(e.d.mustCrictl(t, "pods", "-q")))
	require.Empty(t, strings.TrimSpace(e.d.mustCrictl(t, "ps", "-a", "-q")))
}
