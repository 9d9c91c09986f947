package container

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/crid-dev/crid/internal/log"
)

// OOMCounter reads the kernel's OOM kill counter of a container's cgroup.
// cgroupmgr.Reader implements it for the host's hierarchy and driver.
type OOMCounter interface {
	// OOMKills counts the OOM kills in the cgroup and its descendants; a
	// cgroup that is gone is errdefs.ErrNotFound.
	OOMKills(cgroupsPath string) (uint64, error)
	// OOMEventsFile is the file whose modification announces an OOM kill
	// (memory.events on cgroup v2), or "" where there is none to watch
	// (cgroup v1, where conmon's eventfd does that job).
	OOMEventsFile(cgroupsPath string) (string, error)
}

// oomWatcher watches the memory.events file of every running container on
// cgroup v2 and writes the bundle's "oom" file (conmon's witness, which
// handleExitLocked reads) as soon as the counter moves. conmon watches the
// same file but stops at the container's exit, which can come before the
// kernel's notification; and under the systemd driver the scope, with its
// counter, is removed as soon as it is empty, so reading it at exit time
// is too late.
type oomWatcher struct {
	file    *os.File
	counter OOMCounter

	mu   sync.Mutex
	byWD map[int32]oomWatch
	byID map[string]int32
}

type oomWatch struct {
	id, bundle, cgroupsPath string
}

func newOOMWatcher(counter OOMCounter) (*oomWatcher, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("oom watcher: %w", err)
	}
	return &oomWatcher{
		file:    os.NewFile(uintptr(fd), "inotify:oom"),
		counter: counter,
		byWD:    map[int32]oomWatch{},
		byID:    map[string]int32{},
	}, nil
}

// add starts watching the container's cgroup. A hierarchy without an
// events file is not an error.
func (w *oomWatcher) add(id, bundle, cgroupsPath string) error {
	if cgroupsPath == "" {
		return nil
	}
	file, err := w.counter.OOMEventsFile(cgroupsPath)
	if err != nil || file == "" {
		return err
	}
	sc, err := w.file.SyscallConn()
	if err != nil {
		return err
	}
	var wd int
	var addErr error
	if err := sc.Control(func(fd uintptr) {
		wd, addErr = unix.InotifyAddWatch(int(fd), file, unix.IN_MODIFY)
	}); err != nil {
		return err
	}
	if addErr != nil {
		return fmt.Errorf("watch %s: %w", file, addErr)
	}
	w.mu.Lock()
	w.byWD[int32(wd)] = oomWatch{id: id, bundle: bundle, cgroupsPath: cgroupsPath}
	w.byID[id] = int32(wd)
	w.mu.Unlock()
	return nil
}

// remove stops watching the container's cgroup, if it was watched.
func (w *oomWatcher) remove(id string) {
	w.mu.Lock()
	wd, ok := w.byID[id]
	delete(w.byID, id)
	delete(w.byWD, wd)
	w.mu.Unlock()
	if !ok {
		return
	}
	if sc, err := w.file.SyscallConn(); err == nil {
		// EINVAL: the kernel dropped the watch with the cgroup already.
		_ = sc.Control(func(fd uintptr) { _, _ = unix.InotifyRmWatch(int(fd), uint32(wd)) })
	}
}

// run reads events until the watcher is closed, calling oom for each
// container whose counter is above zero.
func (w *oomWatcher) run(ctx context.Context, oom func(ctx context.Context, id, bundle string)) {
	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	for {
		n, err := w.file.Read(buf)
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				log.G(ctx).Error("oom watcher stopped", "error", err)
			}
			return
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafePointer(buf[off:]))
			off += unix.SizeofInotifyEvent + int(ev.Len)
			w.mu.Lock()
			watch, ok := w.byWD[ev.Wd]
			if ev.Mask&unix.IN_IGNORED != 0 && ok { // the cgroup is gone
				delete(w.byWD, ev.Wd)
				if w.byID[watch.id] == ev.Wd {
					delete(w.byID, watch.id)
				}
			}
			w.mu.Unlock()
			if !ok || ev.Mask&unix.IN_MODIFY == 0 {
				continue
			}
			kills, err := w.counter.OOMKills(watch.cgroupsPath)
			if err != nil {
				if !errdefs.IsNotFound(err) {
					log.G(ctx).Warn("read OOM kills of container cgroup", "containerid", watch.id, "error", err)
				}
				continue
			}
			if kills > 0 {
				oom(ctx, watch.id, watch.bundle)
			}
		}
	}
}

func (w *oomWatcher) close() error { return w.file.Close() }

// recordOOM notes that the kernel OOM-killed a process of container id: it
// writes the bundle's "oom" file, which outlives a restart of crid, and
// turns an exit already handled without that knowledge into OOMKilled.
func (m *Manager) recordOOM(ctx context.Context, id, bundle string) {
	f := filepath.Join(bundle, "oom")
	if fileExists(f) {
		return
	}
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		if !errors.Is(err, os.ErrNotExist) { // the bundle was removed
			log.G(ctx).Warn("record OOM kill", "containerid", id, "error", err)
		}
		return
	}
	log.G(ctx).Info("container cgroup counted an OOM kill", "containerid", id)
	c := m.lookup(id)
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	rec := c.rec.Load()
	if c.removed || rec.State != StateExited || rec.Reason == ReasonOOMKilled {
		return
	}
	n := rec.clone()
	n.Reason = ReasonOOMKilled
	m.setLocked(ctx, c, n)
}
