package container

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/opencontainers/runtime-spec/specs-go/features"
	"golang.org/x/sys/unix"
)

// Runtime is one runtime handler: an OCI runtime binary with its own state
// root, driven under conmon.
type Runtime struct {
	Name       string // handler name ("runc")
	Path       string // OCI runtime binary (runc or crun)
	Root       string // the runtime's --root state dir
	ConmonPath string // conmon binary
	Type       string // "oci"; kept for the server's RuntimeHandler features
	// ConmonLogLevel is conmon's --log-level ("error" when empty).
	ConmonLogLevel string
	// SystemdCgroup runs the runtime with --systemd-cgroup: cgroupsPath is
	// "slice:prefix:name" and systemd creates the scope.
	SystemdCgroup bool
	// ExecWait is the command prefix of the ExecSync helper (ExecWaitMain),
	// e.g. {"/usr/local/bin/crid", "exec-wait"}. Empty: ExecSync runs a
	// foreground `runtime exec`, which waits for any process the command
	// leaves behind holding its output.
	ExecWait []string
}

// globalArgs are the runtime's global options, before the subcommand.
func (r Runtime) globalArgs() []string {
	args := []string{"--root", r.Root}
	if r.SystemdCgroup {
		args = append(args, "--systemd-cgroup")
	}
	return args
}

// createTimeout bounds the wait for conmon to report the container's PID.
const createTimeout = 4 * time.Minute

// MaxExecOutput caps each ExecSync stream (CVE-2022-1708).
const MaxExecOutput = 16 << 20

// ctlReopenLogs is conmon's ctl fifo message that reopens log files:
// "<type> <height> <width>\n" with REOPEN_LOGS_EVENT = 2 (conmon config.h;
// 1 is WIN_RESIZE_EVENT).
const ctlReopenLogs = "2 0 0\n"

// createOpts is what Runtime.create needs to spawn conmon.
type createOpts struct {
	ID        string
	Bundle    string
	Name      string // conmon -n
	ExitDir   string
	SocketDir string
	LogPath   string
	Stdin     bool
	StdinOnce bool
	TTY       bool
}

// syncMessage is conmon's sync pipe message with --api-version 1:
// {"data": <pid or negative error>, "message": "<runtime stderr>"}.
type syncMessage struct {
	Data    int    `json:"data"`
	Message string `json:"message,omitempty"`
}

