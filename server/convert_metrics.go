package server

import (
	"slices"
	"strconv"
	"time"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crid-dev/crid/cgroupmgr"
	"github.com/crid-dev/crid/sandbox"
	"github.com/crid-dev/crid/snapshotter"
)

// The metrics of ListPodSandboxMetrics are those cadvisor exports on
// kubelet's /metrics/cadvisor, under the same names, so that kubelet's CRI
// metrics collector can stand in for cadvisor. Every metric carries
// baseLabelKeys, as CRI-O's do: the container's ID, name and image, or for
// the pod-level (network) metrics the sandbox ID, "POD" and "". Kubelet
// appends namespace, pod and container itself. CRI values are integers:
// seconds are whole seconds.
var baseLabelKeys = []string{"id", "name", "image"}

// metricDesc describes one metric: labels are the label keys after
// baseLabelKeys.
type metricDesc struct {
	name, help string
	typ        runtime.MetricType
	labels     []string
}

const (
	counter = runtime.MetricType_COUNTER
	gauge   = runtime.MetricType_GAUGE
)

var (
	descCPUUsage         = &metricDesc{"container_cpu_usage_seconds_total", "Cumulative cpu time consumed in seconds.", counter, []string{"cpu"}}
	descCPUUser          = &metricDesc{"container_cpu_user_seconds_total", "Cumulative user cpu time consumed in seconds.", counter, nil}
	descCPUSystem        = &metricDesc{"container_cpu_system_seconds_total", "Cumulative system cpu time consumed in seconds.", counter, nil}
	descCFSPeriods       = &metricDesc{"container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals.", counter, nil}
	descCFSThrottled     = &metricDesc{"container_cpu_cfs_throttled_periods_total", "Number of throttled period intervals.", counter, nil}
	descCFSThrottledSecs = &metricDesc{"container_cpu_cfs_throttled_seconds_total", "Total time duration the container has been throttled.", counter, nil}
	descMemCache         = &metricDesc{"container_memory_cache", "Number of bytes of page cache memory.", gauge, nil}
	descMemRSS           = &metricDesc{"container_memory_rss", "Size of RSS in bytes.", gauge, nil}
	descMemKernel        = &metricDesc{"container_memory_kernel_usage", "Size of kernel memory allocated in bytes.", gauge, nil}
	descMemMapped        = &metricDesc{"container_memory_mapped_file", "Size of memory mapped files in bytes.", gauge, nil}
	descMemSwap          = &metricDesc{"container_memory_swap", "Container swap usage in bytes.", gauge, nil}
	descMemFailcnt       = &metricDesc{"container_memory_failcnt", "Number of memory usage hits limits", counter, nil}
	descMemUsage         = &metricDesc{"container_memory_usage_bytes", "Current memory usage in bytes, including all memory regardless of when it was accessed", gauge, nil}
	descMemMaxUsage      = &metricDesc{"container_memory_max_usage_bytes", "Maximum memory usage recorded in bytes", gauge, nil}
	descMemWorkingSet    = &metricDesc{"container_memory_working_set_bytes", "Current working set in bytes.", gauge, nil}
	descMemFailures      = &metricDesc{"container_memory_failures_total", "Cumulative count of memory allocation failures.", counter, []string{"failure_type", "scope"}}
	descOOMEvents        = &metricDesc{"container_oom_events_total", "Count of out of memory events observed for the container", counter, nil}
	descBlkioUsage       = &metricDesc{"container_blkio_device_usage_total", "Blkio device bytes usage", counter, []string{"device", "major", "minor", "operation"}}
	descFsReadsBytes     = &metricDesc{"container_fs_reads_bytes_total", "Cumulative count of bytes read", counter, []string{"device"}}
	descFsReads          = &metricDesc{"container_fs_reads_total", "Cumulative count of reads completed", counter, []string{"device"}}
	descFsWritesBytes    = &metricDesc{"container_fs_writes_bytes_total", "Cumulative count of bytes written", counter, []string{"device"}}
	descFsWrites         = &metricDesc{"container_fs_writes_total", "Cumulative count of writes completed", counter, []string{"device"}}
	descFsInodesFree     = &metricDesc{"container_fs_inodes_free", "Number of available Inodes", gauge, []string{"device"}}
	descFsInodesTotal    = &metricDesc{"container_fs_inodes_total", "Number of Inodes", gauge, []string{"device"}}
	descFsLimit          = &metricDesc{"container_fs_limit_bytes", "Number of bytes that can be consumed by the container on this filesystem.", gauge, []string{"device"}}
	descFsUsage          = &metricDesc{"container_fs_usage_bytes", "Number of bytes that are consumed by the container on this filesystem.", gauge, []string{"device"}}
	descProcesses        = &metricDesc{"container_processes", "Number of processes running inside the container.", gauge, nil}
	descFileDescriptors  = &metricDesc{"container_file_descriptors", "Number of open file descriptors for the container.", gauge, nil}
	descSockets          = &metricDesc{"container_sockets", "Number of open sockets for the container.", gauge, nil}
	descThreads          = &metricDesc{"container_threads", "Number of threads running inside the container", gauge, nil}
	descThreadsMax       = &metricDesc{"container_threads_max", "Maximum number of threads allowed inside the container, infinity if value is zero", gauge, nil}
	descLastSeen         = &metricDesc{"container_last_seen", "Last time a container was seen by the exporter", gauge, nil}
	descStartTime        = &metricDesc{"container_start_time_seconds", "Start time of the container since unix epoch in seconds.", gauge, nil}
	descSpecCPUPeriod    = &metricDesc{"container_spec_cpu_period", "CPU period of the container.", gauge, nil}
	descSpecCPUQuota     = &metricDesc{"container_spec_cpu_quota", "CPU quota of the container.", gauge, nil}
	descSpecCPUShares    = &metricDesc{"container_spec_cpu_shares", "CPU share of the container.", gauge, nil}
	descSpecMemLimit     = &metricDesc{"container_spec_memory_limit_bytes", "Memory limit for the container.", gauge, nil}
	descSpecMemReserve   = &metricDesc{"container_spec_memory_reservation_limit_bytes", "Memory reservation limit for the container.", gauge, nil}
	descSpecMemSwapLimit = &metricDesc{"container_spec_memory_swap_limit_bytes", "Memory swap limit for the container.", gauge, nil}
	descPSICPUWaiting    = &metricDesc{"container_pressure_cpu_waiting_seconds_total", "Total time duration tasks in the container have waited due to CPU congestion.", counter, nil}
	descPSICPUStalled    = &metricDesc{"container_pressure_cpu_stalled_seconds_total", "Total time duration no tasks in the container could make progress due to CPU congestion.", counter, nil}
	descPSIMemoryWaiting = &metricDesc{"container_pressure_memory_waiting_seconds_total", "Total time duration tasks in the container have waited due to memory congestion.", counter, nil}
	descPSIMemoryStalled = &metricDesc{"container_pressure_memory_stalled_seconds_total", "Total time duration no tasks in the container could make progress due to memory congestion.", counter, nil}
	descPSIIOWaiting     = &metricDesc{"container_pressure_io_waiting_seconds_total", "Total time duration tasks in the container have waited due to IO congestion.", counter, nil}
	descPSIIOStalled     = &metricDesc{"container_pressure_io_stalled_seconds_total", "Total time duration no tasks in the container could make progress due to IO congestion.", counter, nil}
	descNetRxBytes       = &metricDesc{"container_network_receive_bytes_total", "Cumulative count of bytes received", counter, []string{"interface"}}
	descNetRxPackets     = &metricDesc{"container_network_receive_packets_total", "Cumulative count of packets received", counter, []string{"interface"}}
	descNetRxDropped     = &metricDesc{"container_network_receive_packets_dropped_total", "Cumulative count of packets dropped while receiving", counter, []string{"interface"}}
	descNetRxErrors      = &metricDesc{"container_network_receive_errors_total", "Cumulative count of errors encountered while receiving", counter, []string{"interface"}}
	descNetTxBytes       = &metricDesc{"container_network_transmit_bytes_total", "Cumulative count of bytes transmitted", counter, []string{"interface"}}
	descNetTxPackets     = &metricDesc{"container_network_transmit_packets_total", "Cumulative count of packets transmitted", counter, []string{"interface"}}
	descNetTxDropped     = &metricDesc{"container_network_transmit_packets_dropped_total", "Cumulative count of packets dropped while transmitting", counter, []string{"interface"}}
	descNetTxErrors      = &metricDesc{"container_network_transmit_errors_total", "Cumulative count of errors encountered while transmitting", counter, []string{"interface"}}
)

