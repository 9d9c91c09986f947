package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crid-dev/crid/cgroupmgr"
	"github.com/crid-dev/crid/container"
	"github.com/crid-dev/crid/sandbox"
	"github.com/crid-dev/crid/snapshotter"
)

// What critest v1.37.0 checks, copied from sigs.k8s.io/cri-tools@v1.37.0
// pkg/validate/pod.go (expectedMetricDescriptorNames,
// unimplementedMetricDescriptors, optionalValuesForMetricDescriptors): the
// specs "runtime should support returning metrics descriptors" and
// "runtime should support listing pod sandbox metrics".
var (
	critestExpectedMetrics = []string{
		"container_blkio_device_usage_total",
		"container_cpu_cfs_periods_total",
		"container_cpu_cfs_throttled_periods_total",
		"container_cpu_cfs_throttled_seconds_total",
		"container_cpu_system_seconds_total",
		"container_cpu_usage_seconds_total",
		"container_cpu_user_seconds_total",
		"container_file_descriptors",
		"container_fs_inodes_free",
		"container_fs_inodes_total",
		"container_fs_limit_bytes",
		"container_fs_reads_bytes_total",
		"container_fs_reads_total",
		"container_fs_usage_bytes",
		"container_fs_writes_bytes_total",
		"container_fs_writes_total",
		"container_hugetlb_max_usage_bytes",
		"container_hugetlb_usage_bytes",
		"container_last_seen",
		"container_memory_cache",
		"container_memory_failcnt",
		"container_memory_failures_total",
		"container_memory_kernel_usage",
		"container_memory_mapped_file",
		"container_memory_max_usage_bytes",
		"container_memory_rss",
		"container_memory_swap",
		"container_memory_usage_bytes",
		"container_memory_working_set_bytes",
		"container_network_receive_bytes_total",
		"container_network_receive_errors_total",
		"container_network_receive_packets_dropped_total",
		"container_network_receive_packets_total",
		"container_network_transmit_bytes_total",
		"container_network_transmit_errors_total",
		"container_network_transmit_packets_dropped_total",
		"container_network_transmit_packets_total",
		"container_oom_events_total",
		"container_pressure_cpu_stalled_seconds_total",
		"container_pressure_cpu_waiting_seconds_total",
		"container_pressure_io_stalled_seconds_total",
		"container_pressure_io_waiting_seconds_total",
		"container_pressure_memory_stalled_seconds_total",
		"container_pressure_memory_waiting_seconds_total",
		"container_processes",
		"container_sockets",
		"container_spec_cpu_period",
		"container_spec_cpu_quota",
		"container_spec_cpu_shares",
		"container_spec_memory_limit_bytes",
		"container_spec_memory_reservation_limit_bytes",
		"container_spec_memory_swap_limit_bytes",
		"container_start_time_seconds",
		"container_threads",
		"container_threads_max",
		"container_ulimits_soft",
	}
	critestUnimplementedMetrics = []string{
		"container_hugetlb_max_usage_bytes",
		"container_hugetlb_usage_bytes",
		"container_pressure_cpu_stalled_seconds_total",
		"container_pressure_cpu_waiting_seconds_total",
		"container_pressure_io_stalled_seconds_total",
		"container_pressure_io_waiting_seconds_total",
		"container_pressure_memory_stalled_seconds_total",
		"container_pressure_memory_waiting_seconds_total",
		"container_spec_cpu_quota",
		"container_spec_memory_reservation_limit_bytes",
		"container_ulimits_soft",
	}
	critestOptionalValueMetrics = []string{
		"container_blkio_device_usage_total",
		"container_fs_reads_bytes_total",
		"container_fs_reads_total",
		"container_fs_writes_bytes_total",
		"container_fs_writes_total",
	}
)

// recordContainers lists fixed records.
type recordContainers struct {
	fakeContainers
	recs []container.Record
}

func (f recordContainers) List(flt container.Filter) []container.Record {
	var out []container.Record
	for _, r := range f.recs {
		if (flt.SandboxID == "" || r.SandboxID == flt.SandboxID) && (flt.State == "" || r.State == flt.State) {
			out = append(out, r)
		}
	}
	return out
}

