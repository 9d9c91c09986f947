package cni

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"sync"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
)

// fakeReencode converts a JSON-decoded value into out.
func fakeReencode(t *testing.T, v any, out any) {
	t.Helper()
	data, err := json.Marshal(v)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(data, out))
}

func TestSetupReturnsPodIPsIPv4First(t *testing.T) {
	e := newFakeEnv(t)
	// Interface 0 is the host side of a veth (no sandbox); its address
	// is not the pod's. The address without an interface is the pod's.
	e.plugin("net", fakeOpts{result: `{"cniVersion":"1.0.0",
		"interfaces":[{"name":"veth1"},{"name":"eth0","sandbox":"/x"}],
		"ips":[
			{"interface":1,"address":"fd00::5/64"},
			{"interface":0,"address":"10.9.9.9/24"},
			{"interface":0,"address":"fd00::9/64"},
			{"interface":1,"address":"10.1.2.3/24"},
			{"interface":7,"address":"10.7.7.7/24"},
			{"address":"10.1.2.4/24"},
			{"interface":1,"address":"fd00::6/64"}
		]}`})
	e.conf("10-net.conflist", fakeConflist("podnet", "1.0.0", `{"type":"net"}`))
	m := e.manager()

	res, err := m.Setup(fakeContext(t), fakePod("p1"))
	require.NoError(t, err)
	require.Equal(t, Result{Network: "podnet", IPs: []string{"10.1.2.3", "10.1.2.4", "fd00::5", "fd00::6"}}, res)
}

func TestSetupFailsWithoutPodIP(t *testing.T) {
	e := newFakeEnv(t)
	e.plugin("net", fakeOpts{result: `{"cniVersion":"1.0.0","interfaces":[{"name":"veth1"}],"ips":[{"interface":0,"address":"10.9.9.9/24"}]}`})
	e.conf("10-net.conflist", fakeConflist("podnet", "1.0.0", `{"type":"net"}`))
	m := e.manager()

	_, err := m.Setup(fakeContext(t), fakePod("p1"))
	require.ErrorContains(t, err, "no IP address for the pod")
	require.Len(t, e.callsOf("net", "DEL", "p1"), 1, "the attachment is deleted again")
	require.Empty(t, e.cached())
}

func TestSetupPassesPodArgs(t *testing.T) {
	e := newFakeEnv(t)
	m := e.podnetManager()
	pod := Pod{ID: "abc123", NetNS: "/run/netns/cni-1", Name: "web-0", Namespace: "prod", UID: "0b7c-uid"}

	_, err := m.Setup(fakeContext(t), pod)
	require.NoError(t, err)

	wantArgs := map[string]string{
		"IgnoreUnknown":              "1",
		"K8S_POD_NAMESPACE":          "prod",
		"K8S_POD_NAME":               "web-0",
		"K8S_POD_INFRA_CONTAINER_ID": "abc123",
		"K8S_POD_UID":                "0b7c-uid",
	}
	adds := e.callsOf("net", "ADD", "")
	require.Len(t, adds, 1)
	c := adds[0]
	require.Equal(t, "abc123", c.ContainerID)
	require.Equal(t, "/run/netns/cni-1", c.NetNS)
	require.Equal(t, "eth0", c.IfName)
	require.Equal(t, e.binDir, c.Env["CNI_PATH"])
	for k, v := range wantArgs {
		got, ok := c.arg(k)
		require.True(t, ok, "CNI_ARGS %q lacks %s", c.Args, k)
		require.Equal(t, v, got, k)
	}
	require.Equal(t, "podnet", c.conf(t)["name"])
	require.Equal(t, "1.0.0", c.conf(t)["cniVersion"])

	los := e.callsOf("loopback", "ADD", "")
	require.Len(t, los, 1)
	lo := los[0]
	require.Equal(t, "lo", lo.IfName)
	require.Equal(t, "abc123", lo.ContainerID)
	require.Equal(t, "/run/netns/cni-1", lo.NetNS)
	require.Equal(t, "cni-loopback", lo.conf(t)["name"])
	for k, v := range wantArgs {
		got, _ := lo.arg(k)
		require.Equal(t, v, got, k)
	}

	require.ElementsMatch(t, []string{"podnet-abc123-eth0", "cni-loopback-abc123-lo"}, e.cached())
}

