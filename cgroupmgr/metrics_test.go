package cgroupmgr

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
)

// fakeProc makes <proc>/<pid>/fd/<n> symlinks to targets.
func fakeProc(t *testing.T, proc string, fds map[string][]string) {
	t.Helper()
	for pid, targets := range fds {
		dir := filepath.Join(proc, pid, "fd")
		require.NoError(t, os.MkdirAll(dir, 0o755))
		for i, target := range targets {
			require.NoError(t, os.Symlink(target, filepath.Join(dir, string(rune('0'+i)))))
		}
	}
}

func TestMetricsV1FakeTree(t *testing.T) {
	root, proc, sys := t.TempDir(), t.TempDir(), t.TempDir()
	dir := "kubepods/pod1/crid-abc"
	writeTree(t, root, map[string]string{
		"cpuacct/" + dir + "/cpuacct.usage":              "3000000000\n",
		"cpuacct/" + dir + "/cpuacct.usage_user":         "2000000000\n",
		"cpuacct/" + dir + "/cpuacct.usage_sys":          "1000000000\n",
		"cpu/" + dir + "/cpu.stat":                       "nr_periods 50\nnr_throttled 7\nthrottled_time 2500000000\nnr_bursts 0\n",
		"cpu/" + dir + "/cpu.cfs_period_us":              "100000\n",
		"cpu/" + dir + "/cpu.cfs_quota_us":               "20000\n",
		"cpu/" + dir + "/cpu.shares":                     "1024\n",
		"memory/" + dir + "/memory.usage_in_bytes":       "10000\n",
		"memory/" + dir + "/memory.max_usage_in_bytes":   "12000\n",
		"memory/" + dir + "/memory.failcnt":              "3\n",
		"memory/" + dir + "/memory.kmem.usage_in_bytes":  "500\n",
		"memory/" + dir + "/memory.limit_in_bytes":       "67108864\n",
		"memory/" + dir + "/memory.soft_limit_in_bytes":  "9223372036854771712\n",
		"memory/" + dir + "/memory.memsw.limit_in_bytes": "67108864\n",
		"memory/" + dir + "/memory.oom_control":          "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
		"memory/" + dir + "/memory.stat": "cache 90\nrss 80\npgfault 11\npgmajfault 1\n" +
			"total_cache 900\ntotal_rss 3000\ntotal_mapped_file 40\ntotal_swap 60\ntotal_inactive_file 4000\ntotal_pgfault 22\ntotal_pgmajfault 2\n",
		"memory/" + dir + "/cgroup.procs": "41\n42\n",
		"pids/" + dir + "/pids.current":   "5\n",
		"pids/" + dir + "/pids.max":       "max\n",
		"blkio/" + dir + "/blkio.throttle.io_service_bytes_recursive": "254:0 Read 8192\n254:0 Write 4096\n254:0 Sync 0\n254:0 Total 12288\n" +
			"7:1 Read 100\n7:1 Write 0\nTotal 12388\n",
		"blkio/" + dir + "/blkio.throttle.io_serviced_recursive": "254:0 Read 2\n254:0 Write 1\n7:1 Read 1\nTotal 4\n",
		"unified/" + dir + "/cpu.pressure":                       "some avg10=0.00 avg60=0.00 avg300=0.00 total=1500000\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=250\n",
		"unified/" + dir + "/io.pressure":                        "some avg10=0.00 avg60=0.00 avg300=0.00 total=7\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=3\n",
	})
	writeTree(t, sys, map[string]string{"dev/block/254:0/uevent": "MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n"})
	fakeProc(t, proc, map[string][]string{
		"41": {"/dev/null", "pipe:[1]", "socket:[77]"},
		"42": {"socket:[78]", "/etc/hosts"},
		// 43 exited: no /proc entry, yet listed (it left after the read)
	})

	r := Reader{Root: root, Driver: Cgroupfs, Proc: proc, Sys: sys}
	m, err := r.Metrics("/" + dir)
	require.NoError(t, err)
	require.WithinDuration(t, time.Now(), m.Timestamp, time.Minute)
	require.Equal(t, CPUMetrics{
		UsageNanos: 3e9, UserNanos: 2e9, SystemNanos: 1e9,
		Periods: 50, ThrottledPeriods: 7, ThrottledNanos: 2.5e9,
	}, m.CPU)
	require.Equal(t, MemoryMetrics{
		Usage: 10000, MaxUsage: 12000, WorkingSet: 6000,
		Cache: 900, RSS: 3000, MappedFile: 40, Swap: 60, Kernel: 500,
		Failcnt: 3, OOMKills: 2,
		PageFaults: 11, MajorFaults: 1, HierarchicalPageFaults: 22, HierarchicalMajorFaults: 2,
	}, m.Memory)
	require.Equal(t, []DeviceIO{
		{Major: 7, Minor: 1, Device: "7:1", ReadBytes: 100, Reads: 1},
		{Major: 254, Minor: 0, Device: "/dev/vda", ReadBytes: 8192, WriteBytes: 4096, Reads: 2, Writes: 1},
	}, m.IO, "ordered by device number; unnamed devices by number")
	require.Equal(t, ProcessMetrics{Processes: 2, Threads: 5, ThreadsMax: 0, FileDescriptors: 5, Sockets: 2}, m.Processes)
	require.Equal(t, Limits{
		CPUPeriod: 100000, CPUQuota: 20000, CPUShares: 1024,
		Memory: 64 << 20, MemoryReservation: 0, MemorySwap: 64 << 20,
	}, m.Limits, "v1's huge unlimited soft limit reads as 0")
	require.Equal(t, &Pressure{
		CPU: PSI{Some: 1500 * time.Millisecond, Full: 250 * time.Microsecond},
		IO:  PSI{Some: 7 * time.Microsecond, Full: 3 * time.Microsecond},
	}, m.Pressure, "from the unified hierarchy of a hybrid host; memory.pressure missing reads as zero")

	_, err = r.Metrics("/kubepods/pod1/crid-missing")
	require.True(t, errdefs.IsNotFound(err), "%v", err)
}

