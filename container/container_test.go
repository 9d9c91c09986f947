package container

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/crid-dev/crid/cgroupmgr"
	"github.com/crid-dev/crid/internal/mount"
	"github.com/crid-dev/crid/internal/testutil"
)

// env is one test's world: a busybox rootfs, a state dir, a runc root and
// a unique cgroup prefix, all removed at the end.
type env struct {
	t        *testing.T
	rootfs   string
	stateDir string
	runcRoot string
	logDir   string
	cgPrefix string // crid-test-<random>
	rt       Runtime
	n        int
}

func newEnv(t *testing.T) *env {
	t.Helper()
	testutil.RequiresRoot(t)
	// CRID_TEST_OCI_RUNTIME picks the OCI runtime binary (e.g.
	// /usr/bin/crun); runc is the default.
	runtimeBin := os.Getenv("CRID_TEST_OCI_RUNTIME")
	if runtimeBin == "" {
		runtimeBin = "runc"
	}
	for _, bin := range []string{runtimeBin, "conmon"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not installed (apt-get install runc conmon): %v", bin, err)
		}
	}
	var r [6]byte
	_, _ = rand.Read(r[:])
	e := &env{
		t:        t,
		rootfs:   t.TempDir(),
		stateDir: t.TempDir(),
		runcRoot: t.TempDir(),
		logDir:   t.TempDir(),
		cgPrefix: "crid-test-" + hex.EncodeToString(r[:]),
	}
	runcPath, _ := exec.LookPath(runtimeBin)
	conmonPath, _ := exec.LookPath("conmon")
	// The handler keeps the name "runc" whatever the binary: Manager
	// options below refer to it.
	self, err := os.Executable()
	require.NoError(t, err)
	e.rt = Runtime{Name: "runc", Path: runcPath, Root: e.runcRoot, ConmonPath: conmonPath, Type: "oci",
		ExecWait: []string{self, "exec-wait"}} // TestMain dispatches it
	buildBusyboxRootfs(t, e.rootfs)
	t.Cleanup(func() {
		// Containers a failed test left behind.
		out, _ := exec.Command(runcPath, append(e.rt.globalArgs(), "list", "-q")...).Output()
		for _, id := range strings.Fields(string(out)) {
			_ = exec.Command(runcPath, append(e.rt.globalArgs(), "delete", "--force", id)...).Run()
		}
		ents, _ := os.ReadDir(e.stateDir)
		for _, d := range ents {
			_ = unmountBundle(filepath.Join(e.stateDir, d.Name()))
		}
		for _, d := range cgroupDirs(e.cgPrefix) {
			_ = os.Remove(d)
		}
	})
	return e
}

// cgroupDirs lists the cgroup directories named prefix* directly under
// the cgroup root: in each v1 hierarchy (/sys/fs/cgroup/<controller>/) or
// in the v2 unified one (/sys/fs/cgroup/).
func cgroupDirs(prefix string) []string {
	v1, _ := filepath.Glob("/sys/fs/cgroup/*/" + prefix + "*")
	v2, _ := filepath.Glob("/sys/fs/cgroup/" + prefix + "*")
	return append(v1, v2...)
}

// cgroupV2 reports whether /sys/fs/cgroup is the unified hierarchy.
func cgroupV2() bool {
	_, err := os.Stat("/sys/fs/cgroup/cgroup.controllers")
	return err == nil
}

func buildBusyboxRootfs(t *testing.T, dir string) {
	t.Helper()
	for _, d := range []string{"bin", "proc", "dev", "sys", "tmp", "etc"} {
		require.NoError(t, os.MkdirAll(filepath.Join(dir, d), 0o755))
	}
	src, err := os.ReadFile("/bin/busybox")
	require.NoError(t, err, "needs Debian's busybox-static")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "bin", "busybox"), src, 0o755))
	for _, a := range []string{"sh", "echo", "sleep", "cat", "head", "tr", "true", "false", "ls", "ps", "seq"} {
		require.NoError(t, os.Symlink("busybox", filepath.Join(dir, "bin", a)))
	}
}

func (e *env) manager(opts ...func(*Options)) *Manager {
	e.t.Helper()
	o := Options{StateDir: e.stateDir, Runtimes: map[string]Runtime{"runc": e.rt}, DefaultRuntime: "runc"}
	for _, f := range opts {
		f(&o)
	}
	m, err := New(context.Background(), o)
	require.NoError(e.t, err)
	return m
}

// spec is a minimal hand-written spec (no seccomp, new namespaces).
func (e *env) spec(args ...string) *specs.Spec {
	e.n++
	caps := []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_NET_BIND_SERVICE"}
	adj := -998 // what kubelet asks for; must be clamped
	return &specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{
			Args: args, Cwd: "/", Env: []string{"PATH=/bin"},
			Capabilities:    &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps},
			NoNewPrivileges: true, OOMScoreAdj: &adj,
		},
		Root:     &specs.Root{Path: "ignored"},
		Hostname: "crid-test",
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev"}},
		},
		Linux: &specs.Linux{
			CgroupsPath: fmt.Sprintf("/%s-%d", e.cgPrefix, e.n),
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.MountNamespace}, {Type: specs.PIDNamespace}, {Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace}, {Type: specs.NetworkNamespace},
			},
			MaskedPaths:   []string{"/proc/kcore"},
			ReadonlyPaths: []string{"/proc/sys"},
		},
	}
}