func TestSetupIfName(t *testing.T) {
	e := newFakeEnv(t)
	e.plugin("net", fakeOpts{})
	e.conf("10-net.conflist", fakeConflist("podnet", "1.0.0", `{"type":"net"}`))
	opts := e.options()
	opts.IfName = "net0"
	m, err := New(opts)
	require.NoError(t, err)

	_, err = m.Setup(fakeContext(t), fakePod("p1"))
	require.NoError(t, err)
	adds := e.callsOf("net", "ADD", "p1")
	require.Len(t, adds, 1)
	require.Equal(t, "net0", adds[0].IfName)
}

func TestSetupCapabilityArgs(t *testing.T) {
	e := newFakeEnv(t)
	for _, p := range []string{"net", "portmap", "bandwidth", "cgroup", "plain"} {
		e.plugin(p, fakeOpts{})
	}
	e.conf("10-net.conflist", fakeConflist("podnet", "1.0.0",
		`{"type":"net","capabilities":{"ipRanges":true}}`,
		`{"type":"portmap","capabilities":{"portMappings":true}}`,
		`{"type":"bandwidth","capabilities":{"bandwidth":true}}`,
		`{"type":"cgroup","capabilities":{"cgroupPath":true,"portMappings":false}}`,
		`{"type":"plain"}`,
	))
	m := e.manager()
	require.NoError(t, m.SetPodCIDR("10.244.1.0/24"))
	pod := fakePod("p1")
	pod.PortMappings = []PortMapping{
		{Protocol: "TCP", ContainerPort: 80, HostPort: 8080},
		{Protocol: "UDP", ContainerPort: 53, HostPort: 5353, HostIP: "127.0.0.1"},
		{ContainerPort: 9000, HostPort: 9001},
		{Protocol: "SCTP", ContainerPort: 7000, HostPort: 7001},
		{Protocol: "tcp", ContainerPort: 81}, // no host port: not published
	}
	pod.Annotations = map[string]string{
		"kubernetes.io/ingress-bandwidth": "10M",
		"kubernetes.io/egress-bandwidth":  "1Gi",
		"unrelated":                       "x",
	}
	pod.CgroupParent = "/kubepods/pod-uid"

	_, err := m.Setup(fakeContext(t), pod)
	require.NoError(t, err)

	rc := func(plugin string) map[string]any {
		adds := e.callsOf(plugin, "ADD", "p1")
		require.Len(t, adds, 1, plugin)
		return adds[0].runtimeConfig(t)
	}

	net := rc("net")
	require.Len(t, net, 1, "net declares only ipRanges: %v", net)
	var ranges [][]map[string]string
	fakeReencode(t, net["ipRanges"], &ranges)
	require.Equal(t, [][]map[string]string{{{"subnet": "10.244.1.0/24"}}}, ranges)

	pm := rc("portmap")
	require.Len(t, pm, 1, "portmap declares only portMappings: %v", pm)
	var ports []map[string]any
	fakeReencode(t, pm["portMappings"], &ports)
	require.Equal(t, []map[string]any{
		{"hostPort": 8080.0, "containerPort": 80.0, "protocol": "tcp"},
		{"hostPort": 5353.0, "containerPort": 53.0, "protocol": "udp", "hostIP": "127.0.0.1"},
		{"hostPort": 9001.0, "containerPort": 9000.0, "protocol": "tcp"},
		{"hostPort": 7001.0, "containerPort": 7000.0, "protocol": "sctp"},
	}, ports)

	bw := rc("bandwidth")
	require.Len(t, bw, 1, "bandwidth declares only bandwidth: %v", bw)
	var gotBW map[string]uint64
	fakeReencode(t, bw["bandwidth"], &gotBW)
	require.Equal(t, map[string]uint64{
		"ingressRate":  10_000_000,
		"ingressBurst": math.MaxUint32,
		"egressRate":   1 << 30,
		"egressBurst":  math.MaxUint32,
	}, gotBW)

	cg := rc("cgroup")
	require.Equal(t, map[string]any{"cgroupPath": "/kubepods/pod-uid"}, cg, "a capability declared false is not passed")

	require.Nil(t, rc("plain"), "a plugin without capabilities gets no runtimeConfig")

	los := e.callsOf("loopback", "ADD", "p1")
	require.Len(t, los, 1)
	require.Nil(t, los[0].runtimeConfig(t), "loopback gets no capability args")
}

