package archive

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// futimens sets the access and modification times of the file open as fd,
// as utimensat(fd, NULL, ts, 0) does. x/sys has no wrapper for the NULL-path
// form; its Futimes goes through /proc and has microsecond precision.
func futimens(fd int, ts *[2]unix.Timespec) error {
	_, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(ts)), 0, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}