func (e *env) config(name string, args ...string) CreateConfig {
	return CreateConfig{
		SandboxID:    "sandbox-" + e.cgPrefix,
		Name:         name,
		Spec:         e.spec(args...),
		RootfsMounts: []mount.Mount{{Type: "bind", Source: e.rootfs, Options: []string{"rbind", "ro"}}},
		LogPath:      filepath.Join(e.logDir, name+".log"),
		Labels:       map[string]string{"test": e.t.Name()},
	}
}

func (e *env) run(ctx context.Context, m *Manager, name string, args ...string) Record {
	e.t.Helper()
	rec, err := m.Create(ctx, e.config(name, args...))
	require.NoError(e.t, err)
	require.NoError(e.t, m.Start(ctx, rec.ID))
	return rec
}

func waitExit(t *testing.T, m *Manager, id string) Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rec, err := m.Wait(ctx, id)
	require.NoError(t, err)
	return rec
}

// logLine is one parsed CRI log line.
type logLine struct {
	stream, tag, text string
}

func readLog(t *testing.T, path string) []logLine {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var out []logLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), " ", 4)
		require.Len(t, parts, 4, "line %q", sc.Text())
		_, err := time.Parse(time.RFC3339Nano, parts[0])
		require.NoError(t, err, "timestamp of %q", sc.Text())
		out = append(out, logLine{parts[1], parts[2], parts[3]})
	}
	require.NoError(t, sc.Err())
	return out
}

// fullLines joins partial (P) lines with the following full (F) line.
func fullLines(lines []logLine, stream string) []string {
	var out []string
	var cur strings.Builder
	for _, l := range lines {
		if l.stream != stream {
			continue
		}
		cur.WriteString(l.text)
		if l.tag == "F" {
			out = append(out, cur.String())
			cur.Reset()
		}
	}
	return out
}

func TestExitCodesAndLogs(t *testing.T) {
	e := newEnv(t)
	m := e.manager()
	defer m.Close()
	ctx := context.Background()

	ok := e.run(ctx, m, "ok", "sh", "-c", "echo hello; echo oops >&2; head -c 20000 /dev/zero | tr '\\0' a; echo; echo after")
	bad := e.run(ctx, m, "bad", "sh", "-c", "exit 3")

	r := waitExit(t, m, ok.ID)
	assert.Equal(t, StateExited, r.State)
	assert.EqualValues(t, 0, r.ExitCode)
	assert.Equal(t, ReasonCompleted, r.Reason)
	assert.False(t, r.StartedAt.IsZero())
	assert.False(t, r.FinishedAt.Before(r.StartedAt))

	r = waitExit(t, m, bad.ID)
	assert.EqualValues(t, 3, r.ExitCode)
	assert.Equal(t, ReasonError, r.Reason)

	lines := readLog(t, ok.LogPath)
	assert.Equal(t, []string{"oops"}, fullLines(lines, "stderr"))
	out := fullLines(lines, "stdout")
	require.Len(t, out, 3, "stdout lines")
	assert.Equal(t, "hello", out[0])
	assert.Equal(t, strings.Repeat("a", 20000), out[1])
	assert.Equal(t, "after", out[2])
	var partial int
	for _, l := range lines {
		if l.tag == "P" {
			partial++
		}
	}
	assert.Positive(t, partial, "a 20000-byte line is split into P lines then an F line")

	// The runtime state went with the exit; Remove cleans the rest.
	for _, id := range []string{ok.ID, bad.ID} {
		require.NoError(t, m.Remove(ctx, id))
		_, err := m.Get(id)
		assert.True(t, errdefs.IsNotFound(err))
	}
}

func TestStopTimeoutKills(t *testing.T) {
	e := newEnv(t)
	m := e.manager()
	defer m.Close()
	ctx := context.Background()

	rec := e.run(ctx, m, "stubborn", "sh", "-c", "trap '' TERM; while true; do sleep 0.1; done")
	got, err := m.Get(rec.ID[:12])
	require.NoError(t, err)
	assert.Equal(t, StateRunning, got.State)

	start := time.Now()
	require.NoError(t, m.Stop(ctx, rec.ID, time.Second, syscall.SIGTERM))
	assert.GreaterOrEqual(t, time.Since(start), time.Second, "waited for the timeout")
	got, err = m.Get(rec.ID)
	require.NoError(t, err)
	assert.Equal(t, StateExited, got.State)
	assert.EqualValues(t, 137, got.ExitCode)
	assert.Equal(t, ReasonError, got.Reason)

	// Idempotent Stop and Remove.
	require.NoError(t, m.Stop(ctx, rec.ID, time.Second, syscall.SIGTERM))
	require.NoError(t, m.Remove(ctx, rec.ID))
	assert.True(t, errdefs.IsNotFound(m.Remove(ctx, rec.ID)))
	assert.True(t, errdefs.IsNotFound(m.Stop(ctx, rec.ID, 0, 0)))
}

func TestStopGraceful(t *testing.T) {
	e := newEnv(t)
	m := e.manager()
	defer m.Close()
	ctx := context.Background()
	rec := e.run(ctx, m, "polite", "sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done")
	time.Sleep(200 * time.Millisecond) // let sh install the trap
	require.NoError(t, m.Stop(ctx, rec.ID, 10*time.Second, 0))
	got, _ := m.Get(rec.ID)
	assert.EqualValues(t, 0, got.ExitCode)
	assert.Equal(t, ReasonCompleted, got.Reason)
	require.NoError(t, m.Remove(ctx, rec.ID))
}

