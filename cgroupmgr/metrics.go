package cgroupmgr

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
)

// Metrics is a container cgroup's statistics in the detail cadvisor exports
// them on kubelet's /metrics/cadvisor: CPU, memory, block I/O, the
// cgroup's processes, the limits set on it, and pressure stall information.
//
// Counters read from files a kernel or hierarchy does not have are zero
// (memory.peak before Linux 5.19, swap without swap accounting, …).
type Metrics struct {
	Timestamp time.Time
	CPU       CPUMetrics
	Memory    MemoryMetrics
	// IO is per block device, by major and minor number; empty when the
	// blkio (v1) or io (v2) controller accounted nothing.
	IO        []DeviceIO
	Processes ProcessMetrics
	Limits    Limits
	// Pressure is nil where the kernel reports none for the cgroup: a v1
	// host without the unified hierarchy, or a kernel without PSI.
	Pressure *Pressure
}

// CPUMetrics are cumulative, in nanoseconds and CFS enforcement periods.
type CPUMetrics struct {
	UsageNanos, UserNanos, SystemNanos uint64
	// Periods elapsed with a quota set, how many of them were throttled,
	// and the time throttled.
	Periods, ThrottledPeriods, ThrottledNanos uint64
}

// MemoryMetrics are in bytes, except the counts.
type MemoryMetrics struct {
	// Usage is the charged memory, page cache included; MaxUsage its
	// high-water mark (v2: memory.peak); WorkingSet leaves out inactive
	// file pages (what kubelet evicts on).
	Usage, MaxUsage, WorkingSet  uint64
	Cache, RSS, MappedFile, Swap uint64
	// Kernel is the kernel memory charged to the cgroup.
	Kernel uint64
	// Failcnt counts the times usage hit the limit (v1 memory.failcnt,
	// v2 memory.events "max").
	Failcnt uint64
	// OOMKills counts the cgroup's processes the OOM killer killed.
	OOMKills uint64
	// PageFaults and MajorFaults are the cgroup's own; the Hierarchical
	// ones include its descendants. v2 reports only the latter, so there
	// both pairs are equal.
	PageFaults, MajorFaults                         uint64
	HierarchicalPageFaults, HierarchicalMajorFaults uint64
}

// DeviceIO is the cgroup's I/O on one block device.
type DeviceIO struct {
	Major, Minor uint64
	// Device is the device node ("/dev/vda"), or "major:minor" when sysfs
	// does not name it.
	Device                               string
	ReadBytes, WriteBytes, Reads, Writes uint64
}

// ProcessMetrics describe the processes in the cgroup.
type ProcessMetrics struct {
	Processes uint64 // in cgroup.procs
	// Threads is pids.current; ThreadsMax is pids.max, 0 for no limit.
	Threads, ThreadsMax uint64
	// FileDescriptors and Sockets are open in the cgroup's processes.
	FileDescriptors, Sockets uint64
}

// Limits are what the OCI runtime set on the cgroup.
type Limits struct {
	CPUPeriod uint64 // CFS period in µs
	CPUQuota  uint64 // CFS quota in µs per period; 0 for none
	// CPUShares is cpu.shares (v1), or v2's cpu.weight mapped back to
	// shares the way runc maps shares to weight.
	CPUShares uint64
	// Memory (limit), MemoryReservation (v1 soft limit, v2 memory.low)
	// and MemorySwap (v1 memory+swap, v2 swap alone) are in bytes; 0 for
	// no limit.
	Memory, MemoryReservation, MemorySwap uint64
}

// Pressure is the cgroup's pressure stall information.
type Pressure struct {
	CPU, Memory, IO PSI
}

// PSI is the cumulative time some task (Some, "waiting") or all non-idle
// tasks at once (Full, "stalled") were delayed for lack of a resource.
type PSI struct {
	Some, Full time.Duration
}

// noLimit is where v1 limits start meaning "unlimited": the kernel writes
// a huge page-aligned number.
const noLimit = 1 << 62

