//go:build e2e

package e2e

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestExecSync checks ExecSync's output, exit codes and timeout.
func TestExecSync(t *testing.T) {
	e := newRuntimeEnv(t)
	pod := e.podConfig("exec", nil)
	podID := e.runPod(t, pod)
	id := e.run(t, podID, pod, "main", "sleep", "99999")

	out, errOut, code := e.execOut(t, id, "sh", "-c", "echo to-stdout; echo to-stderr >&2")
	require.Equal(t, "to-stdout\n", out)
	require.Equal(t, "to-stderr\n", errOut)
	require.EqualValues(t, 0, code)

	out, errOut, code = e.execOut(t, id, "sh", "-c", "echo before-exit; exit 3")
	require.Equal(t, "before-exit\n", out)
	require.Empty(t, errOut)
	require.EqualValues(t, 3, code)

	_, errOut, code = e.execOut(t, id, "/no/such/binary")
	require.NotZero(t, code, "exec of a missing binary fails: %s", errOut)

	t.Run("timeout", func(t *testing.T) {
		_, info := e.ctrVerbose(t, id)
		require.Positive(t, info.Pid)
		pidNS, err := os.Readlink("/proc/" + strconv.Itoa(info.Pid) + "/ns/pid")
		require.NoError(t, err)

		start := time.Now()
		_, err = e.rt().ExecSync(context.Background(), &runtime.ExecSyncRequest{
			ContainerId: id, Cmd: []string{"sleep", "100"}, Timeout: 1})
		elapsed := time.Since(start)
		requireCode(t, codes.DeadlineExceeded, err)
		require.GreaterOrEqual(t, elapsed, time.Second)
		require.Less(t, elapsed, 10*time.Second)

		// Right away, not even a zombie of the exec'd sleep is left in the
		// container (critest checks the same with ps).
		for _, p := range listProcs() {
			ns, err := os.Readlink("/proc/" + strconv.Itoa(p.pid) + "/ns/pid")
			if err != nil || ns != pidNS || p.pid == info.Pid {
				continue
			}
			require.NotEqual(t, "sleep", p.comm, "exec'd process %d (%v, state %s) survived its timeout", p.pid, p.argv, p.state)
		}
		// The container is unharmed.
		require.Equal(t, "still-here\n", e.mustExec(t, id, "echo", "still-here"))
		require.Equal(t, runtime.ContainerState_CONTAINER_RUNNING, e.ctrStatus(t, id).GetState())
	})

	t.Run("background process holds the output", func(t *testing.T) {
		// As a postStart hook's `sh -c 'daemon &'` does: the exec returns
		// when the command exits, well inside a probe's one second.
		resp, err := e.rt().ExecSync(context.Background(), &runtime.ExecSyncRequest{
			ContainerId: id, Cmd: []string{"sh", "-c", "sleep 100 & echo started"}, Timeout: 1})
		require.NoError(t, err)
		require.Equal(t, "started\n", string(resp.GetStdout()))
		require.EqualValues(t, 0, resp.GetExitCode())
	})

	t.Run("not running", func(t *testing.T) {
		e.stopCtr(t, id, 0)
		_, err := e.rt().ExecSync(context.Background(), &runtime.ExecSyncRequest{ContainerId: id, Cmd: []string{"true"}, Timeout: 5})
		requireCode(t, codes.FailedPrecondition, err, "exec in an exited container")
	})
}

// criLine is one line of a CRI log file.
type criLine struct {
	ts     time.Time
	stream string
	tag    string
	text   string
}

var criLineRE = regexp.MustCompile(`^(\S+) (stdout|stderr) (P|F) (.*)$`)

func readCRILog(t testing.TB, path string) []criLine {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var out []criLine
	if len(b) == 0 {
		return nil
	}
	require.True(t, strings.HasSuffix(string(b), "\n"), "log ends with a newline")
	for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		m := criLineRE.FindStringSubmatch(l)
		require.NotNil(t, m, "not a CRI log line: %.200q", l)
		ts, err := time.Parse(time.RFC3339Nano, m[1])
		require.NoError(t, err, "timestamp of %.200q", l)
		out = append(out, criLine{ts: ts, stream: m[2], tag: m[3], text: m[4]})
	}
	return out
}