func TestNameReservation(t *testing.T) {
	e := newEnv(t)
	m := e.manager()
	defer m.Close()
	ctx := context.Background()

	cfg := e.config("web", "sleep", "1000")
	first, err := m.Create(ctx, cfg)
	require.NoError(t, err)
	// kubelet's retry after its deadline: the Created container comes back.
	again, err := m.Create(ctx, cfg)
	require.NoError(t, err)
	assert.Equal(t, first.ID, again.ID)

	require.NoError(t, m.Start(ctx, first.ID))
	_, err = m.Create(ctx, cfg)
	var reserved *ReservedError
	require.ErrorAs(t, err, &reserved)
	assert.True(t, errdefs.IsConflict(err))

	require.NoError(t, m.Remove(ctx, first.ID))
	third, err := m.Create(ctx, cfg)
	require.NoError(t, err, "the name is free after Remove")
	assert.NotEqual(t, first.ID, third.ID)
	require.NoError(t, m.Remove(ctx, third.ID))

	// A failed create frees the name too.
	bad := e.config("broken", "/no/such/binary")
	_, err = m.Create(ctx, bad)
	if err == nil {
		// runc reports a missing binary at start on some versions.
		recs := m.List(Filter{SandboxID: bad.SandboxID})
		for _, r := range recs {
			require.NoError(t, m.Remove(ctx, r.ID))
		}
	} else {
		bad.Spec.Process.Args = []string{"true"}
		r, err := m.Create(ctx, bad)
		require.NoError(t, err)
		require.NoError(t, m.Remove(ctx, r.ID))
	}
	assert.Empty(t, m.List(Filter{}))
}

func TestExecSync(t *testing.T) {
	e := newEnv(t)
	m := e.manager()
	defer m.Close()
	ctx := context.Background()
	rec := e.run(ctx, m, "exec", "sleep", "1000")
	defer func() { require.NoError(t, m.Remove(ctx, rec.ID)) }()

	stdout, stderr, code, err := m.ExecSync(ctx, rec.ID, []string{"sh", "-c", "echo out; echo err >&2; exit 5"}, 10*time.Second)
	require.NoError(t, err)
	assert.Equal(t, "out\n", string(stdout))
	assert.Equal(t, "err\n", string(stderr))
	assert.Equal(t, 5, code)

	// Output is capped at 16 MiB per stream.
	stdout, _, code, err = m.ExecSync(ctx, rec.ID, []string{"sh", "-c", "head -c 17000000 /dev/zero"}, 30*time.Second)
	require.NoError(t, err)
	assert.Equal(t, 0, code)
	assert.Len(t, stdout, MaxExecOutput)

	// A command that leaves a process behind holding its output (as
	// `sh -c 'daemon &'` in a postStart hook does): its own output and
	// exit code, not a timeout (5 s: the helper is this test binary, slow
	// to start under -race).
	for _, want := range []int{0, 4} {
		stdout, stderr, code, err = m.ExecSync(ctx, rec.ID, []string{"sh", "-c", fmt.Sprintf("echo started; echo e >&2; sleep 102 & exit %d", want)}, 5*time.Second)
		require.NoError(t, err)
		assert.Equal(t, want, code)
		assert.Equal(t, "started\n", string(stdout))
		assert.Equal(t, "e\n", string(stderr))
	}
	// Killed by a signal: 128+N, as a shell reports it.
	_, _, code, err = m.ExecSync(ctx, rec.ID, []string{"sh", "-c", "kill -TERM $$"}, 10*time.Second)
	require.NoError(t, err)
	assert.Equal(t, 143, code)
	// A command the runtime cannot start: its error, not a hang.
	_, stderr, code, err = m.ExecSync(ctx, rec.ID, []string{"/no/such/binary"}, 10*time.Second)
	require.NoError(t, err)
	assert.NotZero(t, code)
	assert.Contains(t, strings.ToLower(string(stderr)), "no such file", "the runtime's own message")

	ticks := bootTicks(t)
	start := time.Now()
	_, _, _, err = m.ExecSync(ctx, rec.ID, []string{"sleep", "101"}, time.Second)
	require.Error(t, err)
	assert.True(t, errdefs.IsDeadlineExceeded(err), "%v", err)
	assert.Less(t, time.Since(start), 5*time.Second)
	assert.Empty(t, sleepsSince(t, ticks, "101"), "the exec'd sleep is gone, not even a zombie")

	_, _, _, err = m.ExecSync(ctx, "nope", []string{"true"}, time.Second)
	assert.True(t, errdefs.IsNotFound(err))
}

// bootTicks returns the current time in clock ticks since boot, to compare
// with /proc/<pid>/stat start times.
func bootTicks(t *testing.T) uint64 {
	b, err := os.ReadFile("/proc/uptime")
	require.NoError(t, err)
	up, err := strconv.ParseFloat(strings.Fields(string(b))[0], 64)
	require.NoError(t, err)
	return uint64(up*100) - 100 // USER_HZ is 100; a second of slack
}

// sleepsSince lists processes (zombies included) named sleep, started at
// or after ticks, in a child pid namespace.
func sleepsSince(t *testing.T, ticks uint64, arg string) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, d := range ents {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil || !strings.Contains(string(stat), "(sleep)") {
			continue
		}
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		st, _ := strconv.ParseUint(f[19], 10, 64)
		status, _ := os.ReadFile("/proc/" + d.Name() + "/status")
		nested := false
		for _, l := range strings.Split(string(status), "\n") {
			if strings.HasPrefix(l, "NSpid:") && len(strings.Fields(l)) > 2 {
				nested = true
			}
		}
		cmdline, _ := os.ReadFile("/proc/" + d.Name() + "/cmdline")
		if st >= ticks && nested && (len(cmdline) == 0 || strings.Contains(string(cmdline), arg)) {
			t.Logf("left: pid %d state %s cmdline %q", pid, f[0], cmdline)
			out = append(out, pid)
		}
	}
	return out
}

