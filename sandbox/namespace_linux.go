package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/containerd/errdefs"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/crid-dev/crid/internal/mount"
)

// nsSetup is what the namespace thread does for one sandbox.
type nsSetup struct {
	net, ipc, uts bool
	// netPath, ipcPath, utsPath are where each new namespace is pinned.
	netPath, ipcPath, utsPath string
	hostname                  string // set in the new UTS namespace
	sysctls                   []sysctl
}

// createNamespaces unshares the requested namespaces on a dedicated OS
// thread, pins each by a bind mount, sets the hostname, brings loopback up
// and applies the sysctls. The thread is never unlocked, so it exits with
// the goroutine and its namespaces are never seen by other goroutines.
//
// On error, what was pinned stays pinned: the caller's cleanup releases it
// (releaseNamespace is safe on paths that were never pinned).
func createNamespaces(s nsSetup) error {
	var flags int
	if s.net {
		flags |= unix.CLONE_NEWNET
	}
	if s.ipc {
		flags |= unix.CLONE_NEWIPC
	}
	if s.uts {
		flags |= unix.CLONE_NEWUTS
	}
	if flags == 0 {
		return nil
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: see the doc comment
		errc <- s.onLockedThread(flags)
	}()
	return <-errc
}

// Precondition: the calling goroutine is locked to a thread that is
// discarded afterwards.
func (s nsSetup) onLockedThread(flags int) error {
	if err := unix.Unshare(flags); err != nil {
		return fmt.Errorf("unshare namespaces: %w", err)
	}
	tid := unix.Gettid()
	for _, p := range []struct {
		want       bool
		kind, path string
	}{{s.net, "net", s.netPath}, {s.ipc, "ipc", s.ipcPath}, {s.uts, "uts", s.utsPath}} {
		if !p.want {
			continue
		}
		if err := pinNamespace(fmt.Sprintf("/proc/%d/task/%d/ns/%s", os.Getpid(), tid, p.kind), p.path); err != nil {
			return fmt.Errorf("pin %s namespace: %w", p.kind, err)
		}
	}
	if s.uts {
		if err := unix.Sethostname([]byte(s.hostname)); err != nil {
			return fmt.Errorf("set hostname %q: %w", s.hostname, err)
		}
	}
	if s.net {
		if err := loopbackUp(); err != nil {
			return err
		}
	}
	// /proc/sys/net and the IPC sysctls resolve against the opening
	// thread's namespaces, which are the pod's here.
	return applySysctls(s.sysctls)
}

func pinNamespace(src, target string) error {
	f, err := os.OpenFile(target, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s on %s: %w", src, target, err)
	}
	return nil
}

// releaseNamespace unmounts and removes a pinned namespace file. It is
// idempotent and safe on a path that was never pinned.
func releaseNamespace(path string) error {
	if path == "" {
		return nil
	}
	if err := mount.Unmount(path); err != nil {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

// isPinned reports whether path is a live nsfs bind mount.
func isPinned(path string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false
	}
	return int64(st.Type) == unix.NSFS_MAGIC
}

// loopbackUp sets lo up in the calling thread's network namespace.
func loopbackUp() error {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("open netlink: %w", err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find loopback: %w", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set loopback up: %w", err)
	}
	return nil
}

// applySysctls writes each sysctl in the calling thread's namespaces.
func applySysctls(sysctls []sysctl) error {
	for _, s := range sysctls {
		f, err := os.OpenFile(filepath.Join("/proc/sys", s.path), os.O_WRONLY, 0)
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("sysctl %s: not known in the pod's namespaces: %w", s.name, errdefs.ErrInvalidArgument)
		}
		if err != nil {
			return fmt.Errorf("sysctl %s: %w", s.name, err)
		}
		_, err = f.WriteString(s.value)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("sysctl %s=%q: %w: %w", s.name, s.value, err, errdefs.ErrInvalidArgument)
		}
		if err != nil {
			return fmt.Errorf("sysctl %s=%q: %w", s.name, s.value, err)
		}
	}
	return nil
}

// inNetNS runs fn on a fresh goroutine whose OS thread joined the network
// namespace pinned at nsPath, and returns what fn returns. The thread is
// never unlocked, so the Go runtime discards it with the goroutine and no
// other goroutine ever runs in that namespace. Errors opening nsPath keep
// their fs error (errors.Is(err, fs.ErrNotExist)).
func inNetNS[T any](nsPath string, fn func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	ns, err := os.Open(nsPath)
	if err != nil {
		var zero T
		return zero, fmt.Errorf("open netns %s: %w", nsPath, err)
	}
	ch := make(chan result, 1)
	go func() {
		defer ns.Close()
		runtime.LockOSThread() // never unlocked: the thread dies with this goroutine
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{err: fmt.Errorf("enter netns %s: %w", nsPath, err)}
			return
		}
		v, err := fn()
		ch <- result{v, err}
	}()
	r := <-ch
	return r.v, r.err
}