func TestSetupWithoutCapabilityArgs(t *testing.T) {
	e := newFakeEnv(t)
	e.plugin("net", fakeOpts{})
	e.plugin("portmap", fakeOpts{})
	e.conf("10-net.conflist", fakeConflist("podnet", "1.0.0",
		`{"type":"net","capabilities":{"ipRanges":true,"bandwidth":true,"cgroupPath":true}}`,
		`{"type":"portmap","capabilities":{"portMappings":true}}`,
	))
	m := e.manager()
	pod := fakePod("p1")
	pod.PortMappings = []PortMapping{{Protocol: "TCP", ContainerPort: 80}, {ContainerPort: 81, HostPort: -1}}

	_, err := m.Setup(fakeContext(t), pod)
	require.NoError(t, err)
	for _, p := range []string{"net", "portmap"} {
		adds := e.callsOf(p, "ADD", "p1")
		require.Len(t, adds, 1)
		require.Nil(t, adds[0].runtimeConfig(t), p)
	}
}

func TestSetPodCIDR(t *testing.T) {
	e := newFakeEnv(t)
	e.plugin("net", fakeOpts{})
	e.conf("10-net.conflist", fakeConflist("podnet", "1.0.0", `{"type":"net","capabilities":{"ipRanges":true}}`))
	m := e.manager()
	ctx := fakeContext(t)

	for _, bad := range []string{"garbage", "10.0.0.1", "10.0.0.0/33", "fd00::/129", " 10.0.0.0/8"} {
		err := m.SetPodCIDR(bad)
		require.Error(t, err, bad)
		require.True(t, errdefs.IsInvalidArgument(err), "%q: %v", bad, err)
	}

	ipRanges := func(id string) any {
		_, err := m.Setup(ctx, fakePod(id))
		require.NoError(t, err)
		adds := e.callsOf("net", "ADD", id)
		require.Len(t, adds, 1)
		return adds[0].runtimeConfig(t)["ipRanges"]
	}
	require.Nil(t, ipRanges("before"), "no pod CIDR yet; the rejected ones were not recorded")

	require.NoError(t, m.SetPodCIDR("fd00:10::/64"))
	var ranges [][]map[string]string
	fakeReencode(t, ipRanges("v6"), &ranges)
	require.Equal(t, [][]map[string]string{{{"subnet": "fd00:10::/64"}}}, ranges)

	require.Error(t, m.SetPodCIDR("nope"))
	fakeReencode(t, ipRanges("kept"), &ranges)
	require.Equal(t, [][]map[string]string{{{"subnet": "fd00:10::/64"}}}, ranges, "a rejected CIDR keeps the previous one")

	require.NoError(t, m.SetPodCIDR(""))
	require.Nil(t, ipRanges("cleared"))
}

func TestSetupNotReady(t *testing.T) {
	e := newFakeEnv(t)
	m := e.manager()

	_, err := m.Setup(fakeContext(t), fakePod("p1"))
	require.Error(t, err)
	require.ErrorIs(t, err, ErrNotReady)
	require.True(t, errdefs.IsFailedPrecondition(err), "%v", err)
	require.ErrorContains(t, err, "no valid CNI network config")
	require.Empty(t, e.calls())
	require.Empty(t, e.cached())
}

func TestSetupRejectsInvalidPod(t *testing.T) {
	e := newFakeEnv(t)
	m := e.podnetManager()
	ctx := fakeContext(t)

	badBW := fakePod("p1")
	badBW.Annotations = map[string]string{"kubernetes.io/egress-bandwidth": "lots"}
	for _, tc := range []struct {
		desc string
		pod  Pod
	}{
		{desc: "no ID", pod: Pod{NetNS: "/run/netns/x"}},
		{desc: "no netns", pod: Pod{ID: "p1"}},
		{desc: "bad bandwidth annotation", pod: badBW},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			_, err := m.Setup(ctx, tc.pod)
			require.Error(t, err)
			require.True(t, errdefs.IsInvalidArgument(err), "%v", err)
		})
	}
	require.Empty(t, e.calls(), "no plugin ran")
	require.Empty(t, e.cached())
}