func TestMetricsV1Minimal(t *testing.T) {
	// Only the files every v1 memory and cpuacct cgroup has: the rest
	// reads as zero, cpuacct.stat's ticks stand in for usage_user/sys,
	// and no unified hierarchy means no pressure.
	root := t.TempDir()
	dir := "c1"
	writeTree(t, root, map[string]string{
		"cpuacct/" + dir + "/cpuacct.usage":        "5\n",
		"cpuacct/" + dir + "/cpuacct.stat":         "user 300\nsystem 50\n",
		"memory/" + dir + "/memory.usage_in_bytes": "100\n",
		"memory/" + dir + "/memory.stat":           "total_inactive_file 30\n",
		"memory/" + dir + "/cgroup.procs":          "",
		"cpu/" + dir + "/cpu.cfs_quota_us":         "-1\n",
	})
	m, err := Reader{Root: root, Driver: Cgroupfs, Proc: t.TempDir()}.Metrics("/" + dir)
	require.NoError(t, err)
	require.EqualValues(t, 3*time.Second, m.CPU.UserNanos)
	require.EqualValues(t, 500*time.Millisecond, m.CPU.SystemNanos)
	require.EqualValues(t, 70, m.Memory.WorkingSet)
	require.Zero(t, m.Limits)
	require.Zero(t, m.Processes)
	require.Empty(t, m.IO)
	require.Nil(t, m.Pressure)
}

