package cgroupmgr

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
)

func writeTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for p, body := range files {
		full := filepath.Join(root, p)
		require.NoError(t, os.MkdirAll(filepath.Dir(full), 0o755))
		require.NoError(t, os.WriteFile(full, []byte(body), 0o644))
	}
}

func TestStatsV1FakeTree(t *testing.T) {
	root := t.TempDir()
	dir := "kubepods/pod1/crid-abc"
	writeTree(t, root, map[string]string{
		"cpuacct/" + dir + "/cpuacct.usage":        "123456789\n",
		"memory/" + dir + "/memory.usage_in_bytes": "10000\n",
		"memory/" + dir + "/memory.limit_in_bytes": "50000\n",
		"memory/" + dir + "/memory.stat":           "cache 100\nrss 7\ntotal_rss 3000\ntotal_inactive_file 4000\ntotal_pgfault 11\ntotal_pgmajfault 2\n",
	})
	st, err := Reader{Root: root, Driver: Cgroupfs}.Stats("/" + dir)
	require.NoError(t, err)
	require.EqualValues(t, 123456789, st.CPUUsageNanos)
	require.EqualValues(t, 10000, st.MemoryUsage)
	require.EqualValues(t, 6000, st.MemoryWorkingSet, "usage minus inactive file pages")
	require.EqualValues(t, 3000, st.MemoryRSS)
	require.EqualValues(t, 44000, st.MemoryAvailable)
	require.EqualValues(t, 11, st.PageFaults)
	require.EqualValues(t, 2, st.MajorFaults)
	require.False(t, st.Timestamp.IsZero())

	_, err = Reader{Root: root, Driver: Cgroupfs}.Stats("/kubepods/pod1/crid-missing")
	require.True(t, errdefs.IsNotFound(err), "%v", err)
}

func TestStatsV2FakeTreeWithSystemdPath(t *testing.T) {
	root := t.TempDir()
	dir := "kubepods.slice/kubepods-besteffort.slice/crid-abc.scope"
	writeTree(t, root, map[string]string{
		dir + "/cpu.stat":       "usage_usec 1500\nuser_usec 1000\n",
		dir + "/memory.current": "8192\n",
		dir + "/memory.max":     "max\n",
		dir + "/memory.stat":    "anon 4096\ninactive_file 1024\npgfault 5\npgmajfault 1\n",
	})
	st, err := Reader{Root: root, Driver: Systemd, V2: true}.Stats("kubepods-besteffort.slice:crid:abc")
	require.NoError(t, err)
	require.EqualValues(t, 1500000, st.CPUUsageNanos)
	require.EqualValues(t, 7168, st.MemoryWorkingSet)
	require.EqualValues(t, 4096, st.MemoryRSS)
	require.Zero(t, st.MemoryAvailable, "no limit")
}

func TestSystemdDir(t *testing.T) {
	d, err := Systemd.Dir("kubepods-burstable-pod12.slice:crid:x")
	require.NoError(t, err)
	require.Equal(t, "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12.slice/crid-x.scope", d)
	d, err = Systemd.Dir("system.slice:crid:x")
	require.NoError(t, err)
	require.Equal(t, "/system.slice/crid-x.scope", d)
	_, err = Systemd.Dir("/a/b")
	require.True(t, errdefs.IsInvalidArgument(err))
	d, err = Cgroupfs.Dir("a/../b")
	require.NoError(t, err)
	require.Equal(t, "/b", d)
}

// crun, under the systemd driver on cgroup v2, runs the container in a
// "container" subgroup of its scope and sets the limits there; the scope
// itself reads "max". Usage comes from the scope (it includes the
// subgroup), the limits from the subgroup.
func TestStatsV2CrunSubgroupLimits(t *testing.T) {
	root := t.TempDir()
	dir := "kubepods.slice/kubepods-besteffort.slice/crid-abc.scope"
	writeTree(t, root, map[string]string{
		dir + "/cpu.stat":                 "usage_usec 1500\n",
		dir + "/memory.current":           "8192\n",
		dir + "/memory.max":               "max\n",
		dir + "/memory.stat":              "anon 4096\ninactive_file 1024\n",
		dir + "/pids.max":                 "max\n",
		dir + "/io.stat":                  "",
		dir + "/cgroup.procs":             "",
		dir + "/container/cgroup.procs":   "",
		dir + "/container/memory.current": "8000\n",
		dir + "/container/memory.max":     "50331648\n",
		dir + "/container/pids.max":       "64\n",
		dir + "/container/cpu.max":        "50000 100000\n",
	})
	r := Reader{Root: root, Driver: Systemd, V2: true}
	st, err := r.Stats("kubepods-besteffort.slice:crid:abc")
	require.NoError(t, err)
	require.EqualValues(t, 8192, st.MemoryUsage, "usage of the scope, subgroup included")
	require.EqualValues(t, 50331648-7168, st.MemoryAvailable, "the subgroup's limit")

	m, err := r.Metrics("kubepods-besteffort.slice:crid:abc")
	require.NoError(t, err)
	require.EqualValues(t, 50331648, m.Limits.Memory)
	require.EqualValues(t, 64, m.Processes.ThreadsMax)
	require.EqualValues(t, 8192, m.Memory.Usage)
}

