package server

import (
	"context"
	"time"

	"github.com/containerd/errdefs"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crid-dev/crid/container"
	"github.com/crid-dev/crid/internal/log"
	"github.com/crid-dev/crid/sandbox"
	"github.com/crid-dev/crid/snapshotter"
)

// ListPodSandboxMetrics reports, for every Ready sandbox, the counters of
// its network interfaces and the cgroup and writable-layer metrics of its
// running containers (see convert_metrics.go for names and labels).
//
// A sandbox or container that stops or goes away while it is read is left
// out. Any other read error is logged and leaves out only what it concerns,
// so that one broken container does not take the node's metrics with it.
func (s *RuntimeService) ListPodSandboxMetrics(ctx context.Context, _ *runtime.ListPodSandboxMetricsRequest) (*runtime.ListPodSandboxMetricsResponse, error) {
	var capacity *snapshotter.Capacity
	if c, err := s.rootfs.Capacity(ctx); err == nil {
		capacity = &c
	} else {
		log.G(ctx).Warn("measure the container filesystem", "error", err)
	}
	var out []*runtime.PodSandboxMetrics
	for _, sb := range s.sandboxes.List(sandbox.Filter{State: sandbox.StateReady}) {
		pm := s.podMetrics(ctx, sb, capacity)
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if pm != nil {
			out = append(out, pm)
		}
	}
	return &runtime.ListPodSandboxMetricsResponse{PodMetrics: out}, nil
}

// podMetrics reads one sandbox's metrics; nil when it is no longer Ready.
func (s *RuntimeService) podMetrics(ctx context.Context, sb *sandbox.Sandbox, capacity *snapshotter.Capacity) *runtime.PodSandboxMetrics {
	ifaces, err := s.sandboxes.NetworkStats(ctx, sb.ID)
	switch {
	case errdefs.IsNotFound(err) || errdefs.IsFailedPrecondition(err):
		return nil // stopped or removed since the List
	case ctx.Err() != nil:
		return nil // the caller gave up: ListPodSandboxMetrics says so
	case err != nil:
		log.G(ctx).Warn("read pod network counters", "podsandboxid", sb.ID, "error", err)
	}
	pod := metricSet{ts: time.Now().UnixNano(), base: []string{sb.ID, "POD", ""}}
	pod.addNetworkMetrics(ifaces)
	pm := &runtime.PodSandboxMetrics{PodSandboxId: sb.ID, Metrics: pod.out}
	for _, c := range s.containers.List(container.Filter{SandboxID: sb.ID, State: container.StateRunning}) {
		if cm := s.containerMetrics(ctx, c, capacity); cm != nil {
			pm.ContainerMetrics = append(pm.ContainerMetrics, cm)
		}
	}
	return pm
}

// containerMetrics reads one running container's metrics; nil when its
// cgroup or writable layer is gone (it exited or was removed since the
// List) or cannot be read.
func (s *RuntimeService) containerMetrics(ctx context.Context, c container.Record, capacity *snapshotter.Capacity) *runtime.ContainerMetrics {
	m, err := s.stats.Metrics(c.CgroupsPath)
	if err != nil {
		if !errdefs.IsNotFound(err) {
			log.G(ctx).Warn("read container cgroup metrics", "containerid", c.ID, "error", err)
		}
		return nil
	}
	u, err := s.rootfs.Usage(ctx, c.ID)
	if err != nil {
		if !errdefs.IsNotFound(err) {
			log.G(ctx).Warn("measure container writable layer", "containerid", c.ID, "error", err)
		}
		return nil
	}
	set := metricSet{ts: m.Timestamp.UnixNano(), base: []string{c.ID, c.Name, c.Image.Ref}}
	set.addCgroupMetrics(m)
	set.addFsMetrics(s.rootfs.Root(), u, capacity)
	set.add(descStartTime, uint64(max(c.StartedAt.Unix(), 0)))
	return &runtime.ContainerMetrics{ContainerId: c.ID, Metrics: set.out}
}
