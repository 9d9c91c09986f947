package mount

import (
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// flagOptions maps option words to the mount flags they set or clear.
var flagOptions = map[string]struct {
	clear bool
	flag  uintptr
}{
	"ro":          {false, unix.MS_RDONLY},
	"rw":          {true, unix.MS_RDONLY},
	"bind":        {false, unix.MS_BIND},
	"rbind":       {false, unix.MS_BIND | unix.MS_REC},
	"nosuid":      {false, unix.MS_NOSUID},
	"suid":        {true, unix.MS_NOSUID},
	"nodev":       {false, unix.MS_NODEV},
	"dev":         {true, unix.MS_NODEV},
	"noexec":      {false, unix.MS_NOEXEC},
	"exec":        {true, unix.MS_NOEXEC},
	"sync":        {false, unix.MS_SYNCHRONOUS},
	"async":       {true, unix.MS_SYNCHRONOUS},
	"dirsync":     {false, unix.MS_DIRSYNC},
	"noatime":     {false, unix.MS_NOATIME},
	"atime":       {true, unix.MS_NOATIME},
	"nodiratime":  {false, unix.MS_NODIRATIME},
	"diratime":    {true, unix.MS_NODIRATIME},
	"relatime":    {false, unix.MS_RELATIME},
	"norelatime":  {true, unix.MS_RELATIME},
	"strictatime": {false, unix.MS_STRICTATIME},
}

// propagationOptions maps option words to propagation types.
var propagationOptions = map[string]uintptr{
	"private":     unix.MS_PRIVATE,
	"rprivate":    unix.MS_PRIVATE | unix.MS_REC,
	"shared":      unix.MS_SHARED,
	"rshared":     unix.MS_SHARED | unix.MS_REC,
	"slave":       unix.MS_SLAVE,
	"rslave":      unix.MS_SLAVE | unix.MS_REC,
	"unbindable":  unix.MS_UNBINDABLE,
	"runbindable": unix.MS_UNBINDABLE | unix.MS_REC,
}

// All mounts mounts on target, in order. If one fails, those already made
// are unmounted.
func All(mounts []Mount, target string) error {
	abs, err := filepath.Abs(target)
	if err != nil {
		return fmt.Errorf("mount on %s: %w", target, err)
	}
	for i, m := range mounts {
		if err := mountOne(m, abs); err != nil {
			if i > 0 {
				_ = Unmount(abs) // best effort: report the mount error
			}
			return fmt.Errorf("mount %s on %s: %w", m.Type, target, err)
		}
	}
	return nil
}

func mountOne(m Mount, target string) error {
	var flags, propagation uintptr
	var data []string
	for _, o := range m.Options {
		if f, ok := flagOptions[o]; ok {
			if f.clear {
				flags &^= f.flag
			} else {
				flags |= f.flag
			}
			continue
		}
		if p, ok := propagationOptions[o]; ok {
			propagation = p
			continue
		}
		data = append(data, o)
	}

	if flags&unix.MS_BIND != 0 {
		if err := unix.Mount(m.Source, target, "", flags&(unix.MS_BIND|unix.MS_REC), ""); err != nil {
			return err
		}
		// A bind mount ignores the other flags: apply them by remounting.
		if rest := flags &^ (unix.MS_BIND | unix.MS_REC); rest != 0 {
			if err := unix.Mount("", target, "", unix.MS_REMOUNT|unix.MS_BIND|rest, ""); err != nil {
				_ = unix.Unmount(target, unix.MNT_DETACH)
				return fmt.Errorf("remount bind: %w", err)
			}
		}
	} else {
		opts := strings.Join(data, ",")
		dir := ""
		if m.Type == "overlay" && len(opts) >= unix.Getpagesize() {
			var err error
			if dir, opts, err = compactLowerdir(data); err != nil {
				return err
			}
		}
		if err := mountAt(dir, m.Source, target, m.Type, flags, opts); err != nil {
			return err
		}
	}
	if propagation != 0 {
		if err := unix.Mount("", target, "", propagation, ""); err != nil {
			_ = unix.Unmount(target, unix.MNT_DETACH)
			return fmt.Errorf("set propagation: %w", err)
		}
	}
	return nil
}

// compactLowerdir rewrites the lowerdir option relative to the longest
// directory its entries share and returns that directory and the new data
// string.
func compactLowerdir(data []string) (dir, opts string, err error) {
	idx := -1
	for i, o := range data {
		if strings.HasPrefix(o, "lowerdir=") {
			idx = i
		}
	}
	if idx < 0 {
		return "", "", errors.New("overlay options longer than a page and no lowerdir to shorten")
	}
	lowers := strings.Split(strings.TrimPrefix(data[idx], "lowerdir="), ":")
	dir = commonDir(lowers)
	if dir == "" || dir == "/" {
		return "", "", errors.New("overlay options longer than a page and the lowerdirs share no directory")
	}
	rel := make([]string, len(lowers))
	for i, l := range lowers {
		rel[i] = l[len(dir)+1:]
	}
	out := make([]string, len(data))
	copy(out, data)
	out[idx] = "lowerdir=" + strings.Join(rel, ":")
	opts = strings.Join(out, ",")
	if len(opts) >= unix.Getpagesize() {
		return "", "", fmt.Errorf("overlay options for %d layers do not fit in a page even relative to %s", len(lowers), dir)
	}
	return dir, opts, nil
}

// commonDir returns the longest directory that contains every path.
func commonDir(paths []string) string {
	if len(paths) == 0 {
		return ""
	}
	dir := filepath.Dir(paths[0])
	for _, p := range paths[1:] {
		for dir != "/" && dir != "." && !strings.HasPrefix(p, dir+"/") {
			dir = filepath.Dir(dir)
		}
	}
	if dir == "." {
		return ""
	}
	return dir
}

// mountAt calls mount(2) with dir as the working directory (when not
// empty), for relative lowerdir paths.
func mountAt(dir, source, target, fstype string, flags uintptr, data string) error {
	if dir == "" {
		return unix.Mount(source, target, fstype, flags, data)
	}
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: after unshare(CLONE_FS) this thread's working
		// directory is its own, and the runtime discards the thread when
		// the goroutine exits locked.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			errc <- fmt.Errorf("unshare filesystem attributes: %w", err)
			return
		}
		if err := unix.Chdir(dir); err != nil {
			errc <- fmt.Errorf("chdir %s: %w", dir, err)
			return
		}
		errc <- unix.Mount(source, target, fstype, flags, data)
	}()
	return <-errc
}