func TestOOMKills(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, map[string]string{
		// v1, cgroupfs driver
		"memory/kubepods/pod1/crid-a/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
		// v1, systemd driver
		"memory/kubepods.slice/kubepods-pod2.slice/crid-b.scope/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
		// v2, systemd driver (crun's subgroup is counted in the scope's
		// hierarchical memory.events)
		"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod3.slice/crid-c.scope/memory.events": "low 0\nhigh 0\nmax 4\noom 1\noom_kill 3\noom_group_kill 0\n",
		"kubepods.slice/crid-d.scope/memory.events":                                                        "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n",
		"memory/old/memory.oom_control":                                                                    "oom_kill_disable 0\nunder_oom 0\n",
	})
	for _, tc := range []struct {
		r    Reader
		path string
		want uint64
	}{
		{Reader{Root: root, Driver: Cgroupfs}, "/kubepods/pod1/crid-a", 2},
		{Reader{Root: root, Driver: Systemd}, "kubepods-pod2.slice:crid:b", 1},
		{Reader{Root: root, Driver: Systemd, V2: true}, "kubepods-burstable-pod3.slice:crid:c", 3},
		{Reader{Root: root, Driver: Systemd, V2: true}, "kubepods.slice:crid:d", 0},
	} {
		n, err := tc.r.OOMKills(tc.path)
		require.NoError(t, err, tc.path)
		require.Equal(t, tc.want, n, tc.path)
	}

	// The parent: the pod's slice or cgroup, which outlives the container's.
	writeTree(t, root, map[string]string{
		"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod3.slice/memory.events": "low 0\nhigh 0\nmax 4\noom 1\noom_kill 5\n",
		"memory/kubepods/pod1/memory.oom_control":                                             "oom_kill_disable 0\nunder_oom 0\noom_kill 7\n",
	})
	n, err := Reader{Root: root, Driver: Systemd, V2: true}.ParentOOMKills("kubepods-burstable-pod3.slice:crid:gone")
	require.NoError(t, err)
	require.EqualValues(t, 5, n)
	n, err = Reader{Root: root, Driver: Cgroupfs}.ParentOOMKills("/kubepods/pod1/crid-a")
	require.NoError(t, err)
	require.EqualValues(t, 7, n)

	_, err = Reader{Root: root, Driver: Systemd, V2: true}.OOMKills("kubepods.slice:crid:gone")
	require.True(t, errdefs.IsNotFound(err), "%v", err)
	_, err = Reader{Root: root, Driver: Systemd}.OOMKills("/not/a/systemd/path")
	require.True(t, errdefs.IsInvalidArgument(err), "%v", err)
	_, err = Reader{Root: root, Driver: Cgroupfs}.OOMKills("/old")
	require.ErrorContains(t, err, "no oom_kill counter")

	// What the OOM watcher watches: memory.events on v2, nothing on v1.
	f, err := Reader{Root: root, Driver: Systemd, V2: true}.OOMEventsFile("kubepods-burstable-pod3.slice:crid:c")
	require.NoError(t, err)
	require.Equal(t, filepath.Join(root, "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod3.slice/crid-c.scope/memory.events"), f)
	f, err = Reader{Root: root, Driver: Cgroupfs, V2: true}.OOMEventsFile("/kubepods/pod1/crid-a")
	require.NoError(t, err)
	require.Equal(t, filepath.Join(root, "kubepods/pod1/crid-a/memory.events"), f)
	f, err = Reader{Root: root, Driver: Cgroupfs}.OOMEventsFile("/kubepods/pod1/crid-a")
	require.NoError(t, err)
	require.Empty(t, f)
}