// messages reassembles the stream's P…F sequences into whole lines.
func messages(lines []criLine, stream string) (msgs []string, partials int) {
	var cur strings.Builder
	for _, l := range lines {
		if l.stream != stream {
			continue
		}
		cur.WriteString(l.text)
		if l.tag == "P" {
			partials++
			continue
		}
		msgs = append(msgs, cur.String())
		cur.Reset()
	}
	return msgs, partials
}

// TestContainerLogs checks the CRI log format, the splitting of a line
// longer than 16 KiB, and rotation by ReopenContainerLog.
func TestContainerLogs(t *testing.T) {
	e := newRuntimeEnv(t)
	pod := e.podConfig("logs", nil)
	podID := e.runPod(t, pod)

	t.Run("format and long line", func(t *testing.T) {
		// 16 × 2^11 = 32 KiB on one line.
		id := e.run(t, podID, pod, "writer", "sh", "-c",
			`echo hello; echo oops >&2; s=0123456789abcdef; i=0; while [ $i -lt 11 ]; do s=$s$s; i=$((i+1)); done; echo $s; echo done`)
		st := e.waitState(t, id, runtime.ContainerState_CONTAINER_EXITED, 10*time.Second)
		require.EqualValues(t, 0, st.GetExitCode())
		path := filepath.Join(pod.GetLogDirectory(), "writer.log")
		require.Equal(t, path, st.GetLogPath())

		before := time.Now()
		lines := readCRILog(t, path)
		require.NotEmpty(t, lines)
		for _, l := range lines {
			require.WithinDuration(t, before, l.ts, time.Minute)
		}
		require.Equal(t, criLine{ts: lines[0].ts, stream: "stdout", tag: "F", text: "hello"}, firstOf(lines, "stdout"))
		require.Equal(t, criLine{ts: firstOf(lines, "stderr").ts, stream: "stderr", tag: "F", text: "oops"}, firstOf(lines, "stderr"))

		long := strings.Repeat("0123456789abcdef", 1<<11)
		out, partials := messages(lines, "stdout")
		require.Len(t, out, 3, "stdout messages")
		require.Equal(t, []int{5, len(long), 4}, []int{len(out[0]), len(out[1]), len(out[2])})
		require.Equal(t, []string{"hello", long, "done"}, out)
		require.Positive(t, partials, "a 32 KiB line is split into P lines")
		errs, _ := messages(lines, "stderr")
		require.Equal(t, []string{"oops"}, errs)
		for _, l := range lines {
			require.LessOrEqual(t, len(l.text), 16<<10, "no log line holds more than 16 KiB")
		}
	})

	t.Run("reopen", func(t *testing.T) {
		id := e.run(t, podID, pod, "counter", "sh", "-c",
			`i=0; while true; do echo line $i; i=$((i+1)); sleep 0.005; done`)
		path := filepath.Join(pod.GetLogDirectory(), "counter.log")
		countLines := func(p string) int {
			b, _ := os.ReadFile(p)
			return strings.Count(string(b), "\n")
		}
		require.Eventually(t, func() bool { return countLines(path) >= 50 }, 10*time.Second, 20*time.Millisecond)

		rotated := path + ".1"
		require.NoError(t, os.Rename(path, rotated))
		_, err := e.rt().ReopenContainerLog(context.Background(), &runtime.ReopenContainerLogRequest{ContainerId: id})
		require.NoError(t, err, "%s", e.d.Logs())
		require.FileExists(t, path, "the monitor made a new log file")
		require.Eventually(t, func() bool { return countLines(path) >= 50 }, 10*time.Second, 20*time.Millisecond,
			"new lines land in the new file")
		oldSize := countLines(rotated)
		time.Sleep(100 * time.Millisecond)
		require.Equal(t, oldSize, countLines(rotated), "nothing more is written to the rotated file")

		e.stopCtr(t, id, 0)
		oldMsgs, _ := messages(readCRILog(t, rotated), "stdout")
		newMsgs, _ := messages(readCRILog(t, path), "stdout")
		require.NotEmpty(t, oldMsgs)
		require.NotEmpty(t, newMsgs)
		all := append(oldMsgs, newMsgs...)
		for i, m := range all {
			require.Equal(t, "line "+strconv.Itoa(i), m, "lines are contiguous across the rotation (none lost or repeated)")
		}
	})

	t.Run("reopen of a stopped container", func(t *testing.T) {
		resp, err := e.rt().ListContainers(context.Background(), &runtime.ListContainersRequest{Filter: &runtime.ContainerFilter{
			LabelSelector: map[string]string{"ctr": "counter"}}})
		require.NoError(t, err)
		require.Len(t, resp.GetContainers(), 1)
		_, err = e.rt().ReopenContainerLog(context.Background(), &runtime.ReopenContainerLogRequest{ContainerId: resp.GetContainers()[0].GetId()})
		requireCode(t, codes.FailedPrecondition, err)
	})
}

