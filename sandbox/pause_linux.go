package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// PauseMain is the pause process: PID 1 of a pod's PID namespace. It sleeps
// until SIGINT or SIGTERM (then exits 0) and reaps every child that is
// re-parented to it, like the pause container's pause.c. cmd/crid calls it
// for "crid pause"; it does not return.
func PauseMain() {
	runtime.GOMAXPROCS(1)
	_ = os.Chdir("/") // best effort: do not pin crid's working directory
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, unix.SIGINT, unix.SIGTERM, unix.SIGCHLD)
	for s := range sigs {
		if s != unix.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}

// pause is a running pause process this Manager started.
type pause struct {
	proc      *os.Process
	done      chan struct{} // closed once reaped
	pid       int
	startTime uint64
}

// startPause starts argv as PID 1 of a new PID namespace, in its own
// session so that it outlives crid (a crid restart recovers it by PID and
// start time). A goroutine reaps it when it exits.
func startPause(argv []string) (*pause, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = "/"
	cmd.SysProcAttr = &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWPID, Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start pause process %s: %w", argv[0], err)
	}
	p := &pause{proc: cmd.Process, done: make(chan struct{}), pid: cmd.Process.Pid}
	go func() {
		_ = cmd.Wait() // the exit status of a killed pause says nothing
		close(p.done)
	}()
	st, err := procStartTime(p.pid)
	if err != nil {
		_ = p.kill(context.Background())
		return nil, fmt.Errorf("pause process %d exited at once: %w", p.pid, err)
	}
	p.startTime = st
	return p, nil
}

// kill kills and reaps the pause process, bounded by ctx.
func (p *pause) kill(ctx context.Context) error {
	if err := p.proc.Signal(unix.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill pause process %d: %w", p.pid, err)
	}
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for pause process %d: %w", p.pid, ctx.Err())
	}
}

// killRecovered kills a pause process started by an earlier crid (not our
// child: init reaps it). A pidfd makes sure the signal reaches the process
// whose start time was recorded, not a reused PID.
func killRecovered(ctx context.Context, pid int, startTime uint64) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open pidfd of pause process %d: %w", pid, err)
	}
	defer unix.Close(fd)
	if st, err := procStartTime(pid); err != nil || st != startTime {
		return nil // gone, or the PID was reused: not ours
	}
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("kill pause process %d: %w", pid, err)
	}
	for {
		// A pidfd polls readable once the process has exited (zombie or
		// reaped).
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 100)
		if n > 0 {
			return nil
		}
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("wait for pause process %d: %w", pid, err)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("wait for pause process %d: %w", pid, ctx.Err())
		}
	}
}

// pauseAlive reports whether pid is still the recorded, running (not
// zombie) pause process.
func pauseAlive(pid int, startTime uint64) bool {
	st, err := procStartTime(pid)
	return err == nil && st == startTime
}

// procStartTime returns field 22 of /proc/<pid>/stat (start time in clock
// ticks since boot). A zombie counts as gone (os.ErrProcessDone).
func procStartTime(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	s := string(b)
	// comm may contain spaces and parentheses: fields start after the last ')'.
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); field 22 is f[19].
	if len(f) < 20 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	if f[0] == "Z" || f[0] == "X" {
		return 0, os.ErrProcessDone
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// pauseWaitTimeout bounds how long Stop waits for a killed pause process.
const pauseWaitTimeout = 10 * time.Second