// Metrics reads the statistics of the cgroup at cgroupsPath. A cgroup that
// does not exist (a container created but not started, or gone) is
// ErrNotFound.
func (r Reader) Metrics(cgroupsPath string) (Metrics, error) {
	dir, err := r.Driver.Dir(cgroupsPath)
	if err != nil {
		return Metrics{}, err
	}
	m := Metrics{Timestamp: time.Now()}
	var procs string // the directory holding cgroup.procs
	if r.V2 {
		full := filepath.Join(r.Root, dir)
		err = r.metricsV2(full, &m)
		procs = full
	} else {
		err = r.metricsV1(dir, &m)
		procs = filepath.Join(r.Root, "memory", dir)
	}
	if err == nil {
		m.Processes, err = r.processes(procs, m.Processes)
	}
	// A cgroup removed while it is read fails with ENOENT, or ENODEV for
	// a file opened before.
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENODEV) {
		return Metrics{}, fmt.Errorf("cgroup %s: %w", cgroupsPath, errdefs.ErrNotFound)
	}
	if err != nil {
		return Metrics{}, fmt.Errorf("cgroup %s: %w", cgroupsPath, err)
	}
	return m, nil
}

// metricsV1 reads the cpu, cpuacct, memory, blkio and pids hierarchies; the
// cpuacct and memory files must exist, the others may not.
func (r Reader) metricsV1(dir string, m *Metrics) error {
	h := func(ctrl, file string) string { return filepath.Join(r.Root, ctrl, dir, file) }
	var err error
	if m.CPU.UsageNanos, err = readUint(h("cpuacct", "cpuacct.usage")); err != nil {
		return err
	}
	var user, sys uint64
	if err := readOpt([]optFile{
		{h("cpuacct", "cpuacct.usage_user"), &user, false}, // Linux 4.7+
		{h("cpuacct", "cpuacct.usage_sys"), &sys, false},
	}); err != nil {
		return err
	}
	if user == 0 && sys == 0 {
		// cpuacct.stat counts USER_HZ ticks, 100 a second on Linux.
		st, err := optKeyValues(h("cpuacct", "cpuacct.stat"))
		if err != nil {
			return err
		}
		user, sys = st["user"]*uint64(10*time.Millisecond), st["system"]*uint64(10*time.Millisecond)
	}
	m.CPU.UserNanos, m.CPU.SystemNanos = user, sys
	cpu, err := optKeyValues(h("cpu", "cpu.stat"))
	if err != nil {
		return err
	}
	m.CPU.Periods, m.CPU.ThrottledPeriods, m.CPU.ThrottledNanos = cpu["nr_periods"], cpu["nr_throttled"], cpu["throttled_time"]

	mem := &m.Memory
	if mem.Usage, err = readUint(h("memory", "memory.usage_in_bytes")); err != nil {
		return err
	}
	kv, err := readKeyValues(h("memory", "memory.stat"))
	if err != nil {
		return err
	}
	mem.WorkingSet = sub(mem.Usage, kv["total_inactive_file"])
	mem.Cache, mem.RSS, mem.MappedFile, mem.Swap = kv["total_cache"], kv["total_rss"], kv["total_mapped_file"], kv["total_swap"]
	mem.PageFaults, mem.MajorFaults = kv["pgfault"], kv["pgmajfault"]
	mem.HierarchicalPageFaults, mem.HierarchicalMajorFaults = kv["total_pgfault"], kv["total_pgmajfault"]
	oom, err := optKeyValues(h("memory", "memory.oom_control"))
	if err != nil {
		return err
	}
	mem.OOMKills = oom["oom_kill"]
	if err := readOpt([]optFile{
		{h("memory", "memory.max_usage_in_bytes"), &mem.MaxUsage, false},
		{h("memory", "memory.failcnt"), &mem.Failcnt, false},
		{h("memory", "memory.kmem.usage_in_bytes"), &mem.Kernel, false},
		{h("memory", "memory.limit_in_bytes"), &m.Limits.Memory, true},
		{h("memory", "memory.soft_limit_in_bytes"), &m.Limits.MemoryReservation, true},
		{h("memory", "memory.memsw.limit_in_bytes"), &m.Limits.MemorySwap, true},
		{h("cpu", "cpu.cfs_period_us"), &m.Limits.CPUPeriod, false},
		{h("cpu", "cpu.shares"), &m.Limits.CPUShares, false},
		{h("pids", "pids.current"), &m.Processes.Threads, false},
		{h("pids", "pids.max"), &m.Processes.ThreadsMax, true},
	}); err != nil {
		return err
	}
	quota, err := os.ReadFile(h("cpu", "cpu.cfs_quota_us"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if q, err := strconv.ParseInt(strings.TrimSpace(string(quota)), 10, 64); err == nil && q > 0 {
		m.Limits.CPUQuota = uint64(q) // -1 is no quota
	}
	if m.IO, err = r.blkioV1(filepath.Join(r.Root, "blkio", dir)); err != nil {
		return err
	}
	// On a hybrid host the container also has a cgroup in the unified
	// hierarchy, where the kernel keeps its pressure stall information.
	m.Pressure = readPressure(filepath.Join(r.Root, "unified", dir))
	return nil
}

// metricsV2 reads the unified hierarchy's cgroup at dir; cpu.stat and
// memory.current must exist, the other files may not.
func (r Reader) metricsV2(dir string, m *Metrics) error {
	f := func(file string) string { return filepath.Join(dir, file) }
	limits := limitsDirV2(dir)
	lim := func(file string) string { return filepath.Join(limits, file) }
	cpu, err := readKeyValues(f("cpu.stat"))
	if err != nil {
		return err
	}
	us := uint64(time.Microsecond)
	m.CPU = CPUMetrics{
		UsageNanos: cpu["usage_usec"] * us, UserNanos: cpu["user_usec"] * us, SystemNanos: cpu["system_usec"] * us,
		Periods: cpu["nr_periods"], ThrottledPeriods: cpu["nr_throttled"], ThrottledNanos: cpu["throttled_usec"] * us,
	}
	mem := &m.Memory
	if mem.Usage, err = readUint(f("memory.current")); err != nil {
		return err
	}
	kv, err := readKeyValues(f("memory.stat"))
	if err != nil {
		return err
	}
	mem.WorkingSet = sub(mem.Usage, kv["inactive_file"])
	mem.Cache, mem.RSS, mem.MappedFile = kv["file"], kv["anon"], kv["file_mapped"]
	mem.Kernel = kv["kernel"] // Linux 5.18+; before, its main parts:
	if _, ok := kv["kernel"]; !ok {
		mem.Kernel = kv["kernel_stack"] + kv["pagetables"] + kv["slab"] + kv["sock"] + kv["percpu"]
	}
	mem.PageFaults, mem.MajorFaults = kv["pgfault"], kv["pgmajfault"]
	mem.HierarchicalPageFaults, mem.HierarchicalMajorFaults = kv["pgfault"], kv["pgmajfault"]
	events, err := optKeyValues(f("memory.events"))
	if err != nil {
		return err
	}
	mem.Failcnt, mem.OOMKills = events["max"], events["oom_kill"]
	if err := readOpt([]optFile{
		{f("memory.peak"), &mem.MaxUsage, false}, // Linux 5.19+
		{f("memory.swap.current"), &mem.Swap, false},
		{lim("memory.max"), &m.Limits.Memory, true},
		{lim("memory.low"), &m.Limits.MemoryReservation, true},
		{lim("memory.swap.max"), &m.Limits.MemorySwap, true},
		{f("pids.current"), &m.Processes.Threads, false},
		{lim("pids.max"), &m.Processes.ThreadsMax, true},
	}); err != nil {
		return err
	}
	if err := readCPUMax(lim("cpu.max"), &m.Limits); err != nil {
		return err
	}
	var weight uint64
	if err := readOpt([]optFile{{lim("cpu.weight"), &weight, false}}); err != nil {
		return err
	}
	if weight >= 1 && weight <= 10000 {
		// The inverse of runc's shares → weight conversion,
		// 1 + ((shares-2)*9999)/262142, as cadvisor computes it.
		m.Limits.CPUShares = 2 + ((weight-1)*262142)/9999
	}
	if m.IO, err = r.ioV2(f("io.stat")); err != nil {
		return err
	}
	m.Pressure = readPressure(dir)
	return nil
}

// readCPUMax parses cpu.max, "$MAX $PERIOD" with "max" for no quota.
func readCPUMax(p string, l *Limits) error {
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	quota, period, _ := strings.Cut(strings.TrimSpace(string(b)), " ")
	if l.CPUPeriod, err = strconv.ParseUint(period, 10, 64); err != nil {
		return fmt.Errorf("parse %s: %w", p, err)
	}
	if quota != "max" {
		if l.CPUQuota, err = strconv.ParseUint(quota, 10, 64); err != nil {
			return fmt.Errorf("parse %s: %w", p, err)
		}
	}
	return nil
}

// blkioV1 reads the throttle policy's recursive counters, which account
// every I/O that reaches a device whatever the I/O scheduler.
func (r Reader) blkioV1(dir string) ([]DeviceIO, error) {
	devs := map[[2]uint64]*DeviceIO{}
	for _, f := range []struct {
		name        string
		read, write func(*DeviceIO) *uint64
	}{
		{"blkio.throttle.io_service_bytes_recursive", func(d *DeviceIO) *uint64 { return &d.ReadBytes }, func(d *DeviceIO) *uint64 { return &d.WriteBytes }},
		{"blkio.throttle.io_serviced_recursive", func(d *DeviceIO) *uint64 { return &d.Reads }, func(d *DeviceIO) *uint64 { return &d.Writes }},
	} {
		b, err := os.ReadFile(filepath.Join(dir, f.name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		// "8:0 Read 4096" lines, then "Total N".
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) != 3 {
				continue
			}
			major, minor, ok := parseDevice(fields[0])
			v, err := strconv.ParseUint(fields[2], 10, 64)
			if !ok || err != nil {
				continue
			}
			d := device(devs, major, minor)
			switch fields[1] {
			case "Read":
				*f.read(d) = v
			case "Write":
				*f.write(d) = v
			}
		}
		if err := sc.Err(); err != nil {
			return nil, err
		}
	}
	return r.sortDevices(devs), nil
}

// ioV2 reads io.stat: "8:0 rbytes=N wbytes=N rios=N wios=N dbytes=N dios=N".
func (r Reader) ioV2(p string) ([]DeviceIO, error) {
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	devs := map[[2]uint64]*DeviceIO{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		major, minor, ok := parseDevice(fields[0])
		if !ok {
			continue
		}
		d := device(devs, major, minor)
		for _, kv := range fields[1:] {
			k, v, _ := strings.Cut(kv, "=")
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				continue
			}
			switch k {
			case "rbytes":
				d.ReadBytes = n
			case "wbytes":
				d.WriteBytes = n
			case "rios":
				d.Reads = n
			case "wios":
				d.Writes = n
			}
		}
	}
	return r.sortDevices(devs), sc.Err()
}

func parseDevice(s string) (major, minor uint64, ok bool) {
	a, b, found := strings.Cut(s, ":")
	if !found {
		return 0, 0, false
	}
	major, errA := strconv.ParseUint(a, 10, 64)
	minor, errB := strconv.ParseUint(b, 10, 64)
	return major, minor, errA == nil && errB == nil
}

func device(devs map[[2]uint64]*DeviceIO, major, minor uint64) *DeviceIO {
	k := [2]uint64{major, minor}
	if devs[k] == nil {
		devs[k] = &DeviceIO{Major: major, Minor: minor}
	}
	return devs[k]
}

// sortDevices names the devices and orders them by number.
func (r Reader) sortDevices(devs map[[2]uint64]*DeviceIO) []DeviceIO {
	out := make([]DeviceIO, 0, len(devs))
	for _, d := range devs {
		d.Device = r.deviceName(d.Major, d.Minor)
		out = append(out, *d)
	}
	slices.SortFunc(out, func(a, b DeviceIO) int {
		return cmp.Or(cmp.Compare(a.Major, b.Major), cmp.Compare(a.Minor, b.Minor))
	})
	return out
}

// deviceName finds a block device's node name in sysfs, as cadvisor does.
func (r Reader) deviceName(major, minor uint64) string {
	num := fmt.Sprintf("%d:%d", major, minor)
	sys := r.Sys
	if sys == "" {
		sys = "/sys"
	}
	b, err := os.ReadFile(filepath.Join(sys, "dev", "block", num, "uevent"))
	if err != nil {
		return num
	}
	for _, line := range strings.Split(string(b), "\n") {
		if name, ok := strings.CutPrefix(line, "DEVNAME="); ok && name != "" {
			return "/dev/" + name
		}
	}
	return num
}

// processes counts the processes in cgroup.procs of dir and the file
// descriptors and sockets they hold open. A process that exits meanwhile
// is left out.
func (r Reader) processes(dir string, pm ProcessMetrics) (ProcessMetrics, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return pm, err
	}
	proc := r.Proc
	if proc == "" {
		proc = "/proc"
	}
	pm.Processes, pm.FileDescriptors, pm.Sockets = 0, 0, 0
	for _, pid := range strings.Fields(string(b)) {
		pm.Processes++
		fdDir := filepath.Join(proc, pid, "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue
		}
		pm.FileDescriptors += uint64(len(fds))
		for _, fd := range fds {
			if target, err := os.Readlink(filepath.Join(fdDir, fd.Name())); err == nil && strings.HasPrefix(target, "socket:") {
				pm.Sockets++
			}
		}
	}
	return pm, nil
}

