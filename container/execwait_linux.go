package container

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ExecWaitMain is "crid exec-wait PIDFILE RUNTIME ARGS...", the helper
// ExecSync runs a command through. It runs "RUNTIME ARGS..." (a detached
// `runc exec -d --pid-file PIDFILE ...`), so that the command gets the
// helper's stdout and stderr (ExecSync's pipes) directly, and, being a
// child subreaper, adopts the command when the runtime exits, reaps it and
// exits with its status (128+N for signal N).
//
// A foreground `runc exec` would not do: runc 1.1 copies the command's
// output through pipes of its own and exits only when those reach EOF, so
// a command that leaves a process behind holding its output
// (`sh -c 'daemon &'`, common in postStart hooks and probes) would keep
// ExecSync waiting until that process exits or the timeout kills it.
// cmd/crid calls it; it does not return.
func ExecWaitMain(args []string) {
	if len(args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: crid exec-wait PIDFILE RUNTIME ARGS...")
		os.Exit(255)
	}
	os.Exit(execWait(args[0], args[1], args[2:]))
}

func execWait(pidFile, runtime string, args []string) int {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "exec-wait: become subreaper:", err)
		return 255
	}
	cmd := exec.Command(runtime, args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr // *os.File: passed on, not copied
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode() // the runtime said why on stderr
		}
		fmt.Fprintln(os.Stderr, "exec-wait:", err)
		return 255
	}
	b, err := os.ReadFile(pidFile)
	pid, perr := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || perr != nil || pid <= 0 {
		fmt.Fprintf(os.Stderr, "exec-wait: no pid from the runtime in %s: %v %v\n", pidFile, err, perr)
		return 255
	}
	for {
		var ws unix.WaitStatus
		wpid, err := unix.Wait4(-1, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			// ECHILD: the command was never adopted (it cannot happen
			// while this process is a subreaper above the runtime).
			fmt.Fprintf(os.Stderr, "exec-wait: wait for %d: %v\n", pid, err)
			return 255
		}
		if wpid != pid {
			continue // an orphan of the command's, reparented here
		}
		switch {
		case ws.Exited():
			return ws.ExitStatus()
		case ws.Signaled():
			return 128 + int(ws.Signal())
		}
	}
}

// execSyncDrain bounds how long ExecSync waits for the output pipes once
// the command has exited: a process it left behind may hold them forever.
// What the command wrote before exiting is in the pipe (at most 64 KiB) and
// is read long before.
const execSyncDrain = 250 * time.Millisecond