// metricDescs is every metric ListPodSandboxMetrics may return, in the
// order ListMetricDescriptors lists them. The pressure metrics have values
// only where the kernel keeps pressure stall information for the cgroup
// (cgroup v2, or the unified hierarchy of a hybrid host); block I/O ones
// only for devices the container did I/O on.
var metricDescs = []*metricDesc{
	descCPUUsage, descCPUUser, descCPUSystem, descCFSPeriods, descCFSThrottled, descCFSThrottledSecs,
	descMemCache, descMemRSS, descMemKernel, descMemMapped, descMemSwap, descMemFailcnt,
	descMemUsage, descMemMaxUsage, descMemWorkingSet, descMemFailures, descOOMEvents,
	descBlkioUsage, descFsReadsBytes, descFsReads, descFsWritesBytes, descFsWrites,
	descFsInodesFree, descFsInodesTotal, descFsLimit, descFsUsage,
	descProcesses, descFileDescriptors, descSockets, descThreads, descThreadsMax,
	descLastSeen, descStartTime,
	descSpecCPUPeriod, descSpecCPUQuota, descSpecCPUShares, descSpecMemLimit, descSpecMemReserve, descSpecMemSwapLimit,
	descPSICPUWaiting, descPSICPUStalled, descPSIMemoryWaiting, descPSIMemoryStalled, descPSIIOWaiting, descPSIIOStalled,
	descNetRxBytes, descNetRxPackets, descNetRxDropped, descNetRxErrors,
	descNetTxBytes, descNetTxPackets, descNetTxDropped, descNetTxErrors,
}