// metricsRootfs has writable layers of the sizes in usage (others are
// NotFound) on a filesystem of capacity.
type metricsRootfs struct {
	fakeRootfs
	usage       map[string]snapshotter.Usage
	capacity    snapshotter.Capacity
	capacityErr error
}

func (f metricsRootfs) Usage(_ context.Context, key string) (snapshotter.Usage, error) {
	u, ok := f.usage[key]
	if !ok {
		return snapshotter.Usage{}, fmt.Errorf("snapshot %s: %w", key, errdefs.ErrNotFound)
	}
	return u, nil
}

func (f metricsRootfs) Root() string { return "/var/lib/crid/snapshots" }

func (f metricsRootfs) Capacity(context.Context) (snapshotter.Capacity, error) {
	return f.capacity, f.capacityErr
}

// metricsStats has cgroups by path (others are NotFound), or fails for
// the paths in errs.
type metricsStats struct {
	fakeStats
	cgroups map[string]cgroupmgr.Metrics
	errs    map[string]error
}

func (f metricsStats) Metrics(p string) (cgroupmgr.Metrics, error) {
	if err := f.errs[p]; err != nil {
		return cgroupmgr.Metrics{}, err
	}
	m, ok := f.cgroups[p]
	if !ok {
		return cgroupmgr.Metrics{}, fmt.Errorf("cgroup %s: %w", p, errdefs.ErrNotFound)
	}
	return m, nil
}

func startMetricsServer(t *testing.T, sbs Sandboxes, ctrs Containers, rootfs Rootfs, stats CgroupStats) runtime.RuntimeServiceClient {
	t.Helper()
	deps := testRuntimeDeps(newFakeImages())
	deps.Sandboxes, deps.Containers, deps.Rootfs, deps.Stats = sbs, ctrs, rootfs, stats
	return serveRuntime(t, deps)
}

func listDescriptors(t *testing.T, rc runtime.RuntimeServiceClient) map[string]*runtime.MetricDescriptor {
	t.Helper()
	resp, err := rc.ListMetricDescriptors(context.Background(), &runtime.ListMetricDescriptorsRequest{})
	require.NoError(t, err)
	descs := map[string]*runtime.MetricDescriptor{}
	for _, d := range resp.GetDescriptors() {
		require.NotContains(t, descs, d.GetName(), "described twice")
		descs[d.GetName()] = d
	}
	return descs
}

func TestListMetricDescriptors(t *testing.T) {
	rc := startMetricsServer(t, newFakeSandboxes(), newFakeContainers(), fakeRootfs{}, fakeStats{})
	descs := listDescriptors(t, rc)

	var missing []string
	for _, name := range critestExpectedMetrics {
		if _, ok := descs[name]; !ok && !slices.Contains(critestUnimplementedMetrics, name) {
			missing = append(missing, name)
		}
	}
	require.Empty(t, missing, "critest's testMetricDescriptors wants these")

	for name, d := range descs {
		assert.Contains(t, critestExpectedMetrics, name, "a cadvisor name critest knows")
		assert.NotEmpty(t, d.GetHelp(), name)
		keys := d.GetLabelKeys()
		require.NotEmpty(t, keys, name)
		assert.Equal(t, baseLabelKeys, keys[:len(baseLabelKeys)], "%s: every metric starts with the base labels", name)
		for i, k := range keys {
			assert.NotContains(t, keys[i+1:], k, "%s: label %s twice", name, k)
			// Kubelet's CRI metrics collector appends these itself: a
			// runtime's own would make Prometheus reject the family.
			assert.NotContains(t, []string{"namespace", "pod", "container"}, k, name)
		}
	}
}