func TestSetupAddFailureDeletesAttachment(t *testing.T) {
	e := newFakeEnv(t)
	e.plugin("first", fakeOpts{})
	e.plugin("failing", fakeOpts{failAdd: true})
	e.conf("10-net.conflist", fakeConflist("podnet", "1.0.0", `{"type":"first"}`, `{"type":"failing"}`))
	m := e.manager()
	pod := fakePod("p1")

	_, err := m.Setup(fakeContext(t), pod)
	require.Error(t, err)
	require.ErrorContains(t, err, "fake ADD failure")
	require.ErrorContains(t, err, `network "podnet"`)

	// Both plugins of the list got DEL, the last one first, for the pod,
	// and the loopback attachment, which succeeded, was deleted too.
	var dels []string
	for _, c := range e.calls() {
		if c.Command == "DEL" {
			require.Equal(t, "p1", c.ContainerID)
			require.Equal(t, pod.NetNS, c.NetNS)
			dels = append(dels, c.Plugin)
		}
	}
	require.ElementsMatch(t, []string{"failing", "first", "loopback"}, dels)
	require.Less(t, fakeIndexOf(dels, "failing"), fakeIndexOf(dels, "first"))
	require.Empty(t, e.cached(), "nothing is left in the cache")

	// A later Teardown (the sandbox's cleanup) is still fine.
	require.NoError(t, m.Teardown(fakeContext(t), pod))
}

func TestSetupLoopbackFailureDeletesAttachment(t *testing.T) {
	e := newFakeEnv(t)
	e.plugin("net", fakeOpts{})
	e.plugin("loopback", fakeOpts{failAdd: true})
	e.conf("10-net.conflist", fakeConflist("podnet", "1.0.0", `{"type":"net"}`))
	m := e.manager()

	_, err := m.Setup(fakeContext(t), fakePod("p1"))
	require.Error(t, err)
	require.ErrorContains(t, err, "loopback")
	require.Len(t, e.callsOf("net", "DEL", "p1"), 1, "the pod network attachment is deleted")
	require.Empty(t, e.cached())
}

func TestSetupAddAndDelFailureReportsBoth(t *testing.T) {
	e := newFakeEnv(t)
	e.plugin("net", fakeOpts{failAdd: true, failDel: true})
	e.conf("10-net.conflist", fakeConflist("podnet", "1.0.0", `{"type":"net"}`))
	m := e.manager()

	_, err := m.Setup(fakeContext(t), fakePod("p1"))
	require.ErrorContains(t, err, "fake ADD failure")
	require.ErrorContains(t, err, "fake DEL failure")
}

func fakeIndexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

func TestSetupCanceledContextStillCleansUp(t *testing.T) {
	e := newFakeEnv(t)
	m := e.podnetManager()
	ctx, cancel := context.WithCancel(fakeContext(t))
	cancel()

	_, err := m.Setup(ctx, fakePod("p1"))
	require.Error(t, err)
	require.Len(t, e.callsOf("net", "DEL", "p1"), 1, "the cleanup DEL runs without the canceled context")
	require.Empty(t, e.cached())
}

// fakeOrigSetup attaches pod p1 to network "orig" (plugin origplug, which
// takes port mappings) and returns the pod.
func fakeOrigSetup(t *testing.T, e *fakeEnv, m *Manager) Pod {
	t.Helper()
	e.plugin("origplug", fakeOpts{})
	e.plugin("newplug", fakeOpts{})
	e.conf("10-net.conflist", fakeConflist("orig", "1.0.0", `{"type":"origplug","capabilities":{"portMappings":true},"orig":"yes"}`))
	pod := fakePod("p1")
	pod.PortMappings = []PortMapping{{Protocol: "UDP", ContainerPort: 53, HostPort: 5353}}
	_, err := m.Setup(fakeContext(t), pod)
	require.NoError(t, err)
	e.resetCalls()
	return pod
}

func fakeRequireOrigDel(t *testing.T, e *fakeEnv, pod Pod) {
	t.Helper()
	dels := e.callsOf("origplug", "DEL", pod.ID)
	require.Len(t, dels, 1)
	c := dels[0]
	conf := c.conf(t)
	require.Equal(t, "orig", conf["name"])
	require.Equal(t, "yes", conf["orig"])
	require.NotNil(t, conf["prevResult"], "the cached result is passed to DEL")
	var ports []map[string]any
	fakeReencode(t, c.runtimeConfig(t)["portMappings"], &ports)
	require.Equal(t, []map[string]any{{"hostPort": 5353.0, "containerPort": 53.0, "protocol": "udp"}}, ports)
	require.Equal(t, "eth0", c.IfName)
	require.Equal(t, pod.NetNS, c.NetNS)
	name, _ := c.arg("K8S_POD_NAME")
	require.Equal(t, pod.Name, name)

	los := e.callsOf("loopback", "DEL", pod.ID)
	require.Len(t, los, 1)
	require.Equal(t, "lo", los[0].IfName)
	require.Empty(t, e.cached())
}

