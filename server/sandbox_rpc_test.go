package server

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crid-dev/crid/container/spec"
)

func TestSandboxRPCs(t *testing.T) {
	ctx := context.Background()
	_, rc := startServer(t, newFakeImages(), fakeFS{})
	podCfg := &runtime.PodSandboxConfig{
		Metadata: &runtime.PodSandboxMetadata{Name: "p", Namespace: "ns", Uid: "u", Attempt: 2},
		Labels:   map[string]string{"app": "web"},
		Linux: &runtime.LinuxPodSandboxConfig{SecurityContext: &runtime.LinuxSandboxSecurityContext{
			NamespaceOptions: &runtime.NamespaceOption{Network: runtime.NamespaceMode_NODE, Pid: runtime.NamespaceMode_CONTAINER},
		}},
	}

	t.Run("bad requests are InvalidArgument", func(t *testing.T) {
		for _, req := range []*runtime.RunPodSandboxRequest{
			{},
			{Config: &runtime.PodSandboxConfig{Metadata: &runtime.PodSandboxMetadata{Name: "p"}}},
			{Config: podCfg, RuntimeHandler: "no-such-handler"},
		} {
			_, err := rc.RunPodSandbox(ctx, req)
			require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
		}
		_, err := rc.StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{})
		require.Equal(t, codes.InvalidArgument, status.Code(err))
		_, err = rc.CreateContainer(ctx, &runtime.CreateContainerRequest{PodSandboxId: "x"})
		require.Equal(t, codes.InvalidArgument, status.Code(err))
	})

	resp, err := rc.RunPodSandbox(ctx, &runtime.RunPodSandboxRequest{Config: podCfg, RuntimeHandler: "runc"})
	require.NoError(t, err)
	id := resp.GetPodSandboxId()

	t.Run("status converts the record", func(t *testing.T) {
		st, err := rc.PodSandboxStatus(ctx, &runtime.PodSandboxStatusRequest{PodSandboxId: id[:6]})
		require.NoError(t, err)
		require.Equal(t, id, st.GetStatus().GetId())
		require.Equal(t, runtime.PodSandboxState_SANDBOX_READY, st.GetStatus().GetState())
		require.Equal(t, "p", st.GetStatus().GetMetadata().GetName())
		require.EqualValues(t, 2, st.GetStatus().GetMetadata().GetAttempt())
		ns := st.GetStatus().GetLinux().GetNamespaces().GetOptions()
		require.Equal(t, runtime.NamespaceMode_NODE, ns.GetNetwork())
		require.Equal(t, runtime.NamespaceMode_CONTAINER, ns.GetPid())
		require.Equal(t, runtime.NamespaceMode_POD, ns.GetIpc())
		require.Equal(t, "runc", st.GetStatus().GetRuntimeHandler())
	})
	t.Run("list filters by state", func(t *testing.T) {
		l, err := rc.ListPodSandbox(ctx, &runtime.ListPodSandboxRequest{Filter: &runtime.PodSandboxFilter{
			State: &runtime.PodSandboxStateValue{State: runtime.PodSandboxState_SANDBOX_NOTREADY}}})
		require.NoError(t, err)
		require.Empty(t, l.GetItems())
		l, err = rc.ListPodSandbox(ctx, &runtime.ListPodSandboxRequest{})
		require.NoError(t, err)
		require.Len(t, l.GetItems(), 1)
	})
	t.Run("unknown IDs: status NotFound, stop and remove OK", func(t *testing.T) {
		_, err := rc.PodSandboxStatus(ctx, &runtime.PodSandboxStatusRequest{PodSandboxId: "ffff"})
		require.Equal(t, codes.NotFound, status.Code(err))
		_, err = rc.StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{PodSandboxId: "ffff"})
		require.NoError(t, err)
		_, err = rc.RemovePodSandbox(ctx, &runtime.RemovePodSandboxRequest{PodSandboxId: "ffff"})
		require.NoError(t, err)
		_, err = rc.StopContainer(ctx, &runtime.StopContainerRequest{ContainerId: "ffff"})
		require.NoError(t, err)
		_, err = rc.RemoveContainer(ctx, &runtime.RemoveContainerRequest{ContainerId: "ffff"})
		require.NoError(t, err)
		_, err = rc.ContainerStatus(ctx, &runtime.ContainerStatusRequest{ContainerId: "ffff"})
		require.Equal(t, codes.NotFound, status.Code(err))
	})
	t.Run("a container needs a pulled image", func(t *testing.T) {
		_, err := rc.CreateContainer(ctx, &runtime.CreateContainerRequest{PodSandboxId: id,
			Config: &runtime.ContainerConfig{Metadata: &runtime.ContainerMetadata{Name: "c"}, Image: &runtime.ImageSpec{Image: "missing:latest"}}})
		require.Equal(t, codes.NotFound, status.Code(err))
	})
	t.Run("stop then remove", func(t *testing.T) {
		_, err := rc.StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{PodSandboxId: id})
		require.NoError(t, err)
		st, err := rc.PodSandboxStatus(ctx, &runtime.PodSandboxStatusRequest{PodSandboxId: id})
		require.NoError(t, err)
		require.Equal(t, runtime.PodSandboxState_SANDBOX_NOTREADY, st.GetStatus().GetState())
		_, err = rc.RemovePodSandbox(ctx, &runtime.RemovePodSandboxRequest{PodSandboxId: id})
		require.NoError(t, err)
		_, err = rc.PodSandboxStatus(ctx, &runtime.PodSandboxStatusRequest{PodSandboxId: id})
		require.Equal(t, codes.NotFound, status.Code(err))
	})
}

func TestStopSignal(t *testing.T) {
	for in, want := range map[string]int{"": 0, "SIGTERM": 15, "TERM": 15, "sigquit": 3, "9": 9, "SIGNOPE": 0, "99": 0} {
		require.Equal(t, want, stopSignal(in), in)
	}
}

func TestNilSecurityProfileIsUnconfined(t *testing.T) {
	require.Equal(t, spec.ProfileUnconfined, profileFromCRI(nil).Type)
	require.Equal(t, spec.ProfileRuntimeDefault, profileFromCRI(&runtime.SecurityProfile{}).Type,
		"a set profile with the zero type is RuntimeDefault")
	require.Equal(t, spec.ProfileLocalhost, profileFromCRI(&runtime.SecurityProfile{
		ProfileType: runtime.SecurityProfile_Localhost, LocalhostRef: "/p.json"}).Type)
}