func TestReopenLog(t *testing.T) {
	e := newEnv(t)
	m := e.manager()
	defer m.Close()
	ctx := context.Background()
	const n = 300
	rec := e.run(ctx, m, "rotate", "sh", "-c", fmt.Sprintf("i=0; while [ $i -lt %d ]; do echo line$i; i=$((i+1)); sleep 0.01; done", n))

	time.Sleep(500 * time.Millisecond)
	require.NoError(t, os.Rename(rec.LogPath, rec.LogPath+".1"))
	require.NoError(t, m.ReopenLog(ctx, rec.ID))
	r := waitExit(t, m, rec.ID)
	require.EqualValues(t, 0, r.ExitCode)

	old := fullLines(readLog(t, rec.LogPath+".1"), "stdout")
	cur := fullLines(readLog(t, rec.LogPath), "stdout")
	assert.NotEmpty(t, old)
	assert.NotEmpty(t, cur, "new lines land in the new file")
	all := append(old, cur...)
	require.Len(t, all, n, "no line lost or duplicated")
	for i, l := range all {
		assert.Equal(t, fmt.Sprintf("line%d", i), l)
	}
	require.NoError(t, m.Remove(ctx, rec.ID))
}

func TestRecoveryRunning(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	m1 := e.manager()
	rec := e.run(ctx, m1, "survivor", "sleep", "1000")
	created, err := m1.Create(ctx, e.config("waiting", "sleep", "1000"))
	require.NoError(t, err)
	require.NoError(t, m1.Close()) // crid goes down; conmon stays

	m2 := e.manager()
	defer m2.Close()
	got, err := m2.Get(rec.ID)
	require.NoError(t, err)
	assert.Equal(t, StateRunning, got.State)
	assert.Equal(t, rec.Pid, got.Pid)
	got, err = m2.Get(created.ID)
	require.NoError(t, err)
	assert.Equal(t, StateCreated, got.State)
	// The name is reserved again: the retry gets the Created container.
	again, err := m2.Create(ctx, e.config("waiting", "sleep", "1000"))
	require.NoError(t, err)
	assert.Equal(t, created.ID, again.ID)

	require.NoError(t, m2.Stop(ctx, rec.ID, 0, 0))
	got, _ = m2.Get(rec.ID)
	assert.Equal(t, StateExited, got.State)
	assert.EqualValues(t, 137, got.ExitCode)
	require.NoError(t, m2.Remove(ctx, rec.ID))
	require.NoError(t, m2.Remove(ctx, created.ID))
}

func TestRecoveryExitedWhileDown(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	m1 := e.manager()
	rec := e.run(ctx, m1, "short", "sh", "-c", "sleep 1; exit 3")
	require.NoError(t, m1.Close())

	// Wait for conmon's exit file while no Manager is watching.
	deadline := time.Now().Add(20 * time.Second)
	for !fileExists(filepath.Join(e.stateDir, "exits", rec.ID)) {
		require.True(t, time.Now().Before(deadline), "no exit file")
		time.Sleep(50 * time.Millisecond)
	}
	// A corrupt record becomes one Unknown container, not a failed New.
	badID := strings.Repeat("ab", 32)
	require.NoError(t, os.MkdirAll(filepath.Join(e.stateDir, badID), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(e.stateDir, badID, checkpointFile), []byte("{garbage"), 0o600))

	var exits []Record
	m2 := e.manager(func(o *Options) { o.OnExit = func(r Record) { exits = append(exits, r) } })
	defer m2.Close()
	got, err := m2.Get(rec.ID)
	require.NoError(t, err)
	assert.Equal(t, StateExited, got.State)
	assert.EqualValues(t, 3, got.ExitCode)
	assert.Equal(t, ReasonError, got.Reason)
	assert.False(t, got.FinishedAt.IsZero())
	require.Len(t, exits, 1, "New reports the exit that happened while crid was down")
	assert.Equal(t, rec.ID, exits[0].ID)

	bad, err := m2.Get(badID)
	require.NoError(t, err)
	assert.Equal(t, StateUnknown, bad.State)
	require.NoError(t, m2.Stop(ctx, badID, 0, 0))
	require.NoError(t, m2.Remove(ctx, badID))
	require.NoError(t, m2.Remove(ctx, rec.ID))
}

func TestOnExitAndOOMScoreClamp(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	exited := make(chan Record, 1)
	m := e.manager(func(o *Options) { o.OnExit = func(r Record) { exited <- r } })
	defer m.Close()
	rec := e.run(ctx, m, "quick", "sh", "-c", "cat /proc/self/oom_score_adj; exit 7")
	select {
	case r := <-exited:
		assert.Equal(t, rec.ID, r.ID)
		assert.EqualValues(t, 7, r.ExitCode)
	case <-time.After(20 * time.Second):
		t.Fatal("no exit event")
	}
	own, err := oomScoreAdjMin()
	require.NoError(t, err)
	out := fullLines(readLog(t, rec.LogPath), "stdout")
	assert.Equal(t, []string{strconv.Itoa(own)}, out, "oomScoreAdj -998 was clamped to crid's own")
	require.NoError(t, m.Remove(ctx, rec.ID))
}

