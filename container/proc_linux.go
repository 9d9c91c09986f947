package container

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// procStartTime returns the start time of pid (field 22 of
// /proc/<pid>/stat, clock ticks since boot); with the pid it names one
// process across PID reuse. ok is false when the process is gone.
func procStartTime(pid int) (start uint64, ok bool) {
	if pid <= 0 {
		return 0, false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// comm (field 2) may hold spaces and parentheses: split after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	fields := strings.Fields(string(b[i+1:]))
	// fields[0] is field 3 (state); field 22 is fields[19].
	if len(fields) < 20 || fields[0] == "Z" || fields[0] == "X" {
		return 0, false
	}
	start, err = strconv.ParseUint(fields[19], 10, 64)
	return start, err == nil
}

// processAlive reports whether pid runs and started at start (0: any).
func processAlive(pid int, start uint64) bool {
	s, ok := procStartTime(pid)
	return ok && (start == 0 || s == start)
}

// oomScoreAdjMin is the lowest oom_score_adj crid may give its children
// without CAP_SYS_RESOURCE: its own.
func oomScoreAdjMin() (int, error) {
	b, err := os.ReadFile("/proc/self/oom_score_adj")
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// procParent returns the parent PID of pid (field 4 of /proc/<pid>/stat).
func procParent(pid int) (int, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 2 {
		return 0, false
	}
	ppid, err := strconv.Atoi(fields[1])
	return ppid, err == nil
}

// signalInit sends sig to a container's init process directly, without
// running the OCI runtime (a runc exec costs tens of milliseconds). The
// process is pinned with a pidfd first and then checked to be a child of
// the container's monitor (conmon reaps the container, so it is the init's
// parent), so a reused PID can never receive the signal. ok is false when
// that cannot be established; the caller then asks the runtime.
func signalInit(pid, conmonPid int, sig syscall.Signal) (ok bool) {
	if pid <= 0 || conmonPid <= 0 {
		return false
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	if ppid, found := procParent(pid); !found || ppid != conmonPid {
		return false
	}
	return unix.PidfdSendSignal(fd, sig, nil, 0) == nil
}