// create spawns conmon, which runs `runtime create` and stays as the
// container's monitor. It returns the container's and conmon's PIDs.
func (r Runtime) create(ctx context.Context, o createOpts) (pid, conmonPid int, err error) {
	conmonPidFile := filepath.Join(o.Bundle, "conmon.pid")
	level := r.ConmonLogLevel
	if level == "" {
		level = "error"
	}
	args := []string{
		"--api-version", "1",
		"-c", o.ID, "-u", o.ID,
		"-r", r.Path,
		"-b", o.Bundle,
		"-p", filepath.Join(o.Bundle, "pidfile"),
		"-n", o.Name,
		"--exit-dir", o.ExitDir,
		"--socket-dir-path", o.SocketDir,
		"-l", "k8s-file:" + o.LogPath,
		"--log-level", level,
		"--conmon-pidfile", conmonPidFile,
		"--runtime-arg", "--root=" + r.Root,
	}
	if o.Stdin {
		args = append(args, "-i")
		if !o.StdinOnce {
			args = append(args, "--leave-stdin-open")
		}
	}
	if o.TTY {
		args = append(args, "-t")
	}
	if r.SystemdCgroup {
		// conmon passes --systemd-cgroup to `runtime create` itself.
		args = append(args, "--systemd-cgroup")
	}

	syncR, syncW, err := os.Pipe()
	if err != nil {
		return 0, 0, fmt.Errorf("create sync pipe: %w", err)
	}
	defer syncR.Close()
	startR, startW, err := os.Pipe()
	if err != nil {
		syncW.Close()
		return 0, 0, fmt.Errorf("create start pipe: %w", err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(r.ConmonPath, args...)
	cmd.Dir = o.Bundle // conmon writes "oom" into its working directory
	cmd.ExtraFiles = []*os.File{syncW, startR}
	cmd.Env = append(os.Environ(), "_OCI_SYNCPIPE=3", "_OCI_STARTPIPE=4")
	cmd.Stdout = &stderr
	cmd.Stderr = &stderr
	startErr := cmd.Start()
	syncW.Close()
	startR.Close()
	if startErr != nil {
		startW.Close()
		return 0, 0, fmt.Errorf("start conmon: %w", startErr)
	}
	// conmon blocks on the start pipe so that it can be moved into a
	// cgroup first; crid keeps monitors where it is, so start it at once.
	_, werr := startW.Write([]byte{0})
	startW.Close()
	// The first conmon forks the monitor, writes --conmon-pidfile and exits.
	if err := cmd.Wait(); err != nil {
		return 0, 0, fmt.Errorf("run conmon: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	if werr != nil {
		return 0, 0, fmt.Errorf("write conmon start pipe: %w", werr)
	}
	if b, err := os.ReadFile(conmonPidFile); err == nil {
		conmonPid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}

	deadline := time.Now().Add(createTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := syncR.SetReadDeadline(deadline); err != nil {
		return 0, conmonPid, fmt.Errorf("set sync pipe deadline: %w", err)
	}
	var msg syncMessage
	if err := json.NewDecoder(syncR).Decode(&msg); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return 0, conmonPid, fmt.Errorf("wait for container pid from conmon: %w", context.DeadlineExceeded)
		}
		return 0, conmonPid, fmt.Errorf("read container pid from conmon: %w", err)
	}
	if msg.Data <= 0 {
		return 0, conmonPid, fmt.Errorf("%s create: %s: %w", filepath.Base(r.Path), strings.TrimSpace(msg.Message), errdefs.ErrUnknown)
	}
	return msg.Data, conmonPid, nil
}

// run runs the runtime with --root and args, feeding stdin, and returns
// stdout. Errors carry the runtime's stderr; "does not exist" maps to
// ErrNotFound.
func (r Runtime) run(ctx context.Context, stdin io.Reader, args ...string) ([]byte, error) {
	full := append(r.globalArgs(), args...)
	cmd := exec.CommandContext(ctx, r.Path, full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdin = stdin
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s %s: %w", filepath.Base(r.Path), args[0], ctx.Err())
		}
		if strings.Contains(msg, "does not exist") || strings.Contains(msg, "not exist") {
			return nil, fmt.Errorf("%s %s: %s: %w", filepath.Base(r.Path), args[0], msg, errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("%s %s: %w: %s", filepath.Base(r.Path), args[0], err, msg)
	}
	return stdout.Bytes(), nil
}

// Start runs `runtime start`: the created container runs its process.
func (r Runtime) Start(ctx context.Context, id string) error {
	_, err := r.run(ctx, nil, "start", id)
	return err
}

// Kill sends sig to the container's init, or to all its processes.
func (r Runtime) Kill(ctx context.Context, id string, sig syscall.Signal, all bool) error {
	args := []string{"kill"}
	if all {
		args = append(args, "--all")
	}
	_, err := r.run(ctx, nil, append(args, id, strconv.Itoa(int(sig)))...)
	return err
}

// Delete removes the runtime's state (and cgroup) of the container. A
// container the runtime does not know is not an error.
func (r Runtime) Delete(ctx context.Context, id string, force bool) error {
	args := []string{"delete"}
	if force {
		args = append(args, "--force")
	}
	_, err := r.run(ctx, nil, append(args, id)...)
	if errdefs.IsNotFound(err) {
		return nil
	}
	return err
}

// State returns `runtime state`.
func (r Runtime) State(ctx context.Context, id string) (*specs.State, error) {
	out, err := r.run(ctx, nil, "state", id)
	if err != nil {
		return nil, err
	}
	var s specs.State
	if err := json.Unmarshal(out, &s); err != nil {
		return nil, fmt.Errorf("decode %s state of %s: %w", filepath.Base(r.Path), id, err)
	}
	return &s, nil
}

// UpdateResources runs `runtime update --resources -`.
func (r Runtime) UpdateResources(ctx context.Context, id string, res *specs.LinuxResources) error {
	b, err := json.Marshal(res)
	if err != nil {
		return fmt.Errorf("encode resources: %w", err)
	}
	_, err = r.run(ctx, bytes.NewReader(b), "update", "--resources", "-", id)
	return err
}

// Features runs `runtime features` (runc ≥ 1.1). Best effort: older
// runtimes return an error the caller may ignore.
func (r Runtime) Features(ctx context.Context) (*features.Features, error) {
	out, err := r.run(ctx, nil, "features")
	if err != nil {
		return nil, err
	}
	var f features.Features
	if err := json.Unmarshal(out, &f); err != nil {
		return nil, fmt.Errorf("decode %s features: %w", filepath.Base(r.Path), err)
	}
	return &f, nil
}

// ReopenLog asks the container's conmon to reopen its log file, through
// the ctl fifo in the bundle. conmon reads it non-blocking with a dummy
// writer of its own open, so the open here does not block while conmon
// lives; O_NONBLOCK makes a dead conmon an ENXIO error instead of a hang.
func (r Runtime) ReopenLog(bundle string) error {
	f, err := os.OpenFile(filepath.Join(bundle, "ctl"), os.O_WRONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, unix.ENXIO) || errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("open conmon ctl fifo: %w: %w", err, errdefs.ErrFailedPrecondition)
		}
		return fmt.Errorf("open conmon ctl fifo: %w", err)
	}
	defer f.Close()
	if _, err := f.WriteString(ctlReopenLogs); err != nil {
		return fmt.Errorf("write conmon ctl fifo: %w", err)
	}
	return nil
}

// execOpts is one synchronous exec.
type execOpts struct {
	ID      string
	Dir     string // where to write the process spec and pid file
	Process *specs.Process
	Timeout time.Duration // 0: none
	Stdout  io.Writer
	Stderr  io.Writer
}

// exec runs `runtime exec --process <json>` and waits. runc exec (without
// -d) makes itself a child subreaper and reaps the exec'd process, so
// nothing lingers as long as runc outlives it. On timeout the exec'd
// process is killed first (runc reaps it and exits), then, if runc does
// not exit, runc's whole process group.
func (r Runtime) exec(ctx context.Context, o execOpts) (exitCode int, err error) {
	f, err := os.CreateTemp(o.Dir, "exec-*.json")
	if err != nil {
		return -1, fmt.Errorf("write exec process spec: %w", err)
	}
	specPath := f.Name()
	pidPath := strings.TrimSuffix(specPath, ".json") + ".pid"
	defer os.Remove(specPath)
	defer os.Remove(pidPath)
	if err := json.NewEncoder(f).Encode(o.Process); err != nil {
		f.Close()
		return -1, fmt.Errorf("write exec process spec: %w", err)
	}
	if err := f.Close(); err != nil {
		return -1, fmt.Errorf("write exec process spec: %w", err)
	}

	var cmd *exec.Cmd
	if len(r.ExecWait) > 0 {
		args := append(append(r.ExecWait[1:len(r.ExecWait):len(r.ExecWait)], pidPath, r.Path), r.globalArgs()...)
		args = append(args, "exec", "--detach", "--process", specPath, "--pid-file", pidPath, o.ID)
		cmd = exec.Command(r.ExecWait[0], args...)
		// The helper exits with the command; a process the command left
		// behind may hold the pipes: Wait gives up on them after the drain
		// (ErrWaitDelay, which processExitCode reads as success).
		cmd.WaitDelay = execSyncDrain
	} else {
		args := append(r.globalArgs(), "exec", "--process", specPath, "--pid-file", pidPath, o.ID)
		cmd = exec.Command(r.Path, args...)
		cmd.WaitDelay = 2 * time.Second
	}
	cmd.Stdout = o.Stdout
	cmd.Stderr = o.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return -1, fmt.Errorf("start %s exec: %w", filepath.Base(r.Path), err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	var timer <-chan time.Time
	if o.Timeout > 0 {
		t := time.NewTimer(o.Timeout)
		defer t.Stop()
		timer = t.C
	}
	var cause error
	select {
	case err = <-done:
	case <-timer:
		cause = fmt.Errorf("exec in %s timed out after %s: %w", o.ID, o.Timeout, context.DeadlineExceeded)
		err = killExec(cmd.Process.Pid, pidPath, done)
	case <-ctx.Done():
		cause = fmt.Errorf("exec in %s: %w", o.ID, ctx.Err())
		err = killExec(cmd.Process.Pid, pidPath, done)
	}
	if cause != nil {
		return -1, cause
	}
	if err != nil {
		if code, ok := processExitCode(err); ok {
			return code, nil
		}
		return -1, fmt.Errorf("%s exec: %w", filepath.Base(r.Path), err)
	}
	return 0, nil
}

// killExec kills an exec that timed out and returns runc's wait result.
func killExec(runcPid int, pidPath string, done <-chan error) error {
	if b, err := os.ReadFile(pidPath); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
			_ = unix.Kill(pid, unix.SIGKILL) // runc, its subreaper, reaps it
		}
		select {
		case err := <-done:
			return err
		case <-time.After(2 * time.Second):
		}
	}
	_ = unix.Kill(-runcPid, unix.SIGKILL)
	return <-done
}

// processExitCode is the exit code of an exec'd process whose Wait failed
// with an *exec.ExitError, in the shell's convention: 128+N when signal N
// killed it. exec.ErrWaitDelay (it exited 0, but a process it left behind
// kept an output pipe open past the drain) is 0.
func processExitCode(err error) (int, bool) {
	if errors.Is(err, exec.ErrWaitDelay) {
		return 0, true
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return 0, false
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal()), true
	}
	return ee.ExitCode(), true
}
