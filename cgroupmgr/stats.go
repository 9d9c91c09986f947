package cgroupmgr

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
)

// Stats is a cgroup's CPU and memory use, as kubelet's summary API wants it.
type Stats struct {
	Timestamp time.Time
	// CPUUsageNanos is the cumulative CPU time of the cgroup.
	CPUUsageNanos uint64
	// MemoryUsage is the charged memory including page cache; the working
	// set leaves out inactive file pages (what kubelet evicts on).
	MemoryUsage, MemoryWorkingSet, MemoryRSS uint64
	// MemoryAvailable is limit minus working set; 0 without a limit.
	MemoryAvailable         uint64
	PageFaults, MajorFaults uint64
}

// Reader reads cgroup statistics from a cgroup filesystem.
type Reader struct {
	// Root is the cgroup filesystem's mount point, /sys/fs/cgroup.
	Root   string
	Driver Driver
	// V2 is true on a unified (v2-only) hierarchy; else the v1 cpuacct and
	// memory hierarchies are read.
	V2 bool
	// Proc and Sys are where procfs and sysfs are mounted, for Metrics'
	// file descriptor counts and block device names; "" means /proc and
	// /sys.
	Proc, Sys string
}

// NewReader probes the host's cgroup mode.
func NewReader(driver Driver) Reader {
	_, err := os.Stat("/sys/fs/cgroup/cgroup.controllers")
	return Reader{Root: "/sys/fs/cgroup", Driver: driver, V2: err == nil}
}

// Dir turns a container's cgroups path (as in its OCI spec) into the
// directory under a hierarchy: "/a/b" as it is for cgroupfs, and
// "kubepods-besteffort.slice:crid:<id>" expanded the way systemd nests
// slices ("/kubepods.slice/kubepods-besteffort.slice/crid-<id>.scope").
func (d Driver) Dir(cgroupsPath string) (string, error) {
	if d != Systemd {
		return filepath.Clean("/" + cgroupsPath), nil
	}
	parts := strings.Split(cgroupsPath, ":")
	if len(parts) != 3 || !strings.HasSuffix(parts[0], ".slice") {
		return "", fmt.Errorf("systemd cgroups path %q: %w", cgroupsPath, errdefs.ErrInvalidArgument)
	}
	slice := strings.TrimSuffix(parts[0], ".slice")
	dir := "/"
	if slice != "-" {
		prefix := ""
		for _, word := range strings.Split(slice, "-") {
			if word == "" {
				return "", fmt.Errorf("systemd slice %q: %w", parts[0], errdefs.ErrInvalidArgument)
			}
			prefix += word
			dir = filepath.Join(dir, prefix+".slice")
			prefix += "-"
		}
	}
	return filepath.Join(dir, parts[1]+"-"+parts[2]+".scope"), nil
}

// Stats reads the statistics of the cgroup at cgroupsPath. A cgroup that
// does not exist (a container created but not started, or gone) is
// ErrNotFound.
func (r Reader) Stats(cgroupsPath string) (Stats, error) {
	dir, err := r.Driver.Dir(cgroupsPath)
	if err != nil {
		return Stats{}, err
	}
	st := Stats{Timestamp: time.Now()}
	if r.V2 {
		err = r.statsV2(filepath.Join(r.Root, dir), &st)
	} else {
		err = r.statsV1(dir, &st)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return Stats{}, fmt.Errorf("cgroup %s: %w", cgroupsPath, errdefs.ErrNotFound)
	}
	return st, err
}

func (r Reader) statsV1(dir string, st *Stats) error {
	cpu, err := readUint(filepath.Join(r.Root, "cpuacct", dir, "cpuacct.usage"))
	if err != nil {
		return err
	}
	st.CPUUsageNanos = cpu
	mem := filepath.Join(r.Root, "memory", dir)
	if st.MemoryUsage, err = readUint(filepath.Join(mem, "memory.usage_in_bytes")); err != nil {
		return err
	}
	kv, err := readKeyValues(filepath.Join(mem, "memory.stat"))
	if err != nil {
		return err
	}
	st.MemoryWorkingSet = sub(st.MemoryUsage, kv["total_inactive_file"])
	st.MemoryRSS = kv["total_rss"]
	st.PageFaults, st.MajorFaults = kv["total_pgfault"], kv["total_pgmajfault"]
	limit, err := readUint(filepath.Join(mem, "memory.limit_in_bytes"))
	if err != nil {
		return err
	}
	if limit < 1<<62 { // v1 writes a huge page-aligned number for "no limit"
		st.MemoryAvailable = sub(limit, st.MemoryWorkingSet)
	}
	return nil
}