func TestTeardownUsesCachedConfigAfterConfChange(t *testing.T) {
	e := newFakeEnv(t)
	m := e.manager()
	pod := fakeOrigSetup(t, e, m)
	e.conf("10-net.conflist", fakeConflist("other", "1.0.0", `{"type":"newplug"}`))
	ctx := fakeContext(t)
	require.Equal(t, "other", m.Network(ctx))

	// Teardown is given the pod without its port mappings: they come
	// from the cache.
	require.NoError(t, m.Teardown(ctx, Pod{ID: pod.ID, NetNS: pod.NetNS}))
	fakeRequireOrigDel(t, e, pod)
	// The current network gets a DEL too, since nothing was cached for it
	// (DEL of what was never added is a no-op for plugins).
	news := e.callsOf("newplug", "DEL", pod.ID)
	require.Len(t, news, 1)
	require.Equal(t, "other", news[0].conf(t)["name"])
}

func TestTeardownUsesCachedConfigAfterConfRemoved(t *testing.T) {
	e := newFakeEnv(t)
	m := e.manager()
	pod := fakeOrigSetup(t, e, m)
	require.NoError(t, os.RemoveAll(e.confDir))
	ctx := fakeContext(t)
	require.Error(t, m.Status(ctx))

	require.NoError(t, m.Teardown(ctx, pod))
	fakeRequireOrigDel(t, e, pod)
	require.Empty(t, e.callsOf("newplug", "DEL", ""))
}

func TestTeardownUsesCachedNetNSWhenNoneGiven(t *testing.T) {
	e := newFakeEnv(t)
	m := e.manager()
	pod := fakeOrigSetup(t, e, m)

	require.NoError(t, m.Teardown(fakeContext(t), Pod{ID: pod.ID}))
	dels := e.callsOf("origplug", "DEL", pod.ID)
	require.Len(t, dels, 1)
	require.Equal(t, pod.NetNS, dels[0].NetNS)
}

func TestTeardownNeverAttachedPod(t *testing.T) {
	e := newFakeEnv(t)
	m := e.podnetManager()
	pod := fakePod("never")

	require.NoError(t, m.Teardown(fakeContext(t), pod))
	dels := e.callsOf("net", "DEL", "never")
	require.Len(t, dels, 1, "DEL on the current network, in case an ADD allocated before failing")
	require.Equal(t, "podnet", dels[0].conf(t)["name"])
	require.Equal(t, pod.NetNS, dels[0].NetNS)
	uid, _ := dels[0].arg("K8S_POD_UID")
	require.Equal(t, pod.UID, uid)
	require.Empty(t, e.cached())
}

func TestTeardownNotReadyAndNeverAttached(t *testing.T) {
	e := newFakeEnv(t)
	m := e.manager()
	require.NoError(t, m.Teardown(fakeContext(t), fakePod("never")))
	require.Empty(t, e.calls())
}

func TestTeardownTwice(t *testing.T) {
	e := newFakeEnv(t)
	m := e.podnetManager()
	ctx := fakeContext(t)
	pod := fakePod("p1")
	_, err := m.Setup(ctx, pod)
	require.NoError(t, err)

	require.NoError(t, m.Teardown(ctx, pod))
	require.Empty(t, e.cached())
	require.Len(t, e.callsOf("net", "DEL", "p1"), 1)
	require.Len(t, e.callsOf("loopback", "DEL", "p1"), 1)

	require.NoError(t, m.Teardown(ctx, pod))
	require.Len(t, e.callsOf("net", "DEL", "p1"), 2, "the second Teardown repeats DEL on the network")
	require.Empty(t, e.cached())
}

func TestTeardownKeepsOtherPods(t *testing.T) {
	e := newFakeEnv(t)
	m := e.podnetManager()
	ctx := fakeContext(t)
	// p1 is a prefix of p10: their cache files must not be confused.
	for _, id := range []string{"p1", "p10"} {
		_, err := m.Setup(ctx, fakePod(id))
		require.NoError(t, err)
	}

	require.NoError(t, m.Teardown(ctx, fakePod("p1")))
	require.ElementsMatch(t, []string{"podnet-p10-eth0", "cni-loopback-p10-lo"}, e.cached())
	require.Empty(t, e.callsOf("net", "DEL", "p10"))
}

