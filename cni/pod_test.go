package cni

import (
	"math"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
)

func TestParseQuantity(t *testing.T) {
	for _, tc := range []struct {
		desc    string
		in      string
		want    uint64
		wantErr bool
	}{
		{desc: "decimal mega", in: "10M", want: 10_000_000},
		{desc: "binary giga", in: "1Gi", want: 1 << 30},
		{desc: "binary kilo", in: "1Ki", want: 1024},
		{desc: "binary mega", in: "3Mi", want: 3 << 20},
		{desc: "decimal kilo", in: "500k", want: 500_000},
		{desc: "exponent", in: "1e6", want: 1_000_000},
		{desc: "upper-case exponent", in: "2E3", want: 2000},
		{desc: "fraction with suffix", in: "1.5M", want: 1_500_000},
		{desc: "fraction rounds up", in: "0.1", want: 1},
		{desc: "fraction with suffix rounds up", in: "1.0001k", want: 1001},
		{desc: "plain integer", in: "123456", want: 123456},
		{desc: "zero", in: "0", want: 0},
		{desc: "decimal tera", in: "2T", want: 2_000_000_000_000},
		{desc: "decimal exa", in: "1E", want: 1_000_000_000_000_000_000},
		{desc: "garbage", in: "garbage", wantErr: true},
		{desc: "empty", in: "", wantErr: true},
		{desc: "suffix only", in: "M", wantErr: true},
		{desc: "negative", in: "-1M", wantErr: true},
		{desc: "explicit plus", in: "+1M", wantErr: true},
		{desc: "ratio", in: "1/2", wantErr: true},
		{desc: "negative exponent sign", in: "1e-3", wantErr: true},
		{desc: "unknown suffix", in: "10X", wantErr: true},
		{desc: "milli is not a bandwidth unit", in: "10m", wantErr: true},
		{desc: "space", in: "10 M", wantErr: true},
		{desc: "beyond int64", in: "16Ei", wantErr: true},
		{desc: "beyond uint64", in: "100E", wantErr: true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			got, err := parseQuantity(tc.in)
			if tc.wantErr {
				require.Error(t, err, "parseQuantity(%q) = %d", tc.in, got)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestBandwidth(t *testing.T) {
	for _, tc := range []struct {
		desc        string
		annotations map[string]string
		want        *bandwidthEntry
		wantErr     bool
	}{
		{desc: "no annotations"},
		{desc: "unrelated annotations", annotations: map[string]string{"kubernetes.io/ingress": "10M"}},
		{
			desc:        "both",
			annotations: map[string]string{ingressBandwidthAnnotation: "10M", egressBandwidthAnnotation: "1Gi"},
			want:        &bandwidthEntry{IngressRate: 10_000_000, IngressBurst: math.MaxUint32, EgressRate: 1 << 30, EgressBurst: math.MaxUint32},
		},
		{
			desc:        "ingress only",
			annotations: map[string]string{ingressBandwidthAnnotation: "1.5M"},
			want:        &bandwidthEntry{IngressRate: 1_500_000, IngressBurst: math.MaxUint32},
		},
		{
			desc:        "egress only",
			annotations: map[string]string{egressBandwidthAnnotation: "500k"},
			want:        &bandwidthEntry{EgressRate: 500_000, EgressBurst: math.MaxUint32},
		},
		{desc: "garbage", annotations: map[string]string{ingressBandwidthAnnotation: "fast"}, wantErr: true},
		{desc: "negative", annotations: map[string]string{egressBandwidthAnnotation: "-10M"}, wantErr: true},
		{desc: "zero", annotations: map[string]string{ingressBandwidthAnnotation: "0"}, wantErr: true},
		{desc: "below 1k", annotations: map[string]string{egressBandwidthAnnotation: "999"}, wantErr: true},
		{desc: "above 1P", annotations: map[string]string{ingressBandwidthAnnotation: "2P"}, wantErr: true},
		{
			desc:        "bounds are allowed",
			annotations: map[string]string{ingressBandwidthAnnotation: "1k", egressBandwidthAnnotation: "1P"},
			want:        &bandwidthEntry{IngressRate: 1000, IngressBurst: math.MaxUint32, EgressRate: 1e15, EgressBurst: math.MaxUint32},
		},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			got, err := Pod{Annotations: tc.annotations}.bandwidth()
			if tc.wantErr {
				require.Error(t, err)
				require.True(t, errdefs.IsInvalidArgument(err), "%v", err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestRuntimeConf(t *testing.T) {
	pod := Pod{
		ID: "sb1", NetNS: "/run/netns/sb1", Name: "web", Namespace: "default", UID: "u-1",
		PortMappings: []PortMapping{
			{Protocol: "Udp", ContainerPort: 53, HostPort: 53, HostIP: "::1"},
			{ContainerPort: 80},
			{ContainerPort: 443, HostPort: 8443},
		},
		Annotations:  map[string]string{egressBandwidthAnnotation: "10M"},
		CgroupParent: "/kubepods/burstable/podu-1",
	}
	rt, err := pod.runtimeConf("eth0", "10.244.0.0/16")
	require.NoError(t, err)
	require.Equal(t, "sb1", rt.ContainerID)
	require.Equal(t, "/run/netns/sb1", rt.NetNS)
	require.Equal(t, "eth0", rt.IfName)
	require.Equal(t, [][2]string{
		{"IgnoreUnknown", "1"},
		{"K8S_POD_NAMESPACE", "default"},
		{"K8S_POD_NAME", "web"},
		{"K8S_POD_INFRA_CONTAINER_ID", "sb1"},
		{"K8S_POD_UID", "u-1"},
	}, rt.Args)
	require.Equal(t, map[string]interface{}{
		"portMappings": []portMapEntry{
			{HostPort: 53, ContainerPort: 53, Protocol: "udp", HostIP: "::1"},
			{HostPort: 8443, ContainerPort: 443, Protocol: "tcp"},
		},
		"bandwidth":  &bandwidthEntry{EgressRate: 10_000_000, EgressBurst: math.MaxUint32},
		"cgroupPath": "/kubepods/burstable/podu-1",
		"ipRanges":   [][]map[string]string{{{"subnet": "10.244.0.0/16"}}},
	}, rt.CapabilityArgs)

	rt, err = Pod{ID: "sb2", NetNS: "/x"}.runtimeConf("eth0", "")
	require.NoError(t, err)
	require.Empty(t, rt.CapabilityArgs, "no capability args for a pod without ports, bandwidth or cgroup")
}