func (r Reader) statsV2(dir string, st *Stats) error {
	cpu, err := readKeyValues(filepath.Join(dir, "cpu.stat"))
	if err != nil {
		return err
	}
	st.CPUUsageNanos = cpu["usage_usec"] * 1000
	if st.MemoryUsage, err = readUint(filepath.Join(dir, "memory.current")); err != nil {
		return err
	}
	kv, err := readKeyValues(filepath.Join(dir, "memory.stat"))
	if err != nil {
		return err
	}
	st.MemoryWorkingSet = sub(st.MemoryUsage, kv["inactive_file"])
	st.MemoryRSS = kv["anon"]
	st.PageFaults, st.MajorFaults = kv["pgfault"], kv["pgmajfault"]
	max, err := os.ReadFile(filepath.Join(limitsDirV2(dir), "memory.max"))
	if err != nil {
		return err
	}
	if s := strings.TrimSpace(string(max)); s != "max" {
		limit, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return fmt.Errorf("parse memory.max of %s: %w", dir, err)
		}
		st.MemoryAvailable = sub(limit, st.MemoryWorkingSet)
	}
	return nil
}

// crunSubgroup is where crun puts a container under the systemd driver on
// cgroup v2 (run.oci.systemd.subgroup): its process and its limits live in
// <scope>/container, the scope itself stays unlimited.
const crunSubgroup = "container"

// limitsDirV2 is the cgroup whose limits apply to the container of cgroup
// dir: dir, or crun's subgroup of it. Usage counters are read from dir,
// which includes the subgroup.
func limitsDirV2(dir string) string {
	if fi, err := os.Stat(filepath.Join(dir, crunSubgroup, "memory.max")); err == nil && fi.Mode().IsRegular() {
		return filepath.Join(dir, crunSubgroup)
	}
	return dir
}

func sub(a, b uint64) uint64 {
	if b > a {
		return 0
	}
	return a - b
}

func readUint(p string) (uint64, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse %s: %w", p, err)
	}
	return v, nil
}

// readKeyValues reads "key value" lines (memory.stat, cpu.stat).
func readKeyValues(p string) (map[string]uint64, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	out := map[string]uint64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		if n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64); err == nil {
			out[k] = n
		}
	}
	return out, sc.Err()
}

// OOMKills returns how many processes of the cgroup at cgroupsPath (and its
// descendants, such as crun's subgroup) the kernel's OOM killer killed: the
// oom_kill counter of memory.oom_control on v1, of memory.events on v2.
// Systemd paths are expanded as in Dir. A cgroup that is gone is
// ErrNotFound: systemd removes a scope as soon as it is empty, so read it
// as soon as the container exits.
func (r Reader) OOMKills(cgroupsPath string) (uint64, error) {
	dir, err := r.Driver.Dir(cgroupsPath)
	if err != nil {
		return 0, err
	}
	return r.oomKillsIn(dir)
}

// ParentOOMKills is OOMKills of the cgroup that holds the one at
// cgroupsPath (a pod's slice or cgroup): it outlives the container's, and
// counts the kills in it.
func (r Reader) ParentOOMKills(cgroupsPath string) (uint64, error) {
	dir, err := r.Driver.Dir(cgroupsPath)
	if err != nil {
		return 0, err
	}
	return r.oomKillsIn(filepath.Dir(dir))
}

func (r Reader) oomKillsIn(dir string) (uint64, error) {
	file := filepath.Join(r.Root, "memory", dir, "memory.oom_control")
	if r.V2 {
		file = filepath.Join(r.Root, dir, "memory.events")
	}
	kv, err := readKeyValues(file)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENODEV) { // ENODEV: being removed
		return 0, fmt.Errorf("cgroup %s: %w", dir, errdefs.ErrNotFound)
	}
	if err != nil {
		return 0, err
	}
	n, ok := kv["oom_kill"]
	if !ok {
		return 0, fmt.Errorf("%s has no oom_kill counter (kernel older than 4.13)", file)
	}
	return n, nil
}

// OOMEventsFile is the file whose modification announces an OOM kill in
// the cgroup at cgroupsPath: memory.events on v2 (inotify sees the kernel
// update it). v1 has none to watch (its memory.oom_control takes an
// eventfd instead): "".
func (r Reader) OOMEventsFile(cgroupsPath string) (string, error) {
	if !r.V2 {
		return "", nil
	}
	dir, err := r.Driver.Dir(cgroupsPath)
	if err != nil {
		return "", err
	}
	return filepath.Join(r.Root, dir, "memory.events"), nil
}