func firstOf(lines []criLine, stream string) criLine {
	for _, l := range lines {
		if l.stream == stream {
			return l
		}
	}
	return criLine{}
}

// TestMountOptions: CRI mount_options restrict a bind mount in the running
// container (the kernel's mount flags, as the container sees them), and an
// option that would loosen or redefine the mount is InvalidArgument.
func TestMountOptions(t *testing.T) {
	e := newRuntimeEnv(t)
	vol := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(vol, "run.sh"), []byte("#!/bin/sh\necho ran\n"), 0o755))
	pod := e.podConfig("mountopts", nil)
	podID := e.runPod(t, pod)

	cfg := e.ctrConfig(pod, "restricted", "sleep", "99999")
	cfg.Mounts = []*runtime.Mount{
		{ContainerPath: "/data", HostPath: vol, MountOptions: []string{"noexec", "nosuid", "nodev"}},
		{ContainerPath: "/plain", HostPath: vol},
	}
	id := e.create(t, podID, pod, cfg)
	e.start(t, id)

	// mountinfo field 6 holds the per-mount flags.
	flags := func(dst string) []string {
		out := e.mustExec(t, id, "cat", "/proc/self/mountinfo")
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) > 5 && f[4] == dst {
				return strings.Split(f[5], ",")
			}
		}
		t.Fatalf("%s not in mountinfo:\n%s", dst, out)
		return nil
	}
	require.Subset(t, flags("/data"), []string{"rw", "noexec", "nosuid", "nodev"})
	require.NotContains(t, flags("/plain"), "noexec")
	require.Equal(t, "ran\n", e.mustExec(t, id, "/plain/run.sh"))
	_, errOut, code := e.execOut(t, id, "/data/run.sh")
	require.NotZero(t, code, "a script on a noexec mount must not run: %s", errOut)

	for _, bad := range []string{"exec", "suid", "rw", "rshared", "noatime", "size=1g"} {
		cfg := e.ctrConfig(pod, "bad-"+strings.ReplaceAll(bad, "=", "-"), "true")
		cfg.Mounts = []*runtime.Mount{{ContainerPath: "/data", HostPath: vol, Readonly: true, MountOptions: []string{bad}}}
		_, err := e.rt().CreateContainer(context.Background(), &runtime.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
		requireCode(t, codes.InvalidArgument, err)
		require.ErrorContains(t, err, bad)
	}
}

// TestOOMKilledReason: a container whose process outgrows its memory limit
// is reported through the CRI as kubelet reads it: exited 137, reason
// OOMKilled, and a sibling that exits on its own as Completed.
func TestOOMKilledReason(t *testing.T) {
	e := newRuntimeEnv(t)
	pod := e.podConfig("oom", nil)
	podID := e.runPod(t, pod)

	cfg := e.ctrConfig(pod, "hog", "sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a)")
	// Swap limited to the memory limit too, should the node have swap.
	cfg.Linux.Resources = &runtime.LinuxContainerResources{MemoryLimitInBytes: 32 << 20, MemorySwapLimitInBytes: 32 << 20}
	hog := e.create(t, podID, pod, cfg)
	e.start(t, hog)
	quiet := e.run(t, podID, pod, "quiet", "true")

	st := e.waitState(t, hog, runtime.ContainerState_CONTAINER_EXITED, 2*time.Minute)
	require.EqualValues(t, 137, st.GetExitCode())
	require.Equal(t, "OOMKilled", st.GetReason())
	st = e.waitState(t, quiet, runtime.ContainerState_CONTAINER_EXITED, time.Minute)
	require.EqualValues(t, 0, st.GetExitCode())
	require.Equal(t, "Completed", st.GetReason())
}
