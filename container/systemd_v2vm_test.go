//go:build v2vm

// Built only into the cgroup v2 VM lane's test binaries (make test-v2vm):
// the systemd cgroup driver needs systemd as PID 1, which CI hosts lack.

package container

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crid-dev/crid/cgroupmgr"
)

// TestSystemdCgroupDriver runs a container with a systemd-style cgroupsPath
// and the runtime's --systemd-cgroup: systemd creates the scope under the
// slice, applies the spec's limits, and the runtime updates and removes it.
func TestSystemdCgroupDriver(t *testing.T) {
	require.True(t, cgroupV2(), "the v2vm lane runs on the unified hierarchy")
	comm, err := os.ReadFile("/proc/1/comm")
	require.NoError(t, err)
	require.Equal(t, "systemd", strings.TrimSpace(string(comm)), "PID 1")

	e := newEnv(t)
	e.rt.SystemdCgroup = true
	m := e.manager()
	defer m.Close()
	ctx := context.Background()

	cfg := e.config("systemd", "sleep", "1000")
	cfg.Spec.Linux.CgroupsPath = "crid_test.slice:crid:" + e.cgPrefix
	mem, pids := int64(48<<20), int64(64)
	cfg.Spec.Linux.Resources = &specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: &mem},
		Pids:   &specs.LinuxPids{Limit: &pids},
	}
	rec, err := m.Create(ctx, cfg)
	require.NoError(t, err)
	require.NoError(t, m.Start(ctx, rec.ID))
	scope := filepath.Join("/sys/fs/cgroup/crid_test.slice", "crid-"+e.cgPrefix+".scope")
	t.Cleanup(func() { _ = os.Remove(scope) })

	require.DirExists(t, scope, "the scope exists while the container runs")
	// runc puts the process in the scope itself; crun in a "container"
	// subgroup of it (run.oci.systemd.subgroup) and limits that.
	self := readTrim(t, filepath.Join("/proc", strconv.Itoa(rec.Pid), "cgroup"))
	rel := strings.TrimPrefix(self, "0::")
	require.True(t, strings.HasPrefix("/sys/fs/cgroup"+rel, scope), "container's cgroup %q is in %s", self, scope)
	t.Logf("%s put the container in %s", filepath.Base(e.rt.Path), rel)
	cg := filepath.Join("/sys/fs/cgroup", rel)
	procs, err := os.ReadFile(filepath.Join(cg, "cgroup.procs"))
	require.NoError(t, err)
	assert.Contains(t, strings.Fields(string(procs)), strconv.Itoa(rec.Pid))
	assert.Equal(t, strconv.FormatInt(mem, 10), readTrim(t, filepath.Join(cg, "memory.max")))
	assert.Equal(t, strconv.FormatInt(pids, 10), readTrim(t, filepath.Join(cg, "pids.max")))

	// runc/crun update goes through systemd too.
	newMem := int64(64 << 20)
	require.NoError(t, m.UpdateResources(ctx, rec.ID, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &newMem}}))
	assert.Equal(t, strconv.FormatInt(newMem, 10), readTrim(t, filepath.Join(cg, "memory.max")))

	// ExecSync joins the scope.
	out, _, code, err := m.ExecSync(ctx, rec.ID, []string{"cat", "/proc/self/cgroup"}, 30*time.Second)
	require.NoError(t, err)
	assert.Equal(t, 0, code)
	assert.Contains(t, string(out), "/crid_test.slice/crid-"+e.cgPrefix+".scope", "the exec'd process's cgroup")

	require.NoError(t, m.Stop(ctx, rec.ID, 0, 0))
	require.NoError(t, m.Remove(ctx, rec.ID))
	deadline := time.Now().Add(10 * time.Second)
	for fileExists(scope) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	assert.NoFileExists(t, scope, "the scope is gone after Remove")
	units, _ := os.ReadDir("/sys/fs/cgroup/crid_test.slice")
	assert.False(t, slices.ContainsFunc(units, func(d os.DirEntry) bool { return strings.Contains(d.Name(), e.cgPrefix) }),
		"nothing of this test left under crid_test.slice")
}

func readTrim(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	return strings.TrimSpace(string(b))
}

// TestSystemdOOMKilled: under the systemd driver the cgroup is a scope that
// systemd removes once empty; the OOM counter is read through the expanded
// slice path while it exists, and an OOM-killed init ends OOMKilled.
func TestSystemdOOMKilled(t *testing.T) {
	require.True(t, cgroupV2(), "the v2vm lane runs on the unified hierarchy")
	e := newEnv(t)
	e.rt.SystemdCgroup = true
	reader := cgroupmgr.NewReader(cgroupmgr.Systemd)
	m := e.manager(func(o *Options) { o.OOM = reader })
	defer m.Close()
	runOOMScenarios(t, e, m, reader, func(name string) string {
		return "crid_test.slice:crid:" + e.cgPrefix + "-" + name
	})
}