func TestUpdateResourcesAndFeatures(t *testing.T) {
	e := newEnv(t)
	m := e.manager()
	defer m.Close()
	ctx := context.Background()
	rec := e.run(ctx, m, "upd", "sleep", "1000")
	limit := int64(64 << 20)
	require.NoError(t, m.UpdateResources(ctx, rec.ID, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}}))
	limitFile := filepath.Join("/sys/fs/cgroup/memory", rec.CgroupsPath, "memory.limit_in_bytes")
	if cgroupV2() {
		limitFile = filepath.Join("/sys/fs/cgroup", rec.CgroupsPath, "memory.max")
	}
	b, err := os.ReadFile(limitFile)
	require.NoError(t, err)
	assert.Equal(t, strconv.FormatInt(limit, 10), strings.TrimSpace(string(b)))
	require.NoError(t, m.Remove(ctx, rec.ID))

	f, err := e.rt.Features(ctx)
	if err != nil && filepath.Base(e.rt.Path) == "crun" && strings.Contains(err.Error(), "unknown command features") {
		// crun < 1.9 (Debian bookworm's 1.8.1): Features is best effort.
		t.Logf("no features from this crun: %v", err)
		return
	}
	require.NoError(t, err)
	assert.NotEmpty(t, f.OCIVersionMax)
}

// TestVolumes: the volumes PrepareVolumes returns are mounted in the
// bundle before the spec is made, the container sees them through the
// spec's bind mounts, and Remove unmounts them before the bundle goes. A
// failed creation unmounts them and runs their undo.
func TestVolumes(t *testing.T) {
	e := newEnv(t)
	m := e.manager()
	defer m.Close()
	ctx := context.Background()

	src := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(src, "f"), []byte("from the volume\n"), 0o644))
	var undone []string
	cfg := func(name string, specErr error) CreateConfig {
		c := e.config(name, "sh", "-c", "cat /tmp/vol/f; echo x > /tmp/vol/g || echo read-only")
		sp := c.Spec
		c.Spec = nil
		c.PrepareVolumes = func(_ context.Context, id string) ([][]mount.Mount, func(context.Context) error, error) {
			ms := [][]mount.Mount{{{Type: "bind", Source: src, Options: []string{"rbind", "ro"}}}}
			return ms, func(context.Context) error { undone = append(undone, id); return nil }, nil
		}
		c.SpecFunc = func(_ context.Context, _, _ string, volumes []string) (*specs.Spec, []byte, error) {
			if specErr != nil {
				return nil, nil, specErr
			}
			require.Len(t, volumes, 1)
			sp.Mounts = append(sp.Mounts, specs.Mount{Destination: "/tmp/vol", Type: "bind", Source: volumes[0],
				Options: []string{"rbind", "ro", "nosuid", "nodev"}})
			return sp, nil, nil
		}
		return c
	}

	rec, err := m.Create(ctx, cfg("vol", nil))
	require.NoError(t, err)
	dir := filepath.Join(rec.Bundle, "volumes", "0")
	require.Equal(t, "from the volume\n", readFileString(t, filepath.Join(dir, "f")), "volume 0 is mounted in the bundle")
	require.NoError(t, m.Start(ctx, rec.ID))
	r := waitExit(t, m, rec.ID)
	assert.EqualValues(t, 0, r.ExitCode)
	assert.Equal(t, []string{"from the volume", "read-only"}, fullLines(readLog(t, rec.LogPath), "stdout"))
	require.NoError(t, m.Remove(ctx, rec.ID))
	assert.Empty(t, undone, "the undo is for failed creations only")
	mounted, err := mountedUnder(e.stateDir)
	require.NoError(t, err)
	assert.False(t, mounted, "mounts left under the state dir")
	require.NoFileExists(t, filepath.Join(src, "g"))
	require.FileExists(t, filepath.Join(src, "f"), "removing the bundle never deletes through a volume")

	_, err = m.Create(ctx, cfg("fails", errors.New("injected")))
	require.ErrorContains(t, err, "injected")
	assert.Len(t, undone, 1, "the undo ran")
	mounted, err = mountedUnder(e.stateDir)
	require.NoError(t, err)
	assert.False(t, mounted, "a failed creation leaves no mount")
	require.FileExists(t, filepath.Join(src, "f"))
	ents, err := os.ReadDir(e.stateDir)
	require.NoError(t, err)
	for _, d := range ents {
		assert.Contains(t, []string{"exits", "sockets"}, d.Name(), "left in state dir")
	}
}

func readFileString(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	return string(b)
}

