package cgroupmgr

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/crid-dev/crid/internal/testutil"
)

// TestStatsRealKernel reads the stats of a real cgroup with a process in it:
// the v1 cpuacct and memory hierarchies on a v1 or hybrid host, the unified
// hierarchy on a v2 host (make test-v2vm runs it there).
func TestStatsRealKernel(t *testing.T) {
	testutil.RequiresRoot(t)
	var fs unix.Statfs_t
	require.NoError(t, unix.Statfs("/sys/fs/cgroup", &fs))
	v2 := fs.Type == unix.CGROUP2_SUPER_MAGIC
	r := NewReader(Cgroupfs)
	require.Equal(t, v2, r.V2, "NewReader's probe agrees with statfs")
	t.Logf("cgroup v2: %v", v2)

	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "crid-test-stats-" + hex.EncodeToString(b[:])
	const limit = 256 << 20
	var dirs []string // one per hierarchy, the memory one first
	if v2 {
		// The memory controller must be enabled for the root's children
		// (systemd does that); cpu.stat exists in every v2 cgroup.
		_ = os.WriteFile("/sys/fs/cgroup/cgroup.subtree_control", []byte("+memory"), 0)
		dirs = []string{filepath.Join(r.Root, name)}
	} else {
		dirs = []string{filepath.Join(r.Root, "memory", name), filepath.Join(r.Root, "cpuacct", name)}
	}
	for _, d := range dirs {
		require.NoError(t, os.Mkdir(d, 0o755))
	}
	t.Cleanup(func() {
		for _, d := range dirs {
			// A killed process leaves its cgroup a moment later.
			for i := 0; i < 100 && os.Remove(d) != nil && fileExists(d); i++ {
				time.Sleep(20 * time.Millisecond)
			}
			assert.NoFileExists(t, d, "cgroup removed")
		}
	})
	limitFile := "memory.limit_in_bytes"
	if v2 {
		limitFile = "memory.max"
	}
	require.NoError(t, os.WriteFile(filepath.Join(dirs[0], limitFile), []byte(strconv.Itoa(limit)), 0))

	// The shell waits on stdin until it is in the cgroup, burns some CPU
	// and touches some memory there, then becomes a sleep.
	cmd := exec.Command("sh", "-c", `read x; i=0; s=; while [ $i -lt 3000 ]; do i=$((i+1)); s="$s$i"; done; echo ready; exec sleep 1000`)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	start := time.Now()
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	for _, d := range dirs {
		require.NoError(t, os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0))
	}
	_, err = fmt.Fprintln(stdin, "go")
	require.NoError(t, err)
	buf := make([]byte, 6)
	_, err = stdout.Read(buf)
	require.NoError(t, err)
	require.Equal(t, "ready\n", string(buf))
	time.Sleep(100 * time.Millisecond) // the exec of sleep

	st, err := r.Stats("/" + name)
	require.NoError(t, err)
	elapsed := time.Since(start)
	t.Logf("stats of %s after %s: %+v", name, elapsed, st)
	assert.Positive(t, st.CPUUsageNanos, "the loop ran in the cgroup")
	assert.LessOrEqual(t, st.CPUUsageNanos, uint64(elapsed.Nanoseconds())*uint64(runtime.NumCPU()), "no more CPU than wall time")
	assert.Positive(t, st.MemoryUsage)
	assert.Less(t, st.MemoryUsage, uint64(limit))
	assert.Positive(t, st.MemoryWorkingSet)
	assert.LessOrEqual(t, st.MemoryWorkingSet, st.MemoryUsage)
	assert.LessOrEqual(t, st.MemoryRSS, st.MemoryUsage)
	assert.Positive(t, st.PageFaults, "the shell and sleep fault pages in")
	assert.LessOrEqual(t, st.MajorFaults, st.PageFaults)
	assert.Equal(t, uint64(limit)-st.MemoryWorkingSet, st.MemoryAvailable)
	assert.WithinDuration(t, time.Now(), st.Timestamp, time.Minute)

	// The process is in this cgroup, as the kernel says.
	self, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", cmd.Process.Pid))
	require.NoError(t, err)
	assert.Contains(t, string(self), "/"+name+"\n")

	_, err = r.Stats("/" + name + "-missing")
	assert.True(t, errdefs.IsNotFound(err), "%v", err)

	m, err := r.Metrics("/" + name)
	require.NoError(t, err)
	t.Logf("metrics of %s: %+v", name, m)
	assert.GreaterOrEqual(t, m.CPU.UsageNanos, st.CPUUsageNanos, "a counter")
	assert.LessOrEqual(t, m.CPU.UserNanos+m.CPU.SystemNanos, m.CPU.UsageNanos+uint64(50*time.Millisecond),
		"user and system add up to about the usage (v1 cpuacct.usage_user/sys count at tick granularity)")
	assert.Positive(t, m.Memory.Usage)
	assert.LessOrEqual(t, m.Memory.WorkingSet, m.Memory.Usage)
	assert.GreaterOrEqual(t, m.Memory.HierarchicalPageFaults, m.Memory.PageFaults)
	assert.Positive(t, m.Memory.HierarchicalPageFaults)
	assert.EqualValues(t, limit, m.Limits.Memory)
	if !v2 || fileExists(filepath.Join(dirs[0], "memory.peak")) {
		assert.GreaterOrEqual(t, m.Memory.MaxUsage, m.Memory.Usage)
	}
	assert.EqualValues(t, 1, m.Processes.Processes, "the sleep")
	assert.GreaterOrEqual(t, m.Processes.FileDescriptors, uint64(3), "at least sleep's stdin, stdout and stderr")
	assert.Zero(t, m.Processes.Sockets)
	_, err = r.Metrics("/" + name + "-missing")
	assert.True(t, errdefs.IsNotFound(err), "%v", err)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
