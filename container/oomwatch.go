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
	// ParentOOMKills is OOMKills of the cgroup holding the container's (the
	// pod's), which outlives it.
	ParentOOMKills(cgroupsPath string) (uint64, error)
}

// oomWatcher watches the memory.events file of every running container on
// cgroup v2 and records an OOM kill (recordOOM) as soon as the counter
// moves. conmon watches the same file but stops at the container's exit,
// which can come before the kernel's notice; and under the systemd driver
// the scope, with its counter, is removed as soon as it is empty, so
// reading it at exit time is too late. The kernel rate-limits these
// notices (one per file per 10 ms) and drops a pending one when the cgroup
// is removed: what remains unseen then is left to conmon.
//
// The inotify instance is made on the first watch, so a cgroup v1 host
// (nothing to watch) spends none.
type oomWatcher struct {
	ctx     context.Context // of the event reader: the Manager's, not a request's
	counter OOMCounter
	// spawn runs f on a goroutine the Manager waits for at Close.
	spawn func(f func())
	// oom is called for a container whose counter is above zero; it must
	// not block.
	oom func(ctx context.Context, id, bundle string)

	mu     sync.Mutex
	file   *os.File // nil until the first watch
	closed bool
	byWD   map[int32]oomWatch
	byID   map[string]int32
	// parentKills is the parent cgroup's OOM kill count when the
	// container's own counter last changed (see parentCounted).
	parentKills map[string]uint64
}

type oomWatch struct {
	id, bundle, cgroupsPath string
}

func newOOMWatcher(ctx context.Context, counter OOMCounter, spawn func(func()), oom func(ctx context.Context, id, bundle string)) *oomWatcher {
	return &oomWatcher{ctx: context.WithoutCancel(ctx), counter: counter, spawn: spawn, oom: oom,
		byWD: map[int32]oomWatch{}, byID: map[string]int32{}, parentKills: map[string]uint64{}}
}

// add starts watching the container's cgroup, then reads the counter once:
// a kill before the watch (or while crid was down) is not missed. A
// hierarchy without an events file is not an error.
func (w *oomWatcher) add(ctx context.Context, id, bundle, cgroupsPath string) error {
	if cgroupsPath == "" {
		return nil
	}
	file, err := w.counter.OOMEventsFile(cgroupsPath)
	if err != nil || file == "" {
		return err
	}
	w.mu.Lock()
	err = w.addLocked(file, oomWatch{id: id, bundle: bundle, cgroupsPath: cgroupsPath})
	w.mu.Unlock()
	if err != nil {
		return err
	}
	w.check(ctx, oomWatch{id: id, bundle: bundle, cgroupsPath: cgroupsPath}, true)
	return nil
}

func (w *oomWatcher) addLocked(file string, watch oomWatch) error {
	if w.closed {
		return errors.New("oom watcher closed")
	}
	if w.file == nil {
		fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
		if err != nil {
			return fmt.Errorf("oom watcher: %w", err)
		}
		// A non-blocking fd makes a pollable File: Close unblocks Read.
		f := os.NewFile(uintptr(fd), "inotify:oom")
		w.file = f
		w.spawn(func() { w.run(w.ctx, f) })
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
	if errors.Is(addErr, unix.ENOENT) {
		return fmt.Errorf("watch %s: %w", file, errdefs.ErrNotFound) // the cgroup is gone
	}
	if addErr != nil {
		return fmt.Errorf("watch %s: %w", file, addErr)
	}
	w.byWD[int32(wd)] = watch
	w.byID[watch.id] = int32(wd)
	return nil
}

// remove stops watching the container's cgroup, if it was watched.
func (w *oomWatcher) remove(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.parentKills, id)
	wd, ok := w.byID[id]
	if !ok {
		return
	}
	delete(w.byID, id)
	delete(w.byWD, wd)
	if sc, err := w.file.SyscallConn(); err == nil {
		// EINVAL: the kernel dropped the watch with the cgroup already.
		_ = sc.Control(func(fd uintptr) { _, _ = unix.InotifyRmWatch(int(fd), uint32(wd)) })
	}
}

// check reads the container's counter and reports a kill. While the
// container's own count is 0 it also notes its parent's (baseline): the
// kernel sends these notices at most every 10 ms and drops a deferred one
// when the cgroup is removed, which systemd does as soon as an OOM-killed
// container's scope is empty; the parent's count then still tells
// (parentCounted). The baseline is taken when the watch is added and
// moved forward with each notice (notes).
func (w *oomWatcher) check(ctx context.Context, watch oomWatch, notes bool) {
	kills, err := w.counter.OOMKills(watch.cgroupsPath)
	if err != nil {
		if !errdefs.IsNotFound(err) {
			log.G(ctx).Warn("read OOM kills of container cgroup", "containerid", watch.id, "error", err)
		}
		return
	}
	if kills > 0 {
		w.oom(ctx, watch.id, watch.bundle)
		return
	}
	if notes {
		// Read after the container's own 0: a kill the parent counted
		// after this is not in the baseline.
		if n, err := w.counter.ParentOOMKills(watch.cgroupsPath); err == nil {
			w.mu.Lock()
			w.parentKills[watch.id] = n
			w.mu.Unlock()
		}
	}
}