func TestLeaks(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ignore := goleak.IgnoreCurrent()
	m := e.manager()

	// Memory of one monitor, for the record.
	rec := e.run(ctx, m, "mem", "sleep", "1000")
	rss, pss := smapsRollup(t, rec.ConmonPid)
	t.Logf("conmon pid %d for a running sleep: RSS %d KiB, PSS %d KiB", rec.ConmonPid, rss, pss)
	require.NoError(t, m.Remove(ctx, rec.ID))

	for i := range 30 {
		r := e.run(ctx, m, fmt.Sprintf("cycle-%d", i), "sleep", "1000")
		require.NoError(t, m.Stop(ctx, r.ID, 0, 0))
		require.NoError(t, m.Remove(ctx, r.ID))
	}
	require.NoError(t, m.Close())
	goleak.VerifyNone(t, ignore)

	mounted, err := mountedUnder(e.stateDir)
	require.NoError(t, err)
	assert.False(t, mounted, "mounts left under the state dir")
	ents, err := os.ReadDir(e.stateDir)
	require.NoError(t, err)
	for _, d := range ents {
		assert.Contains(t, []string{"exits", "sockets"}, d.Name(), "left in state dir")
	}
	for _, d := range []string{"exits", "sockets"} {
		left, _ := os.ReadDir(filepath.Join(e.stateDir, d))
		assert.Empty(t, left, "left in %s", d)
	}
	runcLeft, _ := os.ReadDir(e.runcRoot)
	assert.Empty(t, runcLeft, "runc state dirs left")
	assert.Empty(t, cgroupDirs(e.cgPrefix), "cgroup dirs left")
	// conmon exits with its container; give the last one a moment.
	deadline := time.Now().Add(5 * time.Second)
	for len(conmonsFor(e.stateDir)) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	assert.Empty(t, conmonsFor(e.stateDir), "conmon processes left")
}

func conmonsFor(stateDir string) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, d := range ents {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		cmd, _ := os.ReadFile("/proc/" + d.Name() + "/cmdline")
		if strings.Contains(string(cmd), "conmon") && strings.Contains(string(cmd), stateDir) {
			out = append(out, pid)
		}
	}
	return out
}

func smapsRollup(t *testing.T, pid int) (rssKiB, pssKiB int) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	require.NoError(t, err)
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.Atoi(f[1])
		switch f[0] {
		case "Rss:":
			rssKiB = v
		case "Pss:":
			pssKiB = v
		}
	}
	return rssKiB, pssKiB
}

func TestOOMKilled(t *testing.T) {
	e := newEnv(t)
	reader := cgroupmgr.NewReader(cgroupmgr.Cgroupfs)
	m := e.manager(func(o *Options) { o.OOM = reader })
	defer m.Close()
	runOOMScenarios(t, e, m, reader, nil)
}

// runOOMScenarios runs two containers limited to 32 MiB: one whose child is
// OOM-killed while it keeps running, which the cgroup's counter
// (memory.oom_control on v1, memory.events on v2) must show, and one whose
// init is OOM-killed, which must end 137 with reason OOMKilled.
// cgroupsPath, when set, names each container's cgroup.
func runOOMScenarios(t *testing.T, e *env, m *Manager, reader cgroupmgr.Reader, cgroupsPath func(name string) string) {
	ctx := context.Background()
	limit := int64(32 << 20)
	withLimit := func(name string, args ...string) CreateConfig {
		cfg := e.config(name, args...)
		if cgroupsPath != nil {
			cfg.Spec.Linux.CgroupsPath = cgroupsPath(name)
		}
		// Swap equal to the limit: none (v1 counts memory+swap; runc
		// writes memory.swap.max 0 on v2).
		cfg.Spec.Linux.Resources = &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit, Swap: &limit}}
		return cfg
	}
	hog := "x=$(head -c 200000000 /dev/zero | tr '\\0' a)"

	rec, err := m.Create(ctx, withLimit("survivor", "sh", "-c", "("+hog+"); echo child $?; sleep 1000"))
	require.NoError(t, err)
	require.NoError(t, m.Start(ctx, rec.ID))
	deadline := time.Now().Add(2 * time.Minute)
	for len(fullLines(readLog(t, rec.LogPath), "stdout")) == 0 {
		require.True(t, time.Now().Before(deadline), "the hog never died")
		time.Sleep(50 * time.Millisecond)
	}
	assert.Equal(t, []string{"child 137"}, fullLines(readLog(t, rec.LogPath), "stdout"))
	n, err := reader.OOMKills(rec.CgroupsPath)
	require.NoError(t, err)
	assert.Positive(t, n, "oom_kill counted in %s", rec.CgroupsPath)
	require.NoError(t, m.Remove(ctx, rec.ID))

	rec, err = m.Create(ctx, withLimit("victim", "sh", "-c", hog))
	require.NoError(t, err)
	require.NoError(t, m.Start(ctx, rec.ID))
	ctxW, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	r, err := m.Wait(ctxW, rec.ID)
	require.NoError(t, err)
	assert.EqualValues(t, 137, r.ExitCode)
	assert.Equal(t, ReasonOOMKilled, r.Reason)
	require.NoError(t, m.Remove(ctx, rec.ID))
}

// fakeOOM is an OOMCounter whose counter the test sets; eventsDir, when
// set, holds one file per cgroup for the OOM watcher to watch.
type fakeOOM struct {
	mu          sync.Mutex // the Manager reads it from its goroutines
	kills       uint64
	err         error
	parentKills uint64
	eventsDir   string
	asked       []string
}

func (f *fakeOOM) setParent(kills uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.parentKills = kills
}

func (f *fakeOOM) ParentOOMKills(string) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.parentKills, nil
}

func (f *fakeOOM) set(kills uint64, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.kills, f.err = kills, err
}

func (f *fakeOOM) OOMKills(path string) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, path)
	return f.kills, f.err
}

func (f *fakeOOM) OOMEventsFile(cgroupsPath string) (string, error) {
	if f.eventsDir == "" {
		return "", nil
	}
	p := filepath.Join(f.eventsDir, strings.ReplaceAll(cgroupsPath, "/", "_"))
	if !fileExists(p) {
		if err := os.WriteFile(p, []byte("oom_kill 0\n"), 0o644); err != nil {
			return "", err
		}
	}
	return p, nil
}

