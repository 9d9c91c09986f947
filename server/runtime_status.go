package server

import (
	"context"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Status reports the runtime's conditions. The runtime (pods and containers)
// and the network are not there yet, and Status says so rather than claim a
// readiness kubelet would act on.
func (s *RuntimeService) Status(context.Context, *runtime.StatusRequest) (*runtime.StatusResponse, error) {
	return &runtime.StatusResponse{
		Status: &runtime.RuntimeStatus{Conditions: []*runtime.RuntimeCondition{
			{
				Type:    runtime.RuntimeReady,
				Status:  false,
				Reason:  "PodLifecycleNotImplemented",
				Message: "crid serves images only; pod sandboxes and containers are not implemented yet",
			},
			{
				Type:    runtime.NetworkReady,
				Status:  false,
				Reason:  "NetworkPluginNotReady",
				Message: "pod networking is not implemented yet",
			},
		}},
	}, nil
}
