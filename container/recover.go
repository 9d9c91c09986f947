package container

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/errdefs"

	"github.com/crid-dev/crid/internal/log"
)

// recover loads every bundle under the state dir and reconciles it:
//
//   - exit file present             → Exited, with its code and time
//   - monitor alive (pid and start) → stays Created or Running
//   - neither                       → Unknown (Stop and Remove still work)
//   - unreadable checkpoint         → Unknown, with the error as message
//   - bundle without checkpoint     → a crash during Create: undone
//   - .removing- dir                → a crash during Remove: finished
//
// It never fails: problems are logged and degrade one container.
func (m *Manager) recover(ctx context.Context) (exited []Record) {
	entries, err := os.ReadDir(m.stateDir)
	if err != nil {
		log.G(ctx).Error("list container state dir", "dir", m.stateDir, "error", err)
		return nil
	}
	for _, e := range entries {
		name := e.Name()
		p := filepath.Join(m.stateDir, name)
		switch {
		case !e.IsDir() || name == "exits" || name == "sockets":
		case strings.HasPrefix(name, removingPrefix):
			if err := removeBundle(p); err != nil {
				log.G(ctx).Warn("finish removing container bundle", "dir", p, "error", err)
			}
		case validID(name):
			if r := m.recoverOne(ctx, name, p); r != nil {
				exited = append(exited, *r)
			}
		}
	}
	return exited
}

// recoverOne loads one bundle and returns its record when it was found to
// have exited since crid last looked.
func (m *Manager) recoverOne(ctx context.Context, id, bundle string) (exited *Record) {
	rec, err := readCheckpoint(bundle)
	if errdefs.IsNotFound(err) {
		m.undoCreate(ctx, id, bundle)
		return nil
	}
	if err != nil {
		log.G(ctx).Warn("load container record", "containerid", id, "error", err)
		rec = &Record{ID: id, Bundle: bundle, State: StateUnknown, Message: err.Error(), Runtime: m.defaultRuntime}
	}
	rec.Bundle = bundle // the state dir may have moved
	rt, ok := m.runtimes[rec.Runtime]
	if !ok {
		rt = m.runtimes[m.defaultRuntime]
		if rec.State != StateExited {
			rec.State = StateUnknown
			rec.Message = "runtime handler " + rec.Runtime + " is not configured"
		}
	}
	c := &Container{rt: rt, exited: make(chan struct{})}
	if rec.Name != "" {
		c.key = nameKey(rec.Name, rec.SandboxID, rec.Attempt)
	}
	c.rec.Store(rec)
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case rec.State == StateExited:
		close(c.exited)
		// An OOM noticed after the exit was handled, by a crid that
		// stopped before it corrected the record.
		if fileExists(filepath.Join(bundle, "oom")) {
			m.markOOMKilledLocked(ctx, c)
		}
	case m.handleExitLocked(ctx, c):
		exited = c.rec.Load().clone()
	case rec.State != StateUnknown:
		m.reconcileLocked(ctx, c)
	}
	m.mu.Lock()
	m.containers[id] = c
	if c.key != "" {
		done := make(chan struct{})
		close(done)
		m.names[c.key] = &reservation{done: done, id: id}
	}
	m.mu.Unlock()
	return exited
}

// reconcileLocked checks a Created or Running container without an exit
// file against its monitor and the runtime.
// Precondition: c.mu held.
func (m *Manager) reconcileLocked(ctx context.Context, c *Container) {
	rec := c.rec.Load()
	if !processAlive(rec.ConmonPid, rec.ConmonStart) || rec.ConmonPid == 0 {
		// The exit file may land just as the monitor goes.
		if m.handleExitLocked(ctx, c) {
			return
		}
		n := rec.clone()
		n.State = StateUnknown
		n.Message = "container monitor is gone and left no exit file"
		m.setLocked(ctx, c, n)
		return
	}
	if rec.State != StateCreated {
		return
	}
	// crid may have died between `runtime start` and its checkpoint.
	st, err := c.rt.State(ctx, rec.ID)
	if err == nil && st.Status == "running" {
		n := rec.clone()
		n.State = StateRunning
		n.StartedAt = time.Now()
		m.setLocked(ctx, c, n)
	}
}

// undoCreate removes a bundle that never got its checkpoint: crid died in
// the middle of Create.
func (m *Manager) undoCreate(ctx context.Context, id, bundle string) {
	killConmon(bundle, id, 0, 0)
	for name, rt := range m.runtimes {
		if err := rt.Delete(ctx, id, true /* force */); err != nil {
			log.G(ctx).Warn("delete runtime state of half-created container", "containerid", id, "runtime", name, "error", err)
		}
	}
	if err := removeBundle(bundle); err != nil {
		log.G(ctx).Warn("remove bundle of half-created container", "containerid", id, "error", err)
	}
	if err := m.removeLeftovers(id); err != nil {
		log.G(ctx).Warn("remove leftovers of half-created container", "containerid", id, "error", err)
	}
}