func TestListPodSandboxMetrics(t *testing.T) {
	sbs := newFakeSandboxes()
	ctx := context.Background()
	newPod := func(name string) string {
		sb, err := sbs.Run(ctx, sandbox.Config{Metadata: sandbox.Metadata{Name: name, Namespace: "ns", UID: "u-" + name}})
		require.NoError(t, err)
		return sb.ID
	}
	pod, host, stopping, stopped := newPod("pod"), newPod("host"), newPod("stopping"), newPod("stopped")
	require.NoError(t, sbs.Stop(ctx, stopped))
	sbs.ifaces = map[string][]sandbox.InterfaceStats{pod: {
		{Name: "eth0", RxBytes: 1000, RxPackets: 10, RxErrors: 1, RxDropped: 2, TxBytes: 2000, TxPackets: 20, TxErrors: 3, TxDropped: 4},
		{Name: "net1", RxBytes: 5},
	}}
	// Stopped between List and NetworkStats.
	sbs.netErr = map[string]error{stopping: fmt.Errorf("sandbox %s: %w", stopping, sandbox.ErrSandboxNotReady)}

	started := time.Unix(1700000000, 0)
	rec := func(id, sbID, cgroup string, state container.State) container.Record {
		return container.Record{
			ID: id, SandboxID: sbID, Name: "ctr-" + id, State: state, CgroupsPath: cgroup, StartedAt: started,
			Image: container.Image{Ref: "registry.k8s.io/busybox:1.36", ID: "sha256:abc"},
		}
	}
	ctrs := recordContainers{recs: []container.Record{
		rec("c1", pod, "/kubepods/c1", container.StateRunning),
		rec("c2", pod, "/kubepods/c2", container.StateRunning),     // exited after the List: no cgroup
		rec("c3", pod, "/kubepods/c3", container.StateExited),      // not running: not reported
		rec("c4", pod, "/kubepods/c4", container.StateRunning),     // removed after the List: no rootfs
		rec("c5", pod, "/kubepods/c5", container.StateRunning),     // an unreadable cgroup: logged, left out
		rec("c6", stopped, "/kubepods/c6", container.StateRunning), // in a sandbox that is not Ready
	}}
	ts := time.Unix(1800000000, 0)
	cg := cgroupmgr.Metrics{
		Timestamp: ts,
		CPU: cgroupmgr.CPUMetrics{
			UsageNanos: 3_500_000_000, UserNanos: 2e9, SystemNanos: 1e9,
			Periods: 50, ThrottledPeriods: 7, ThrottledNanos: 4e9,
		},
		Memory: cgroupmgr.MemoryMetrics{
			Usage: 10000, MaxUsage: 12000, WorkingSet: 6000, Cache: 900, RSS: 3000, MappedFile: 40, Swap: 60, Kernel: 500,
			Failcnt: 3, OOMKills: 2, PageFaults: 11, MajorFaults: 1, HierarchicalPageFaults: 22, HierarchicalMajorFaults: 2,
		},
		IO:        []cgroupmgr.DeviceIO{{Major: 254, Minor: 0, Device: "/dev/vda", ReadBytes: 8192, WriteBytes: 4096, Reads: 2, Writes: 1}},
		Processes: cgroupmgr.ProcessMetrics{Processes: 2, Threads: 5, ThreadsMax: 1024, FileDescriptors: 9, Sockets: 1},
		Limits:    cgroupmgr.Limits{CPUPeriod: 100000, CPUQuota: 20000, CPUShares: 1024, Memory: 64 << 20, MemoryReservation: 32 << 20, MemorySwap: 64 << 20},
		Pressure: &cgroupmgr.Pressure{
			CPU:    cgroupmgr.PSI{Some: 5 * time.Second, Full: 2 * time.Second},
			Memory: cgroupmgr.PSI{Some: 3 * time.Second, Full: time.Second},
			IO:     cgroupmgr.PSI{Some: 7 * time.Second, Full: 6 * time.Second},
		},
	}
	stats := metricsStats{
		cgroups: map[string]cgroupmgr.Metrics{"/kubepods/c1": cg, "/kubepods/c4": cg, "/kubepods/c6": cg},
		errs:    map[string]error{"/kubepods/c5": errors.New("parse memory.stat: garbage")},
	}
	rootfs := metricsRootfs{
		usage:    map[string]snapshotter.Usage{"c1": {Size: 4096, Inodes: 11}, "c2": {}, "c5": {}, "c6": {}},
		capacity: snapshotter.Capacity{Bytes: 1 << 30, AvailableBytes: 1 << 29, Inodes: 65536, InodesFree: 60000},
	}
	rc := startMetricsServer(t, sbs, ctrs, rootfs, stats)
	descs := listDescriptors(t, rc)

	resp, err := rc.ListPodSandboxMetrics(ctx, &runtime.ListPodSandboxMetricsRequest{})
	require.NoError(t, err)
	byPod := map[string]*runtime.PodSandboxMetrics{}
	for _, pm := range resp.GetPodMetrics() {
		byPod[pm.GetPodSandboxId()] = pm
	}
	require.ElementsMatch(t, []string{pod, host}, mapKeys(byPod), "only Ready sandboxes, not one that stopped meanwhile")
	require.Empty(t, byPod[host].GetMetrics(), "a host-network pod has no interfaces of its own")
	require.Empty(t, byPod[host].GetContainerMetrics())

	pm := byPod[pod]
	require.Len(t, pm.GetContainerMetrics(), 1, "c1 only")
	c1 := pm.GetContainerMetrics()[0]
	require.Equal(t, "c1", c1.GetContainerId())

	// Every metric has a descriptor and as many label values as it has
	// keys (what critest checks of the first value of each).
	all := slices.Concat(pm.GetMetrics(), c1.GetMetrics())
	for _, m := range all {
		d, ok := descs[m.GetName()]
		require.True(t, ok, "%s has no descriptor", m.GetName())
		require.Len(t, m.GetLabelValues(), len(d.GetLabelKeys()), m.GetName())
		// cadvisor's types: counters end in _total, but for failcnt (a
		// counter) and inodes_total (a gauge).
		want := runtime.MetricType_GAUGE
		if strings.HasSuffix(m.GetName(), "_total") && m.GetName() != "container_fs_inodes_total" ||
			m.GetName() == "container_memory_failcnt" {
			want = runtime.MetricType_COUNTER
		}
		require.Equal(t, want, m.GetMetricType(), m.GetName())
	}

	// critest's testPodSandboxMetrics: every expected metric and every
	// descriptor has a value, unless critest lets it go without. The fakes
	// have block I/O and pressure, so here every descriptor has one.
	found := map[string]bool{}
	for _, m := range all {
		found[m.GetName()] = true
	}
	for name := range descs {
		assert.True(t, found[name], "no value for %s", name)
	}
	for _, name := range critestExpectedMetrics {
		if !slices.Contains(critestUnimplementedMetrics, name) && !slices.Contains(critestOptionalValueMetrics, name) {
			assert.True(t, found[name], "critest wants a value for %s", name)
		}
	}

	base := []string{"c1", "ctr-c1", "registry.k8s.io/busybox:1.36"}
	for _, tc := range []struct {
		desc   string
		name   string
		labels []string
		value  uint64
	}{
		{"whole seconds of CPU", "container_cpu_usage_seconds_total", []string{"total"}, 3},
		{"user CPU", "container_cpu_user_seconds_total", nil, 2},
		{"throttled time", "container_cpu_cfs_throttled_seconds_total", nil, 4},
		{"throttled periods", "container_cpu_cfs_throttled_periods_total", nil, 7},
		{"working set", "container_memory_working_set_bytes", nil, 6000},
		{"max usage", "container_memory_max_usage_bytes", nil, 12000},
		{"own major faults", "container_memory_failures_total", []string{"pgmajfault", "container"}, 1},
		{"hierarchical faults", "container_memory_failures_total", []string{"pgfault", "hierarchy"}, 22},
		{"OOM kills", "container_oom_events_total", nil, 2},
		{"device writes", "container_blkio_device_usage_total", []string{"/dev/vda", "254", "0", "Write"}, 4096},
		{"read ops", "container_fs_reads_total", []string{"/dev/vda"}, 2},
		{"writable layer", "container_fs_usage_bytes", []string{"/var/lib/crid/snapshots"}, 4096},
		{"filesystem size", "container_fs_limit_bytes", []string{"/var/lib/crid/snapshots"}, 1 << 30},
		{"free inodes", "container_fs_inodes_free", []string{"/var/lib/crid/snapshots"}, 60000},
		{"file descriptors", "container_file_descriptors", nil, 9},
		{"threads max", "container_threads_max", nil, 1024},
		{"quota", "container_spec_cpu_quota", nil, 20000},
		{"swap limit", "container_spec_memory_swap_limit_bytes", nil, 64 << 20},
		{"IO stalled", "container_pressure_io_stalled_seconds_total", nil, 6},
		{"start time", "container_start_time_seconds", nil, uint64(started.Unix())},
		{"last seen", "container_last_seen", nil, uint64(ts.Unix())},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			m := findMetric(c1.GetMetrics(), tc.name, slices.Concat(base, tc.labels))
			require.NotNil(t, m, "%s%v", tc.name, tc.labels)
			assert.Equal(t, tc.value, m.GetValue().GetValue())
			assert.Equal(t, ts.UnixNano(), m.GetTimestamp(), "the cgroup's read time")
		})
	}
	for _, tc := range []struct {
		name, iface string
		value       uint64
	}{
		{"container_network_receive_bytes_total", "eth0", 1000},
		{"container_network_receive_packets_dropped_total", "eth0", 2},
		{"container_network_transmit_errors_total", "eth0", 3},
		{"container_network_transmit_packets_total", "eth0", 20},
		{"container_network_receive_bytes_total", "net1", 5},
	} {
		m := findMetric(pm.GetMetrics(), tc.name, []string{pod, "POD", "", tc.iface})
		require.NotNil(t, m, "%s %s", tc.name, tc.iface)
		assert.Equal(t, tc.value, m.GetValue().GetValue())
		assert.Equal(t, runtime.MetricType_COUNTER, m.GetMetricType())
	}
	assert.Len(t, pm.GetMetrics(), 16, "8 per interface")

	t.Run("without a quota there is no quota metric", func(t *testing.T) {
		noQuota := cg
		noQuota.Limits.CPUQuota = 0
		noQuota.Pressure = nil
		rc := startMetricsServer(t, sbs, ctrs, rootfs, metricsStats{cgroups: map[string]cgroupmgr.Metrics{"/kubepods/c1": noQuota}})
		resp, err := rc.ListPodSandboxMetrics(ctx, &runtime.ListPodSandboxMetricsRequest{})
		require.NoError(t, err)
		got := metricsOf(resp, "c1")
		require.NotNil(t, got)
		assert.Nil(t, findMetric(got, "container_spec_cpu_quota", base))
		assert.Nil(t, findMetric(got, "container_pressure_cpu_waiting_seconds_total", base), "no pressure, no pressure metrics")
		assert.NotNil(t, findMetric(got, "container_spec_cpu_period", base))
	})
	t.Run("a filesystem that cannot be measured leaves out its size only", func(t *testing.T) {
		broken := rootfs
		broken.capacityErr = errors.New("statfs: input/output error")
		rc := startMetricsServer(t, sbs, ctrs, broken, stats)
		resp, err := rc.ListPodSandboxMetrics(ctx, &runtime.ListPodSandboxMetricsRequest{})
		require.NoError(t, err)
		got := metricsOf(resp, "c1")
		fsLabels := slices.Concat(base, []string{"/var/lib/crid/snapshots"})
		assert.NotNil(t, findMetric(got, "container_fs_usage_bytes", fsLabels))
		assert.Nil(t, findMetric(got, "container_fs_limit_bytes", fsLabels))
	})
}

func mapKeys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func findMetric(ms []*runtime.Metric, name string, labels []string) *runtime.Metric {
	for _, m := range ms {
		if m.GetName() == name && slices.Equal(m.GetLabelValues(), labels) {
			return m
		}
	}
	return nil
}

func metricsOf(resp *runtime.ListPodSandboxMetricsResponse, containerID string) []*runtime.Metric {
	for _, pm := range resp.GetPodMetrics() {
		for _, cm := range pm.GetContainerMetrics() {
			if cm.GetContainerId() == containerID {
				return cm.GetMetrics()
			}
		}
	}
	return nil
}
