package cni

import (
	"fmt"
	"math"
	"math/big"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/containernetworking/cni/libcni"
)

// Pod is what CNI needs to know about a pod sandbox.
type Pod struct {
	// ID is the sandbox ID, CNI's container ID.
	ID string
	// NetNS is the path of the pod's network namespace. It may be gone
	// when tearing down; plugins then release what they can.
	NetNS string

	Name, Namespace, UID string

	// PortMappings are the pod's hostPorts (portMappings capability).
	// Mappings without a host port are not passed.
	PortMappings []PortMapping
	// Annotations may carry kubernetes.io/ingress-bandwidth and
	// kubernetes.io/egress-bandwidth (bandwidth capability).
	Annotations map[string]string
	// CgroupParent is the pod's cgroup (cgroupPath capability).
	CgroupParent string
}

// PortMapping publishes a container port on the node (portmap's DNAT).
type PortMapping struct {
	Protocol      string // tcp, udp or sctp (any case); empty is tcp
	ContainerPort int32
	HostPort      int32
	HostIP        string
}

// Annotations kubelet passes for pod traffic shaping, and the rates (in
// bits/s) kubelet's ExtractPodBandwidthResources accepts in them.
const (
	ingressBandwidthAnnotation = "kubernetes.io/ingress-bandwidth"
	egressBandwidthAnnotation  = "kubernetes.io/egress-bandwidth"

	minBandwidth = 1e3  // 1k
	maxBandwidth = 1e15 // 1P
)

// portMapEntry is the portmap plugin's runtimeConfig.portMappings entry.
type portMapEntry struct {
	HostPort      int32  `json:"hostPort"`
	ContainerPort int32  `json:"containerPort"`
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP,omitempty"`
}

// bandwidthEntry is the bandwidth plugin's runtimeConfig.bandwidth.
type bandwidthEntry struct {
	IngressRate  uint64 `json:"ingressRate,omitempty"`
	IngressBurst uint64 `json:"ingressBurst,omitempty"`
	EgressRate   uint64 `json:"egressRate,omitempty"`
	EgressBurst  uint64 `json:"egressBurst,omitempty"`
}

// runtimeConf is the libcni runtime config of pod on interface ifName.
// podCIDR, when set, is offered as the ipRanges capability.
func (p Pod) runtimeConf(ifName, podCIDR string) (*libcni.RuntimeConf, error) {
	rt := &libcni.RuntimeConf{
		ContainerID: p.ID,
		NetNS:       p.NetNS,
		IfName:      ifName,
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", p.Namespace},
			{"K8S_POD_NAME", p.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", p.ID},
			{"K8S_POD_UID", p.UID},
		},
		CapabilityArgs: map[string]interface{}{},
	}
	var ports []portMapEntry
	for _, pm := range p.PortMappings {
		if pm.HostPort <= 0 {
			continue
		}
		proto := strings.ToLower(pm.Protocol)
		if proto == "" {
			proto = "tcp"
		}
		ports = append(ports, portMapEntry{HostPort: pm.HostPort, ContainerPort: pm.ContainerPort, Protocol: proto, HostIP: pm.HostIP})
	}
	if len(ports) > 0 {
		rt.CapabilityArgs["portMappings"] = ports
	}
	bw, err := p.bandwidth()
	if err != nil {
		return nil, err
	}
	if bw != nil {
		rt.CapabilityArgs["bandwidth"] = bw
	}
	if p.CgroupParent != "" {
		rt.CapabilityArgs["cgroupPath"] = p.CgroupParent
	}
	if podCIDR != "" {
		rt.CapabilityArgs["ipRanges"] = [][]map[string]string{{{"subnet": podCIDR}}}
	}
	return rt, nil
}

// bandwidth reads the pod's bandwidth annotations; nil when it has none.
// Bursts are unlimited, as kubelet's dockershim and containerd set them.
func (p Pod) bandwidth() (*bandwidthEntry, error) {
	var bw bandwidthEntry
	for _, a := range []struct {
		key        string
		rate, burs *uint64
	}{
		{ingressBandwidthAnnotation, &bw.IngressRate, &bw.IngressBurst},
		{egressBandwidthAnnotation, &bw.EgressRate, &bw.EgressBurst},
	} {
		v, ok := p.Annotations[a.key]
		if !ok {
			continue
		}
		rate, err := parseQuantity(v)
		if err == nil && (rate < minBandwidth || rate > maxBandwidth) {
			// As kubelet validates it: the bandwidth plugin rejects a
			// zero rate with a burst, and tc tiny or huge rates.
			err = fmt.Errorf("not between %d and %d bits/s", uint64(minBandwidth), uint64(maxBandwidth))
		}
		if err != nil {
			return nil, fmt.Errorf("annotation %s=%q: %v: %w", a.key, v, err, errdefs.ErrInvalidArgument)
		}
		*a.rate, *a.burs = rate, math.MaxUint32
	}
	if bw == (bandwidthEntry{}) {
		return nil, nil
	}
	return &bw, nil
}

// parseQuantity parses a Kubernetes resource quantity as used by the
// bandwidth annotations ("10M", "1Gi", "500k", "1e6"), rounding up to an
// integer, the way resource.Quantity.Value does.
func parseQuantity(s string) (uint64, error) {
	suffixes := []struct {
		s string
		m int64
	}{
		{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40}, {"Pi", 1 << 50}, {"Ei", 1 << 60},
		{"k", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12}, {"P", 1e15}, {"E", 1e18},
	}
	num, mult := s, int64(1)
	for _, suf := range suffixes {
		if strings.HasSuffix(s, suf.s) {
			num, mult = strings.TrimSuffix(s, suf.s), suf.m
			break
		}
	}
	if num == "" || strings.ContainsAny(num, "-+/") {
		return 0, fmt.Errorf("not a non-negative quantity")
	}
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, fmt.Errorf("not a quantity")
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	q, rem := new(big.Int).QuoRem(r.Num(), r.Denom(), new(big.Int))
	if rem.Sign() != 0 {
		q.Add(q, big.NewInt(1))
	}
	if !q.IsUint64() || q.Uint64() > math.MaxInt64 {
		return 0, fmt.Errorf("out of range")
	}
	return q.Uint64(), nil
}