func TestMetricsV2FakeTree(t *testing.T) {
	root, proc := t.TempDir(), t.TempDir()
	dir := "kubepods.slice/kubepods-besteffort.slice/crid-abc.scope"
	writeTree(t, root, map[string]string{
		dir + "/cpu.stat": "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n" +
			"nr_periods 9\nnr_throttled 4\nthrottled_usec 300\n",
		dir + "/cpu.max":             "20000 100000\n",
		dir + "/cpu.weight":          "39\n",
		dir + "/memory.current":      "8192\n",
		dir + "/memory.peak":         "9000\n",
		dir + "/memory.max":          "67108864\n",
		dir + "/memory.low":          "0\n",
		dir + "/memory.swap.max":     "max\n",
		dir + "/memory.swap.current": "12\n",
		dir + "/memory.events":       "low 0\nhigh 0\nmax 6\noom 1\noom_kill 1\noom_group_kill 0\n",
		dir + "/memory.stat": "anon 4096\nfile 2048\nkernel 700\nfile_mapped 64\ninactive_file 1024\n" +
			"pgfault 5\npgmajfault 1\n",
		dir + "/io.stat":         "254:0 rbytes=8192 wbytes=4096 rios=2 wios=1 dbytes=0 dios=0\n",
		dir + "/pids.current":    "3\n",
		dir + "/pids.max":        "4096\n",
		dir + "/cgroup.procs":    "7\n",
		dir + "/cpu.pressure":    "some avg10=0.00 avg60=0.00 avg300=0.00 total=10\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=5\n",
		dir + "/memory.pressure": "some avg10=0.00 avg60=0.00 avg300=0.00 total=20\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=15\n",
		dir + "/io.pressure":     "some avg10=0.00 avg60=0.00 avg300=0.00 total=30\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=25\n",
	})
	fakeProc(t, proc, map[string][]string{"7": {"socket:[1]", "/dev/null"}})

	r := Reader{Root: root, Driver: Systemd, V2: true, Proc: proc, Sys: t.TempDir()}
	m, err := r.Metrics("kubepods-besteffort.slice:crid:abc")
	require.NoError(t, err)
	require.Equal(t, CPUMetrics{
		UsageNanos: 1500000, UserNanos: 1000000, SystemNanos: 500000,
		Periods: 9, ThrottledPeriods: 4, ThrottledNanos: 300000,
	}, m.CPU)
	require.Equal(t, MemoryMetrics{
		Usage: 8192, MaxUsage: 9000, WorkingSet: 7168,
		Cache: 2048, RSS: 4096, MappedFile: 64, Swap: 12, Kernel: 700,
		Failcnt: 6, OOMKills: 1,
		PageFaults: 5, MajorFaults: 1, HierarchicalPageFaults: 5, HierarchicalMajorFaults: 1,
	}, m.Memory)
	require.Equal(t, []DeviceIO{{Major: 254, Device: "254:0", ReadBytes: 8192, WriteBytes: 4096, Reads: 2, Writes: 1}}, m.IO)
	require.Equal(t, ProcessMetrics{Processes: 1, Threads: 3, ThreadsMax: 4096, FileDescriptors: 2, Sockets: 1}, m.Processes)
	require.Equal(t, Limits{CPUPeriod: 100000, CPUQuota: 20000, CPUShares: 998, Memory: 64 << 20}, m.Limits,
		"weight 39 is what runc makes of 1024 shares")
	require.Equal(t, &Pressure{
		CPU:    PSI{Some: 10 * time.Microsecond, Full: 5 * time.Microsecond},
		Memory: PSI{Some: 20 * time.Microsecond, Full: 15 * time.Microsecond},
		IO:     PSI{Some: 30 * time.Microsecond, Full: 25 * time.Microsecond},
	}, m.Pressure)

	// Before Linux 5.18 memory.stat has no "kernel": its parts add up.
	writeTree(t, root, map[string]string{
		dir + "/memory.stat": "kernel_stack 10\npagetables 20\nslab 30\nsock 40\npercpu 50\n",
		dir + "/cpu.max":     "max 100000\n",
	})
	m, err = r.Metrics("kubepods-besteffort.slice:crid:abc")
	require.NoError(t, err)
	require.EqualValues(t, 150, m.Memory.Kernel)
	require.Zero(t, m.Limits.CPUQuota)
	require.EqualValues(t, 100000, m.Limits.CPUPeriod)

	_, err = r.Metrics("kubepods-besteffort.slice:crid:gone")
	require.True(t, errdefs.IsNotFound(err), "%v", err)
}
