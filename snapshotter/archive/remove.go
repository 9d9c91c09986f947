package archive

import (
	"os"

	"golang.org/x/sys/unix"
)

// removeAt removes name from the directory open as dirfd without following
// symlinks, recursively if it is a directory, and reports whether it was
// one. A missing name is not an error.
func removeAt(dirfd int, name string) (wasDir bool, err error) {
	err = unix.Unlinkat(dirfd, name, 0)
	if err == nil || err == unix.ENOENT {
		return false, nil
	}
	if err != unix.EISDIR {
		return false, err
	}
	return true, removeDirAt(dirfd, name)
}

// removeDirAt removes the directory name in dirfd and everything under it.
func removeDirAt(dirfd int, name string) error {
	fd, err := unix.Openat(dirfd, name, dirFlags, 0)
	if err == unix.ENOENT {
		return nil
	}
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), name)
	// Read all names before removing any: getdents and unlink interleaved
	// may skip entries.
	names, err := f.Readdirnames(-1)
	for _, n := range names {
		if err != nil {
			break
		}
		_, err = removeAt(fd, n)
	}
	f.Close()
	if err != nil {
		return err
	}
	if err := unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR); err != nil && err != unix.ENOENT {
		return err
	}
	return nil
}

// readDir lists the directory open as fd (through a new fd, so fd's offset
// is left alone).
func readDir(fd int) ([]os.DirEntry, error) {
	dfd, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(dfd), ".")
	defer f.Close()
	return f.ReadDir(-1)
}