// touch modifies the events file of the cgroup at cgroupsPath.
func (f *fakeOOM) touch(t *testing.T, cgroupsPath string) {
	t.Helper()
	p, err := f.OOMEventsFile(cgroupsPath)
	require.NoError(t, err)
	w, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	require.NoError(t, err)
	_, err = w.WriteString("oom_kill 1\n")
	require.NoError(t, err)
	require.NoError(t, w.Close())
}

func (f *fakeOOM) wasAsked(path string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Contains(f.asked, path)
}

// TestOOMKilledFromCgroupCounter: with no "oom" file from conmon, an exit
// is OOMKilled exactly when the cgroup's counter says so; a cgroup that is
// already gone (an emptied systemd scope) leaves the plain exit reason.
func TestOOMKilledFromCgroupCounter(t *testing.T) {
	e := newEnv(t)
	oom := &fakeOOM{}
	m := e.manager(func(o *Options) { o.OOM = oom })
	defer m.Close()
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		kills uint64
		err   error
		want  string
	}{
		{"counted", 1, nil, ReasonOOMKilled},
		{"none", 0, nil, ReasonError},
		{"gone", 0, fmt.Errorf("cgroup: %w", errdefs.ErrNotFound), ReasonError},
	} {
		oom.set(tc.kills, tc.err)
		rec, err := m.Create(ctx, e.config(tc.name, "sh", "-c", "exit 3"))
		require.NoError(t, err)
		require.NoError(t, m.Start(ctx, rec.ID))
		ctxW, cancel := context.WithTimeout(ctx, time.Minute)
		r, err := m.Wait(ctxW, rec.ID)
		cancel()
		require.NoError(t, err)
		assert.EqualValues(t, 3, r.ExitCode, tc.name)
		assert.Equal(t, tc.want, r.Reason, tc.name)
		assert.NoFileExists(t, filepath.Join(rec.Bundle, "oom"), "conmon saw no OOM")
		assert.True(t, oom.wasAsked(rec.CgroupsPath), "the counter of the container's own cgroup was read")
		require.NoError(t, m.Remove(ctx, rec.ID))
	}
}

// TestOOMWatcher: a running container's events file is watched; when it
// changes and the counter is above zero, the bundle gets the "oom" witness
// at once, and an exit already handled as Error becomes OOMKilled.
func TestOOMWatcher(t *testing.T) {
	e := newEnv(t)
	oom := &fakeOOM{eventsDir: t.TempDir()}
	m := e.manager(func(o *Options) { o.OOM = oom })
	defer func() { m.Close() }() // the Manager of the end: it is replaced below
	ctx := context.Background()

	// While running: a change with the counter still at 0 records nothing;
	// one with the counter at 1 leaves the witness.
	rec, err := m.Create(ctx, e.config("running", "sleep", "1000"))
	require.NoError(t, err)
	require.NoError(t, m.Start(ctx, rec.ID))
	oom.touch(t, rec.CgroupsPath)
	time.Sleep(200 * time.Millisecond) // a watcher that would act has acted
	assert.NoFileExists(t, filepath.Join(rec.Bundle, "oom"))
	oom.set(1, nil)
	oom.touch(t, rec.CgroupsPath)
	require.Eventually(t, func() bool { return fileExists(filepath.Join(rec.Bundle, "oom")) }, 10*time.Second, 10*time.Millisecond)
	oom.set(0, nil) // only the witness may say OOMKilled now
	require.NoError(t, m.Stop(ctx, rec.ID, 0, 0))
	r, err := m.Get(rec.ID)
	require.NoError(t, err)
	assert.Equal(t, ReasonOOMKilled, r.Reason)
	require.NoError(t, m.Remove(ctx, rec.ID))

	// The kernel's notice after the exit was handled: the reason is fixed,
	// also when conmon wrote its "oom" file late too.
	// exitedWithError runs a container that exits 3 while the counter
	// reads 0, and returns it once its exit is handled.
	exitedWithError := func(name string) Record {
		oom.set(0, nil)
		rec, err := m.Create(ctx, e.config(name, "sh", "-c", "exit 3"))
		require.NoError(t, err)
		require.NoError(t, m.Start(ctx, rec.ID))
		ctxW, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		r, err := m.Wait(ctxW, rec.ID)
		require.NoError(t, err)
		require.Equal(t, ReasonError, r.Reason)
		return r
	}
	for _, conmonToo := range []bool{false, true} {
		rec = exitedWithError(fmt.Sprintf("late-%v", conmonToo))
		if conmonToo {
			require.NoError(t, os.WriteFile(filepath.Join(rec.Bundle, "oom"), nil, 0o600))
		}
		oom.set(1, nil)
		oom.touch(t, rec.CgroupsPath)
		require.Eventually(t, func() bool {
			r, err := m.Get(rec.ID)
			return err == nil && r.Reason == ReasonOOMKilled
		}, 10*time.Second, 10*time.Millisecond, "conmon's file too: %v", conmonToo)
		require.NoError(t, m.Remove(ctx, rec.ID))
	}

	// A crid that stopped between the witness and the record: the next one
	// corrects the record from the witness.
	rec = exitedWithError("crashed")
	require.NoError(t, m.Close())
	require.NoError(t, os.WriteFile(filepath.Join(rec.Bundle, "oom"), nil, 0o600))
	m = e.manager(func(o *Options) { o.OOM = oom })
	r, err = m.Get(rec.ID)
	require.NoError(t, err)
	assert.Equal(t, ReasonOOMKilled, r.Reason)
	require.NoError(t, m.Remove(ctx, rec.ID))

	// A restarted Manager reads the counters of the containers still
	// running at once (a kill while crid was down), and watches them.
	rec, err = m.Create(ctx, e.config("recovered", "sleep", "1000"))
	require.NoError(t, err)
	require.NoError(t, m.Start(ctx, rec.ID))
	rec2, err := m.Create(ctx, e.config("recovered-later", "sleep", "1000"))
	require.NoError(t, err)
	require.NoError(t, m.Start(ctx, rec2.ID))
	require.NoError(t, m.Close())
	oom.set(1, nil)
	m = e.manager(func(o *Options) { o.OOM = oom })
	for _, r := range []Record{rec, rec2} {
		assert.FileExists(t, filepath.Join(r.Bundle, "oom"), "read when the restarted Manager watched it")
		require.NoError(t, os.Remove(filepath.Join(r.Bundle, "oom")))
	}
	oom.touch(t, rec2.CgroupsPath)
	require.Eventually(t, func() bool { return fileExists(filepath.Join(rec2.Bundle, "oom")) }, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, m.Remove(ctx, rec.ID))
	require.NoError(t, m.Remove(ctx, rec2.ID))
}