const (
	// busyRetries and busyDelay bound how long Unmount waits for a busy
	// mount (processes still exiting) before detaching it.
	busyRetries = 10
	busyDelay   = 50 * time.Millisecond
	// maxStacked bounds how many mounts Unmount removes from one target.
	maxStacked = 64
)

// Unmount removes every mount on target. A target that is not a mount
// point (or does not exist) is not an error. A mount that stays busy is
// detached (MNT_DETACH): it disappears from the tree at once and is freed
// when its last user goes.
func Unmount(target string) error {
	busy := 0
	for range maxStacked {
		err := unix.Unmount(target, unix.UMOUNT_NOFOLLOW)
		switch {
		case err == nil:
			busy = 0 // another mount may be stacked below
		case err == unix.EINVAL || err == unix.ENOENT:
			return nil
		case err == unix.EBUSY && busy < busyRetries:
			busy++
			time.Sleep(busyDelay)
		case err == unix.EBUSY:
			if err := unix.Unmount(target, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err != nil && err != unix.EINVAL {
				return fmt.Errorf("unmount %s: detach: %w", target, err)
			}
			busy = 0
		default:
			return fmt.Errorf("unmount %s: %w", target, err)
		}
	}
	return fmt.Errorf("unmount %s: more than %d mounts stacked", target, maxStacked)
}

// Mount is one mount(2) call, in the shape of containerd's mount.Mount.
type Mount struct {
	Type    string   // "overlay", "bind", "tmpfs", …
	Source  string   // "overlay", a directory, …
	Options []string // e.g. "lowerdir=…", "upperdir=…", "workdir=…", "rbind", "ro"
}