func TestTeardownReportsDelFailureAndKeepsCache(t *testing.T) {
	e := newFakeEnv(t)
	e.plugin("net", fakeOpts{failDel: true})
	e.conf("10-net.conflist", fakeConflist("podnet", "1.0.0", `{"type":"net"}`))
	m := e.manager()
	ctx := fakeContext(t)
	pod := fakePod("p1")
	_, err := m.Setup(ctx, pod)
	require.NoError(t, err)

	err = m.Teardown(ctx, pod)
	require.ErrorContains(t, err, "fake DEL failure")
	require.Equal(t, []string{"podnet-p1-eth0"}, e.cached(), "the failed attachment stays for the retry")

	e.plugin("net", fakeOpts{})
	require.NoError(t, m.Teardown(ctx, pod))
	require.Empty(t, e.cached())
}

func TestTeardownRejectsMissingID(t *testing.T) {
	e := newFakeEnv(t)
	err := e.manager().Teardown(fakeContext(t), Pod{NetNS: "/x"})
	require.True(t, errdefs.IsInvalidArgument(err), "%v", err)
}

func TestCheck(t *testing.T) {
	e := newFakeEnv(t)
	m := e.podnetManager()
	ctx := fakeContext(t)
	pod := fakePod("p1")
	_, err := m.Setup(ctx, pod)
	require.NoError(t, err)

	require.NoError(t, m.Check(ctx, pod))
	checks := e.callsOf("net", "CHECK", "p1")
	require.Len(t, checks, 1)
	require.NotNil(t, checks[0].conf(t)["prevResult"])
	require.Len(t, e.callsOf("loopback", "CHECK", "p1"), 1)

	err = m.Check(ctx, fakePod("unknown"))
	require.True(t, errdefs.IsNotFound(err), "%v", err)

	err = m.Check(ctx, Pod{})
	require.True(t, errdefs.IsInvalidArgument(err), "%v", err)
	require.Len(t, e.callsOf("net", "CHECK", ""), 1, "no pod was checked for an empty ID")
}

func TestGCDeletesAttachmentsOfDeadPods(t *testing.T) {
	e := newFakeEnv(t)
	m := e.podnetManager()
	ctx := fakeContext(t)
	for _, id := range []string{"a", "b", "c"} {
		_, err := m.Setup(ctx, fakePod(id))
		require.NoError(t, err)
	}
	e.resetCalls()

	gone, err := m.GC(ctx, map[string]bool{"b": true, "unattached": true})
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"a", "c"}, gone)

	for _, id := range []string{"a", "c"} {
		dels := e.callsOf("net", "DEL", id)
		require.Len(t, dels, 1, id)
		require.Equal(t, "/var/run/netns/"+id, dels[0].NetNS, "the cached netns path")
		require.Len(t, e.callsOf("loopback", "DEL", id), 1, id)
	}
	require.Empty(t, e.callsOf("net", "DEL", "b"))
	require.Empty(t, e.callsOf("loopback", "DEL", "b"))
	require.Empty(t, e.callsOf("net", "GC", ""), "no GC verb before CNI 1.1.0")
	require.ElementsMatch(t, []string{"podnet-b-eth0", "cni-loopback-b-lo"}, e.cached())

	gone, err = m.GC(ctx, map[string]bool{"b": true})
	require.NoError(t, err)
	require.Empty(t, gone, "nothing left to collect")
}

func TestGCUsesCachedConfigAfterConfRemoved(t *testing.T) {
	e := newFakeEnv(t)
	m := e.manager()
	pod := fakeOrigSetup(t, e, m)
	require.NoError(t, os.RemoveAll(e.confDir))

	gone, err := m.GC(fakeContext(t), nil)
	require.NoError(t, err)
	require.Equal(t, []string{pod.ID}, gone)
	fakeRequireOrigDel(t, e, pod)
}

