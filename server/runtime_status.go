package server

import (
	"context"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Status reports the runtime's conditions, handlers and features.
// NetworkReady is true only while a usable CNI network is installed; until
// then kubelet runs only host-network pods.
func (s *RuntimeService) Status(ctx context.Context, _ *runtime.StatusRequest) (*runtime.StatusResponse, error) {
	netCond := &runtime.RuntimeCondition{Type: runtime.NetworkReady, Status: true}
	switch {
	case s.network == nil:
		netCond.Status, netCond.Reason, netCond.Message = false, "NetworkPluginNotReady", "crid runs without a pod network"
	default:
		if err := s.network.Status(ctx); err != nil {
			netCond.Status, netCond.Reason, netCond.Message = false, "NetworkPluginNotReady", "Network plugin returns error: "+err.Error()
		}
	}
	resp := &runtime.StatusResponse{
		Status: &runtime.RuntimeStatus{Conditions: []*runtime.RuntimeCondition{
			{Type: runtime.RuntimeReady, Status: true},
			netCond,
		}},
		// SupplementalGroupsPolicy: spec.Generate applies Merge and Strict
		// (container/spec/user.go), exec'd processes reuse the container's
		// process user, and ContainerStatus reports that user from the
		// container record (containerExtra), so kubelet may rely on both.
		// MountOptions: spec.Generate applies the restricting bind mount
		// options (noexec, nosuid, nodev, atime) and refuses the others.
		Features: &runtime.RuntimeFeatures{SupplementalGroupsPolicy: true, MountOptions: true},
	}
	for i, h := range s.handlers {
		rh := &runtime.RuntimeHandler{Name: h.Name, Features: &runtime.RuntimeHandlerFeatures{
			RecursiveReadOnlyMounts: h.RecursiveReadOnlyMounts, UserNamespaces: h.UserNamespaces,
		}}
		resp.RuntimeHandlers = append(resp.RuntimeHandlers, rh)
		if i == 0 {
			// The default handler is also reported under the empty name.
			resp.RuntimeHandlers = append(resp.RuntimeHandlers, &runtime.RuntimeHandler{Features: rh.Features})
		}
	}
	return resp, nil
}

// RuntimeConfig tells kubelet which cgroup driver crid uses.
func (s *RuntimeService) RuntimeConfig(context.Context, *runtime.RuntimeConfigRequest) (*runtime.RuntimeConfigResponse, error) {
	driver := runtime.CgroupDriver_CGROUPFS
	if s.cgroups == "systemd" {
		driver = runtime.CgroupDriver_SYSTEMD
	}
	return &runtime.RuntimeConfigResponse{Linux: &runtime.LinuxRuntimeConfiguration{CgroupDriver: driver}}, nil
}

// UpdateRuntimeConfig takes the node's pod CIDR from kubelet; later pod
// attachments offer it to IPAM (the ipRanges capability).
func (s *RuntimeService) UpdateRuntimeConfig(_ context.Context, r *runtime.UpdateRuntimeConfigRequest) (*runtime.UpdateRuntimeConfigResponse, error) {
	if s.network != nil {
		if err := s.network.SetPodCIDR(r.GetRuntimeConfig().GetNetworkConfig().GetPodCidr()); err != nil {
			return nil, err
		}
	}
	return &runtime.UpdateRuntimeConfigResponse{}, nil
}