// TestRescanExits: exits whose inotify events were lost (the queue
// overflowed) are found by rescanExits, which the watcher runs on
// IN_Q_OVERFLOW.
func TestRescanExits(t *testing.T) {
	e := newEnv(t)
	var mu sync.Mutex
	var exited []string
	m := e.manager(func(o *Options) {
		o.OnExit = func(r Record) {
			mu.Lock()
			defer mu.Unlock()
			exited = append(exited, r.ID)
		}
	})
	defer m.Close()
	ctx := context.Background()
	rec := e.run(ctx, m, "lost", "sleep", "1000")
	other := e.run(ctx, m, "running", "sleep", "1000")

	// Lose every later event: drop the exit dir's watch (the first).
	sc, err := m.watch.SyscallConn()
	require.NoError(t, err)
	require.NoError(t, sc.Control(func(fd uintptr) {
		_, err = unix.InotifyRmWatch(int(fd), 1)
	}))
	require.NoError(t, err)
	require.NoError(t, unix.Kill(rec.Pid, unix.SIGKILL))
	require.Eventually(t, func() bool { return m.exitedNow(rec.ID) }, 10*time.Second, 10*time.Millisecond, "conmon wrote the exit file")
	time.Sleep(100 * time.Millisecond) // what a watcher would have done by now
	r, err := m.Get(rec.ID)
	require.NoError(t, err)
	require.Equal(t, StateRunning, r.State, "the exit went unseen")

	m.rescanExits(ctx)
	r, err = m.Get(rec.ID)
	require.NoError(t, err)
	assert.Equal(t, StateExited, r.State)
	assert.EqualValues(t, 137, r.ExitCode)
	r, err = m.Get(other.ID)
	require.NoError(t, err)
	assert.Equal(t, StateRunning, r.State, "a running container stays running")
	mu.Lock()
	assert.Equal(t, []string{rec.ID}, exited)
	mu.Unlock()
	require.NoError(t, m.Remove(ctx, rec.ID))
	require.NoError(t, m.Remove(ctx, other.ID))
}

// TestOOMWatcherParentWitness: a container SIGKILLed with its own cgroup
// already gone (an emptied systemd scope, whose deferred OOM notice the
// kernel dropped) is OOMKilled when its parent cgroup counted a kill since
// the container's own count was last seen at 0 (at start or at a notice),
// and only then.
func TestOOMWatcherParentWitness(t *testing.T) {
	e := newEnv(t)
	oom := &fakeOOM{eventsDir: t.TempDir()}
	gone := fmt.Errorf("scope removed: %w", errdefs.ErrNotFound)
	m := e.manager(func(o *Options) { o.OOM = oom })
	defer m.Close()
	ctx := context.Background()
	for _, tc := range []struct {
		name       string
		notice     bool   // the container's counters changed (a kernel notice) before the kill
		parentKill bool   // the parent counted a kill after that
		script     string // "": killed with SIGKILL
		want       string
	}{
		{"killed", true, true, "", ReasonOOMKilled},
		{"killed-without-notice", false, true, "", ReasonOOMKilled}, // baseline from the start
		{"parent-quiet", true, false, "", ReasonError},
		{"not-sigkill", true, true, "sleep 1; exit 3", ReasonError},
	} {
		oom.setParent(10)
		oom.set(0, nil) // the container's own cgroup, while it runs
		script := tc.script
		if script == "" {
			script = "sleep 1000"
		}
		rec := e.run(ctx, m, tc.name, "sh", "-c", script)
		if tc.notice {
			oom.touch(t, rec.CgroupsPath)
			time.Sleep(200 * time.Millisecond) // the watcher noted the parent's count
		}
		if tc.parentKill {
			oom.setParent(11)
		}
		oom.set(0, gone) // by the exit, systemd removed the scope
		if tc.script == "" {
			require.NoError(t, unix.Kill(rec.Pid, unix.SIGKILL))
		}
		ctxW, cancel := context.WithTimeout(ctx, time.Minute)
		r, err := m.Wait(ctxW, rec.ID)
		cancel()
		require.NoError(t, err)
		assert.Equal(t, tc.want, r.Reason, "%s (exit %d)", tc.name, r.ExitCode)
		require.NoError(t, m.Remove(ctx, rec.ID))
	}
}
