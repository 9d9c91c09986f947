package server

import (
	"time"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crid-dev/crid/container"
)

func toCRIContainerState(s container.State) runtime.ContainerState {
	switch s {
	case container.StateCreated:
		return runtime.ContainerState_CONTAINER_CREATED
	case container.StateRunning:
		return runtime.ContainerState_CONTAINER_RUNNING
	case container.StateExited:
		return runtime.ContainerState_CONTAINER_EXITED
	default:
		return runtime.ContainerState_CONTAINER_UNKNOWN
	}
}

func unixNanoOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func toCRIContainerStatus(c container.Record) *runtime.ContainerStatus {
	extra := decodeContainerExtra(c.Extra)
	st := &runtime.ContainerStatus{
		Id:          c.ID,
		Metadata:    &runtime.ContainerMetadata{Name: c.Name, Attempt: c.Attempt},
		State:       toCRIContainerState(c.State),
		CreatedAt:   c.CreatedAt.UnixNano(),
		StartedAt:   unixNanoOrZero(c.StartedAt),
		FinishedAt:  unixNanoOrZero(c.FinishedAt),
		ExitCode:    c.ExitCode,
		Image:       &runtime.ImageSpec{Image: c.Image.Ref},
		ImageRef:    c.Image.ID,
		ImageId:     c.Image.ID,
		Reason:      c.Reason,
		Message:     c.Message,
		Labels:      c.Labels,
		Annotations: c.Annotations,
		Mounts:      extra.Mounts,
		LogPath:     c.LogPath,
		User:        extra.user(),
	}
	return st
}
