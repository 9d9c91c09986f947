package server

import (
	"context"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crid-dev/crid/container"
	"github.com/crid-dev/crid/internal/log"
)

// ContainerStats reports one container's CPU, memory and writable-layer use.
func (s *RuntimeService) ContainerStats(ctx context.Context, r *runtime.ContainerStatsRequest) (*runtime.ContainerStatsResponse, error) {
	id := r.GetContainerId()
	if id == "" {
		return nil, fmt.Errorf("container id is required: %w", errdefs.ErrInvalidArgument)
	}
	c, err := s.containers.Get(id)
	if err != nil {
		return nil, err
	}
	return &runtime.ContainerStatsResponse{Stats: s.containerStats(ctx, c)}, nil
}

// ListContainerStats reports the stats of the containers the filter selects
// (ID prefix, sandbox, labels), in every state: a container without a
// cgroup (created, exited) reports zero CPU and memory.
func (s *RuntimeService) ListContainerStats(ctx context.Context, r *runtime.ListContainerStatsRequest) (*runtime.ListContainerStatsResponse, error) {
	f := r.GetFilter()
	cf := container.Filter{ID: f.GetId(), Labels: f.GetLabelSelector()}
	if f.GetPodSandboxId() != "" {
		sb, err := s.sandboxes.Get(f.GetPodSandboxId())
		if err != nil {
			return &runtime.ListContainerStatsResponse{}, nil
		}
		cf.SandboxID = sb.ID
	}
	var out []*runtime.ContainerStats
	for _, c := range s.containers.List(cf) {
		out = append(out, s.containerStats(ctx, c))
	}
	return &runtime.ListContainerStatsResponse{Stats: out}, nil
}

func (s *RuntimeService) containerStats(ctx context.Context, c container.Record) *runtime.ContainerStats {
	now := time.Now().UnixNano()
	st := &runtime.ContainerStats{
		Attributes: &runtime.ContainerAttributes{
			Id:          c.ID,
			Metadata:    &runtime.ContainerMetadata{Name: c.Name, Attempt: c.Attempt},
			Labels:      c.Labels,
			Annotations: c.Annotations,
		},
		Cpu:    &runtime.CpuUsage{Timestamp: now, UsageCoreNanoSeconds: &runtime.UInt64Value{}},
		Memory: &runtime.MemoryUsage{Timestamp: now, WorkingSetBytes: &runtime.UInt64Value{}},
	}
	if c.State == container.StateRunning {
		cg, err := s.stats.Stats(c.CgroupsPath)
		switch {
		case err == nil:
			ts := cg.Timestamp.UnixNano()
			st.Cpu = &runtime.CpuUsage{Timestamp: ts, UsageCoreNanoSeconds: &runtime.UInt64Value{Value: cg.CPUUsageNanos}}
			st.Memory = &runtime.MemoryUsage{
				Timestamp:       ts,
				WorkingSetBytes: &runtime.UInt64Value{Value: cg.MemoryWorkingSet},
				AvailableBytes:  &runtime.UInt64Value{Value: cg.MemoryAvailable},
				UsageBytes:      &runtime.UInt64Value{Value: cg.MemoryUsage},
				RssBytes:        &runtime.UInt64Value{Value: cg.MemoryRSS},
				PageFaults:      &runtime.UInt64Value{Value: cg.PageFaults},
				MajorPageFaults: &runtime.UInt64Value{Value: cg.MajorFaults},
			}
		case !errdefs.IsNotFound(err):
			log.G(ctx).Warn("read container cgroup stats", "containerid", c.ID, "error", err)
		}
	}
	if u, err := s.rootfs.Usage(ctx, c.ID); err == nil {
		st.WritableLayer = &runtime.FilesystemUsage{
			Timestamp:  now,
			FsId:       &runtime.FilesystemIdentifier{Mountpoint: s.rootfs.Root()},
			UsedBytes:  &runtime.UInt64Value{Value: uint64(max(u.Size, 0))},
			InodesUsed: &runtime.UInt64Value{Value: uint64(max(u.Inodes, 0))},
		}
	}
	return st
}