// run reads events from f until it is closed.
func (w *oomWatcher) run(ctx context.Context, f *os.File) {
	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	for {
		n, err := f.Read(buf)
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				log.G(ctx).Error("oom watcher stopped", "error", err)
			}
			return
		}
		var due []oomWatch
		w.mu.Lock()
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafePointer(buf[off:]))
			off += unix.SizeofInotifyEvent + int(ev.Len)
			if ev.Mask&unix.IN_Q_OVERFLOW != 0 { // events were lost: look at every counter
				for _, watch := range w.byWD {
					due = append(due, watch)
				}
				continue
			}
			watch, ok := w.byWD[ev.Wd]
			if !ok {
				continue
			}
			if ev.Mask&unix.IN_IGNORED != 0 { // the cgroup is gone
				delete(w.byWD, ev.Wd)
				if w.byID[watch.id] == ev.Wd {
					delete(w.byID, watch.id)
				}
				continue
			}
			if ev.Mask&unix.IN_MODIFY != 0 {
				due = append(due, watch)
			}
		}
		w.mu.Unlock()
		for _, watch := range due {
			w.check(ctx, watch, true)
		}
	}
}

// parentCounted reports whether the parent cgroup counted an OOM kill
// since the baseline (the last time the container's own count was seen at
// 0): for a container that died of SIGKILL with its cgroup already gone,
// that kill was its own unless a sibling in the same parent was OOM-killed
// in that window.
func (w *oomWatcher) parentCounted(id, cgroupsPath string) bool {
	w.mu.Lock()
	before, ok := w.parentKills[id]
	w.mu.Unlock()
	if !ok {
		return false // no notice ever came: no window to compare
	}
	now, err := w.counter.ParentOOMKills(cgroupsPath)
	return err == nil && now > before
}

func (w *oomWatcher) close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	if w.file == nil {
		return nil
	}
	return w.file.Close()
}

// recordOOM notes that the kernel OOM-killed a process of container id: it
// writes the bundle's "oom" file (conmon's witness, which handleExitLocked
// reads and which outlives a restart of crid) and, on a goroutine of its
// own so that a container busy stopping holds up no other, turns an exit
// already handled without that knowledge into OOMKilled.
func (m *Manager) recordOOM(ctx context.Context, id, bundle string) {
	f := filepath.Join(bundle, "oom")
	if !fileExists(f) {
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			if !errors.Is(err, os.ErrNotExist) { // else the bundle was removed
				log.G(ctx).Warn("record OOM kill", "containerid", id, "error", err)
			}
			return
		}
		log.G(ctx).Info("container cgroup counted an OOM kill", "containerid", id)
	}
	c := m.lookup(id)
	if c == nil {
		return
	}
	if rec := c.rec.Load(); rec.State == StateExited && rec.Reason == ReasonOOMKilled {
		return
	}
	if !c.oomPending.CompareAndSwap(false, true) {
		return // one correction at a time per container: it reads the latest record
	}
	m.spawn(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.oomPending.Store(false)
		// Under c.mu: an exit not handled yet will see the file.
		m.markOOMKilledLocked(ctx, c)
	})
}

// oomKilledAtExit is the OOM verdict on an exit being handled: conmon's
// or the watcher's "oom" file, the container's own cgroup counter (gone
// already when systemd removed the scope), or, for a SIGKILL, the parent
// cgroup's count since the watcher's baseline.
func (m *Manager) oomKilledAtExit(ctx context.Context, rec *Record, code int32) bool {
	if fileExists(filepath.Join(rec.Bundle, "oom")) {
		return true
	}
	if m.oom == nil || rec.CgroupsPath == "" {
		return false
	}
	n, err := m.oom.OOMKills(rec.CgroupsPath)
	switch {
	case err == nil && n > 0:
		return true
	case err != nil && !errdefs.IsNotFound(err):
		log.G(ctx).Warn("read OOM kills of container cgroup", "containerid", rec.ID, "cgroup", rec.CgroupsPath, "error", err)
	}
	return code == 128+int32(unix.SIGKILL) && m.oomWatch != nil && m.oomWatch.parentCounted(rec.ID, rec.CgroupsPath)
}

// markOOMKilledLocked makes an Exited container's reason OOMKilled.
// Precondition: c.mu held.
func (m *Manager) markOOMKilledLocked(ctx context.Context, c *Container) {
	rec := c.rec.Load()
	if c.removed || rec.State != StateExited || rec.Reason == ReasonOOMKilled {
		return
	}
	n := rec.clone()
	n.Reason = ReasonOOMKilled
	m.setLocked(ctx, c, n)
}