func TestGCSendsValidAttachments(t *testing.T) {
	e := newFakeEnv(t)
	e.plugin("net", fakeOpts{})
	e.plugin("portmap", fakeOpts{})
	e.conf("10-net.conflist", fakeConflist("podnet", "1.1.0", `{"type":"net"}`, `{"type":"portmap"}`))
	m := e.manager()
	ctx := fakeContext(t)
	for _, id := range []string{"a", "b"} {
		_, err := m.Setup(ctx, fakePod(id))
		require.NoError(t, err)
	}
	e.resetCalls()

	gone, err := m.GC(ctx, map[string]bool{"zz": true, "a": true})
	require.NoError(t, err)
	require.Equal(t, []string{"b"}, gone)
	require.Len(t, e.callsOf("net", "DEL", "b"), 1)
	require.Empty(t, e.callsOf("net", "DEL", "a"))

	for _, p := range []string{"net", "portmap"} {
		gcs := e.callsOf(p, "GC", "")
		require.Len(t, gcs, 1, p)
		conf := gcs[0].conf(t)
		require.Equal(t, "podnet", conf["name"])
		require.Equal(t, "1.1.0", conf["cniVersion"])
		var valid []map[string]string
		fakeReencode(t, conf["cni.dev/valid-attachments"], &valid)
		require.Equal(t, []map[string]string{
			{"containerID": "a", "ifname": "eth0"},
			{"containerID": "zz", "ifname": "eth0"},
		}, valid, p)
	}
	require.ElementsMatch(t, []string{"podnet-a-eth0", "cni-loopback-a-lo"}, e.cached())
}

func TestGCReportsDelFailure(t *testing.T) {
	e := newFakeEnv(t)
	m := e.podnetManager()
	ctx := fakeContext(t)
	_, err := m.Setup(ctx, fakePod("a"))
	require.NoError(t, err)
	e.plugin("net", fakeOpts{failDel: true})

	gone, err := m.GC(ctx, nil)
	require.ErrorContains(t, err, "fake DEL failure")
	require.NotContains(t, gone, "a", "a pod whose DEL failed is not reported gone")
	require.Contains(t, e.cached(), "podnet-a-eth0")
}

// TestSetupConcurrentAcrossPods shows that calls for different pods are
// not serialized: the plugin of each pod's ADD waits (bounded) until the
// other pod's ADD is running, which it can only see if both run at once.
func TestSetupConcurrentAcrossPods(t *testing.T) {
	e := newFakeEnv(t)
	e.plugin("net", fakeOpts{mark: true, waitOther: true})
	e.conf("10-net.conflist", fakeConflist("podnet", "1.0.0", `{"type":"net"}`))
	m := e.manager()
	ctx := fakeContext(t)

	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, id := range []string{"a", "b"} {
		wg.Go(func() {
			_, errs[i] = m.Setup(ctx, fakePod(id))
		})
	}
	wg.Wait()
	require.NoError(t, errors.Join(errs...))

	adds := e.callsOf("net", "ADD", "")
	require.Len(t, adds, 2)
	for _, c := range adds {
		require.Equal(t, "1", c.Env["OTHER_OVERLAP"], "ADD of %s ran while the other pod's ran", c.ContainerID)
		require.Equal(t, "0", c.Env["SAME_OVERLAP"])
	}
	require.Empty(t, m.locks.locks, "no lock left behind")
}

// TestCallsForOnePodAreSerialized runs Setups, Teardowns and a Check for
// one pod at once: the plugin records whether another ADD, DEL or CHECK
// for the same pod was running while it ran (for about 300ms).
func TestCallsForOnePodAreSerialized(t *testing.T) {
	e := newFakeEnv(t)
	e.plugin("net", fakeOpts{mark: true})
	e.conf("10-net.conflist", fakeConflist("podnet", "1.0.0", `{"type":"net"}`))
	m := e.manager()
	ctx := fakeContext(t)
	pod := fakePod("p1")

	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	record := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	for range 2 {
		wg.Go(func() { _, err := m.Setup(ctx, pod); record(err) })
		wg.Go(func() { record(m.Teardown(ctx, pod)) })
	}
	wg.Go(func() {
		if err := m.Check(ctx, pod); err != nil && !errdefs.IsNotFound(err) {
			record(err)
		}
	})
	wg.Wait()
	require.NoError(t, errors.Join(errs...))

	var marked int
	for _, c := range e.calls() {
		if c.Plugin != "net" {
			continue
		}
		require.Equal(t, "0", c.Env["SAME_OVERLAP"], "%s of p1 overlapped another call for p1", c.Command)
		if c.Command == "ADD" || c.Command == "DEL" {
			marked++
		}
	}
	require.GreaterOrEqual(t, marked, 4, "2 ADDs and at least 2 DELs")
	require.Empty(t, m.locks.locks, "no lock left behind")
}
