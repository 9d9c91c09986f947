package server

import (
	"context"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crid-dev/crid/container"
)

// ListContainers lists containers, filtered by ID prefix, sandbox, state
// and labels.
func (s *RuntimeService) ListContainers(ctx context.Context, r *runtime.ListContainersRequest) (*runtime.ListContainersResponse, error) {
	f := r.GetFilter()
	cf := container.Filter{ID: f.GetId(), SandboxID: f.GetPodSandboxId(), Labels: f.GetLabelSelector()}
	if f.GetPodSandboxId() != "" {
		// crictl passes short sandbox IDs too.
		if sb, err := s.sandboxes.Get(f.GetPodSandboxId()); err == nil {
			cf.SandboxID = sb.ID
		} else {
			return &runtime.ListContainersResponse{}, nil
		}
	}
	var out []*runtime.Container
	for _, c := range s.containers.List(cf) {
		state := toCRIContainerState(c.State)
		if f.GetState() != nil && f.GetState().GetState() != state {
			continue
		}
		out = append(out, &runtime.Container{
			Id:           c.ID,
			PodSandboxId: c.SandboxID,
			Metadata:     &runtime.ContainerMetadata{Name: c.Name, Attempt: c.Attempt},
			Image:        &runtime.ImageSpec{Image: c.Image.Ref},
			ImageRef:     c.Image.ID,
			ImageId:      c.Image.ID,
			State:        state,
			CreatedAt:    c.CreatedAt.UnixNano(),
			Labels:       c.Labels,
			Annotations:  c.Annotations,
		})
	}
	return &runtime.ListContainersResponse{Containers: out}, nil
}