func toCRIMetricDescriptor(d *metricDesc) *runtime.MetricDescriptor {
	return &runtime.MetricDescriptor{Name: d.name, Help: d.help, LabelKeys: slices.Concat(baseLabelKeys, d.labels)}
}

// metricSet collects the metrics of one container, or of a pod, all with
// one timestamp and the same base label values.
type metricSet struct {
	ts   int64
	base []string // values of baseLabelKeys
	out  []*runtime.Metric
}

// add appends d's metric with the values of d's own labels.
func (s *metricSet) add(d *metricDesc, v uint64, labels ...string) {
	if len(labels) != len(d.labels) {
		panic("metric " + d.name + ": label values do not match its descriptor") // a bug in this file
	}
	s.out = append(s.out, &runtime.Metric{
		Name: d.name, Timestamp: s.ts, MetricType: d.typ,
		LabelValues: slices.Concat(s.base, labels),
		Value:       &runtime.UInt64Value{Value: v},
	})
}

func seconds(nanos uint64) uint64 { return nanos / uint64(time.Second) }

// addCgroupMetrics converts a container cgroup's metrics.
func (s *metricSet) addCgroupMetrics(m cgroupmgr.Metrics) {
	s.add(descCPUUsage, seconds(m.CPU.UsageNanos), "total")
	s.add(descCPUUser, seconds(m.CPU.UserNanos))
	s.add(descCPUSystem, seconds(m.CPU.SystemNanos))
	s.add(descCFSPeriods, m.CPU.Periods)
	s.add(descCFSThrottled, m.CPU.ThrottledPeriods)
	s.add(descCFSThrottledSecs, seconds(m.CPU.ThrottledNanos))

	mem := m.Memory
	s.add(descMemCache, mem.Cache)
	s.add(descMemRSS, mem.RSS)
	s.add(descMemKernel, mem.Kernel)
	s.add(descMemMapped, mem.MappedFile)
	s.add(descMemSwap, mem.Swap)
	s.add(descMemFailcnt, mem.Failcnt)
	s.add(descMemUsage, mem.Usage)
	s.add(descMemMaxUsage, mem.MaxUsage)
	s.add(descMemWorkingSet, mem.WorkingSet)
	s.add(descMemFailures, mem.PageFaults, "pgfault", "container")
	s.add(descMemFailures, mem.HierarchicalPageFaults, "pgfault", "hierarchy")
	s.add(descMemFailures, mem.MajorFaults, "pgmajfault", "container")
	s.add(descMemFailures, mem.HierarchicalMajorFaults, "pgmajfault", "hierarchy")
	s.add(descOOMEvents, mem.OOMKills)

	for _, d := range m.IO {
		major, minor := strconv.FormatUint(d.Major, 10), strconv.FormatUint(d.Minor, 10)
		s.add(descBlkioUsage, d.ReadBytes, d.Device, major, minor, "Read")
		s.add(descBlkioUsage, d.WriteBytes, d.Device, major, minor, "Write")
		s.add(descFsReadsBytes, d.ReadBytes, d.Device)
		s.add(descFsReads, d.Reads, d.Device)
		s.add(descFsWritesBytes, d.WriteBytes, d.Device)
		s.add(descFsWrites, d.Writes, d.Device)
	}

	p := m.Processes
	s.add(descProcesses, p.Processes)
	s.add(descFileDescriptors, p.FileDescriptors)
	s.add(descSockets, p.Sockets)
	s.add(descThreads, p.Threads)
	s.add(descThreadsMax, p.ThreadsMax)

	l := m.Limits
	s.add(descSpecCPUPeriod, l.CPUPeriod)
	if l.CPUQuota > 0 {
		s.add(descSpecCPUQuota, l.CPUQuota) // cadvisor reports a quota only when there is one
	}
	s.add(descSpecCPUShares, l.CPUShares)
	s.add(descSpecMemLimit, l.Memory)
	s.add(descSpecMemReserve, l.MemoryReservation)
	s.add(descSpecMemSwapLimit, l.MemorySwap)

	if ps := m.Pressure; ps != nil {
		for _, p := range []struct {
			psi              cgroupmgr.PSI
			waiting, stalled *metricDesc
		}{
			{ps.CPU, descPSICPUWaiting, descPSICPUStalled},
			{ps.Memory, descPSIMemoryWaiting, descPSIMemoryStalled},
			{ps.IO, descPSIIOWaiting, descPSIIOStalled},
		} {
			s.add(p.waiting, seconds(uint64(p.psi.Some)))
			s.add(p.stalled, seconds(uint64(p.psi.Full)))
		}
	}
	s.add(descLastSeen, uint64(max(m.Timestamp.Unix(), 0)))
}

