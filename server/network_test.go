package server

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crid-dev/crid/cni"
	"github.com/crid-dev/crid/sandbox"
)

type fakeNetwork struct {
	mu       sync.Mutex
	notReady error
	cidr     string
	checked  []cni.Pod
	checkErr error
}

func (f *fakeNetwork) Status(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.notReady
}

func (f *fakeNetwork) SetPodCIDR(cidr string) error {
	if cidr == "bad" {
		return errdefs.ErrInvalidArgument
	}
	f.mu.Lock()
	f.cidr = cidr
	f.mu.Unlock()
	return nil
}

func (f *fakeNetwork) Check(_ context.Context, pod cni.Pod) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.checked = append(f.checked, pod)
	return f.checkErr
}

func startNetworkServer(t *testing.T, sbs Sandboxes, pn PodNetwork) runtime.RuntimeServiceClient {
	t.Helper()
	deps := testRuntimeDeps(newFakeImages())
	deps.Sandboxes, deps.Network = sbs, pn
	return serveRuntime(t, deps)
}

func networkCondition(t *testing.T, rc runtime.RuntimeServiceClient) *runtime.RuntimeCondition {
	t.Helper()
	st, err := rc.Status(context.Background(), &runtime.StatusRequest{})
	require.NoError(t, err)
	for _, c := range st.GetStatus().GetConditions() {
		if c.GetType() == runtime.NetworkReady {
			return c
		}
	}
	t.Fatal("no NetworkReady condition")
	return nil
}

func TestNetworkReadyFollowsThePodNetwork(t *testing.T) {
	pn := &fakeNetwork{notReady: errors.New("no valid CNI network config found in /etc/cni/net.d")}
	rc := startNetworkServer(t, newFakeSandboxes(), pn)
	c := networkCondition(t, rc)
	require.False(t, c.GetStatus())
	require.Equal(t, "NetworkPluginNotReady", c.GetReason())
	require.Contains(t, c.GetMessage(), "no valid CNI network config found in /etc/cni/net.d")

	pn.mu.Lock()
	pn.notReady = nil
	pn.mu.Unlock()
	c = networkCondition(t, rc)
	require.True(t, c.GetStatus())
	require.Empty(t, c.GetReason())

	// Without a pod network at all, never ready.
	c = networkCondition(t, startNetworkServer(t, newFakeSandboxes(), nil))
	require.False(t, c.GetStatus())
	require.NotEmpty(t, c.GetMessage())
}

func TestUpdateRuntimeConfigSetsPodCIDR(t *testing.T) {
	pn := &fakeNetwork{}
	rc := startNetworkServer(t, newFakeSandboxes(), pn)
	req := func(cidr string) *runtime.UpdateRuntimeConfigRequest {
		return &runtime.UpdateRuntimeConfigRequest{RuntimeConfig: &runtime.RuntimeConfig{
			NetworkConfig: &runtime.NetworkConfig{PodCidr: cidr}}}
	}
	_, err := rc.UpdateRuntimeConfig(context.Background(), req("10.244.1.0/24"))
	require.NoError(t, err)
	require.Equal(t, "10.244.1.0/24", pn.cidr)
	_, err = rc.UpdateRuntimeConfig(context.Background(), req("bad"))
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	require.Equal(t, "10.244.1.0/24", pn.cidr)
	// An empty request is kubelet's "nothing to say": accepted.
	_, err = rc.UpdateRuntimeConfig(context.Background(), &runtime.UpdateRuntimeConfigRequest{})
	require.NoError(t, err)
}

func TestVerbosePodSandboxStatusRunsCNICheck(t *testing.T) {
	sbs := newFakeSandboxes()
	pn := &fakeNetwork{}
	rc := startNetworkServer(t, sbs, pn)
	ctx := context.Background()
	attached, err := sbs.Run(ctx, sandbox.Config{Metadata: sandbox.Metadata{Name: "web", Namespace: "ns", UID: "u1"},
		PortMappings: []sandbox.PortMapping{{Protocol: "TCP", ContainerPort: 80, HostPort: 8080}}})
	require.NoError(t, err)
	sbs.mu.Lock()
	sbs.items[attached.ID].NetworkAttached = true
	sbs.items[attached.ID].NetNSPath = "/run/crid/sandboxes/x/netns"
	sbs.mu.Unlock()
	hostNet, err := sbs.Run(ctx, sandbox.Config{Metadata: sandbox.Metadata{Name: "h", Namespace: "ns"}})
	require.NoError(t, err)

	resp, err := rc.PodSandboxStatus(ctx, &runtime.PodSandboxStatusRequest{PodSandboxId: attached.ID, Verbose: true})
	require.NoError(t, err)
	var verdict string
	require.NoError(t, json.Unmarshal([]byte(resp.GetInfo()["networkCheck"]), &verdict))
	require.Equal(t, "ok", verdict)
	require.Len(t, pn.checked, 1)
	got := pn.checked[0]
	require.Equal(t, attached.ID, got.ID)
	require.Equal(t, "/run/crid/sandboxes/x/netns", got.NetNS)
	require.Equal(t, "web", got.Name)
	require.Equal(t, "ns", got.Namespace)
	require.Equal(t, "u1", got.UID)
	require.Equal(t, []cni.PortMapping{{Protocol: "TCP", ContainerPort: 80, HostPort: 8080}}, got.PortMappings)

	pn.checkErr = errors.New("veth gone")
	resp, err = rc.PodSandboxStatus(ctx, &runtime.PodSandboxStatusRequest{PodSandboxId: attached.ID, Verbose: true})
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal([]byte(resp.GetInfo()["networkCheck"]), &verdict))
	require.Equal(t, "veth gone", verdict)

	// Not verbose, or not attached: no CHECK.
	_, err = rc.PodSandboxStatus(ctx, &runtime.PodSandboxStatusRequest{PodSandboxId: attached.ID})
	require.NoError(t, err)
	resp, err = rc.PodSandboxStatus(ctx, &runtime.PodSandboxStatusRequest{PodSandboxId: hostNet.ID, Verbose: true})
	require.NoError(t, err)
	require.NotContains(t, resp.GetInfo(), "networkCheck")
	require.Len(t, pn.checked, 2)
}
