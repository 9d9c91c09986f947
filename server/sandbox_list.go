package server

import (
	"context"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crid-dev/crid/sandbox"
)

// ListPodSandbox lists sandboxes, filtered by ID prefix, state and labels.
func (s *RuntimeService) ListPodSandbox(ctx context.Context, r *runtime.ListPodSandboxRequest) (*runtime.ListPodSandboxResponse, error) {
	f := r.GetFilter()
	var items []*runtime.PodSandbox
	for _, sb := range s.sandboxes.List(sandbox.Filter{ID: f.GetId(), Labels: f.GetLabelSelector()}) {
		state := toCRISandboxState(sb.State)
		if f.GetState() != nil && f.GetState().GetState() != state {
			continue
		}
		items = append(items, &runtime.PodSandbox{
			Id:             sb.ID,
			Metadata:       toCRISandboxMetadata(sb.Config.Metadata),
			State:          state,
			CreatedAt:      sb.CreatedAt.UnixNano(),
			Labels:         sb.Config.Labels,
			Annotations:    sb.Config.Annotations,
			RuntimeHandler: sb.Config.RuntimeHandler,
		})
	}
	return &runtime.ListPodSandboxResponse{Items: items}, nil
}