// addFsMetrics converts a container's writable layer use and the size of
// the filesystem it is on (nil when it could not be measured); device names
// that filesystem (the snapshotter's root, as ContainerStats' FsId does).
func (s *metricSet) addFsMetrics(device string, u snapshotter.Usage, c *snapshotter.Capacity) {
	s.add(descFsUsage, uint64(max(u.Size, 0)), device)
	if c != nil {
		s.add(descFsLimit, c.Bytes, device)
		s.add(descFsInodesTotal, c.Inodes, device)
		s.add(descFsInodesFree, c.InodesFree, device)
	}
}

// addNetworkMetrics converts a pod's interface counters.
func (s *metricSet) addNetworkMetrics(ifaces []sandbox.InterfaceStats) {
	for _, i := range ifaces {
		s.add(descNetRxBytes, i.RxBytes, i.Name)
		s.add(descNetRxPackets, i.RxPackets, i.Name)
		s.add(descNetRxDropped, i.RxDropped, i.Name)
		s.add(descNetRxErrors, i.RxErrors, i.Name)
		s.add(descNetTxBytes, i.TxBytes, i.Name)
		s.add(descNetTxPackets, i.TxPackets, i.Name)
		s.add(descNetTxDropped, i.TxDropped, i.Name)
		s.add(descNetTxErrors, i.TxErrors, i.Name)
	}
}