// readPressure reads cpu.pressure, memory.pressure and io.pressure in dir:
//
//	some avg10=0.00 avg60=0.00 avg300=0.00 total=1234
//	full avg10=0.00 avg60=0.00 avg300=0.00 total=0
//
// with totals in µs. It returns nil when dir has no cpu.pressure, or the
// kernel refuses to read it (booted with psi=0). A cgroup that vanishes
// meanwhile is noticed by the caller's other reads.
func readPressure(dir string) *Pressure {
	var p Pressure
	for _, f := range []struct {
		name string
		psi  *PSI
	}{{"cpu.pressure", &p.CPU}, {"memory.pressure", &p.Memory}, {"io.pressure", &p.IO}} {
		b, err := os.ReadFile(filepath.Join(dir, f.name))
		if err != nil {
			if f.name == "cpu.pressure" {
				return nil
			}
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			kind, rest, _ := strings.Cut(line, " ")
			i := strings.Index(rest, "total=")
			if i < 0 {
				continue
			}
			total, err := strconv.ParseUint(strings.TrimSpace(rest[i+len("total="):]), 10, 64)
			if err != nil {
				continue
			}
			switch kind {
			case "some":
				f.psi.Some = time.Duration(total) * time.Microsecond
			case "full":
				f.psi.Full = time.Duration(total) * time.Microsecond
			}
		}
	}
	return &p
}

// optFile is a file holding one number that may not exist (it reads as
// 0). A limit also reads as 0 when it is "max" or v1's huge "unlimited".
type optFile struct {
	path  string
	dst   *uint64
	limit bool
}

func readOpt(files []optFile) error {
	for _, f := range files {
		b, err := os.ReadFile(f.path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		s := strings.TrimSpace(string(b))
		if f.limit && s == "max" {
			continue
		}
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return fmt.Errorf("parse %s: %w", f.path, err)
		}
		if f.limit && v >= noLimit {
			continue
		}
		*f.dst = v
	}
	return nil
}

// optKeyValues is readKeyValues of a file that may not exist.
func optKeyValues(p string) (map[string]uint64, error) {
	kv, err := readKeyValues(p)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]uint64{}, nil
	}
	return kv, err
}
