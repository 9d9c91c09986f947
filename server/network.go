package server

import (
	"context"
	"errors"

	"github.com/crid-dev/crid/cni"
	"github.com/crid-dev/crid/sandbox"
)

// PodNetwork is what the RuntimeService needs of cni.Manager beyond
// attaching pods (which the sandbox manager does through SandboxNetwork).
type PodNetwork interface {
	// Status is nil when pods can be attached, else says why not.
	Status(ctx context.Context) error
	SetPodCIDR(cidr string) error
	Check(ctx context.Context, pod cni.Pod) error
}

var _ PodNetwork = (*cni.Manager)(nil)

// SandboxNetwork adapts cni.Manager to sandbox.Network.
type SandboxNetwork struct{ CNI *cni.Manager }

var _ sandbox.Network = SandboxNetwork{}

// Setup attaches the pod and returns its IPs, primary first.
func (n SandboxNetwork) Setup(ctx context.Context, sb *sandbox.Sandbox) ([]string, error) {
	res, err := n.CNI.Setup(ctx, CNIPod(sb))
	if err != nil {
		return nil, err
	}
	if len(res.IPs) == 0 {
		return nil, errors.New("pod network gave the pod no IP")
	}
	return res.IPs, nil
}

// Teardown detaches the pod.
func (n SandboxNetwork) Teardown(ctx context.Context, sb *sandbox.Sandbox) error {
	return n.CNI.Teardown(ctx, CNIPod(sb))
}

// CNIPod is what CNI is told about a sandbox.
func CNIPod(sb *sandbox.Sandbox) cni.Pod {
	c := sb.Config
	pod := cni.Pod{
		ID:           sb.ID,
		NetNS:        sb.NetNSPath,
		Name:         c.Metadata.Name,
		Namespace:    c.Metadata.Namespace,
		UID:          c.Metadata.UID,
		Annotations:  c.Annotations,
		CgroupParent: c.CgroupParent,
	}
	for _, pm := range c.PortMappings {
		pod.PortMappings = append(pod.PortMappings, cni.PortMapping{
			Protocol: pm.Protocol, ContainerPort: pm.ContainerPort, HostPort: pm.HostPort, HostIP: pm.HostIP,
		})
	}
	return pod
}
