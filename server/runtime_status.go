package server

import (
	"context"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Status reports the runtime's conditions and handlers. Pod networking
// through CNI is not there yet: NetworkReady stays false, which kubelet
// answers by running only host-network pods.
func (s *RuntimeService) Status(context.Context, *runtime.StatusRequest) (*runtime.StatusResponse, error) {
	resp := &runtime.StatusResponse{
		Status: &runtime.RuntimeStatus{Conditions: []*runtime.RuntimeCondition{
			{Type: runtime.RuntimeReady, Status: true},
			{
				Type:    runtime.NetworkReady,
				Status:  false,
				Reason:  "NetworkPluginNotReady",
				Message: "pod networking (CNI) is not implemented yet",
			},
		}},
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
