package sandbox

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// Options configure a Manager.
type Options struct {
	// StateDir holds one directory per sandbox (e.g. /run/crid/sandboxes).
	// It is created 0700 and made a private mount point.
	StateDir string
	// PauseCommand is the argv of a process that only sleeps and reaps
	// zombies, started as PID 1 of the pod's PID namespace when PID is POD.
	// Default: /proc/self/exe pause (cmd/crid calls PauseMain for it).
	PauseCommand []string
	// Network attaches pods that have their own network namespace to the
	// pod network. Nil: such pods have only their loopback interface.
	Network Network
}

// Manager creates, tracks and tears down sandboxes. Its methods are safe for
// concurrent use.
type Manager struct {
	stateDir string
	pause    []string
	network  Network

	// mu guards the fields below. Never held across a syscall.
	mu        sync.RWMutex
	sandboxes map[string]*entry // by ID; created sandboxes only (not in Run)
	names     map[string]*entry // by Metadata.Key(); includes sandboxes in Run
}

// entry is the store's handle on one sandbox.
type entry struct {
	// created is closed when Run's creation finished; createErr says how.
	// Both are set before the entry is shared and only read after
	// <-created.
	created   chan struct{}
	createErr error
	// kept: the creation failed but left the pod attached to the pod
	// network, so the entry is listed NotReady for Stop to retry the DEL.
	kept bool

	// mu is the lifecycle lock (Stop, Remove, WithReady). It guards the
	// fields below.
	mu      sync.Mutex
	removed bool
	pause   *pause // the pause process this Manager started; nil after recovery or when none

	// smu guards sb and serializes checkpoint writes. Leaf lock.
	smu sync.Mutex
	sb  Sandbox

	id  string // immutable copy of sb.ID, readable without smu
	dir string // immutable: <StateDir>/<id>
}

// New creates the state directory if needed and recovers the sandboxes
// recorded in it. It fails only when the state directory is unusable; a bad
// record is logged and marked NotReady or dropped.
func New(ctx context.Context, opts Options) (*Manager, error) {
	if opts.StateDir == "" || !filepath.IsAbs(opts.StateDir) {
		return nil, fmt.Errorf("sandbox state dir %q must be an absolute path: %w", opts.StateDir, errdefs.ErrInvalidArgument)
	}
	pause := opts.PauseCommand
	if len(pause) == 0 {
		pause = []string{"/proc/self/exe", "pause"}
	}
	m := &Manager{
		stateDir:  filepath.Clean(opts.StateDir),
		pause:     cloneSlice(pause),
		network:   opts.Network,
		sandboxes: map[string]*entry{},
		names:     map[string]*entry{},
	}
	if err := os.MkdirAll(m.stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create sandbox state dir: %w", err)
	}
	if err := os.Chmod(m.stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("chmod sandbox state dir: %w", err)
	}
	if err := makePrivateMount(m.stateDir); err != nil {
		return nil, fmt.Errorf("make sandbox state dir a private mount: %w", err)
	}
	if err := m.recover(ctx); err != nil {
		return nil, err
	}
	return m, nil
}

// Close undoes New's private bind mount of the state directory when no
// sandbox has anything mounted below it and none is being created, so that
// a crid that exits without pods (or fails to start after New) leaves no
// mount behind. With pods it stays: their pinned namespaces live below it
// and the next crid recovers them. Call it when no more requests come.
func (m *Manager) Close() error {
	m.mu.RLock()
	for _, e := range m.names {
		select {
		case <-e.created:
		default:
			m.mu.RUnlock()
			return nil // a creation is in flight
		}
	}
	m.mu.RUnlock()
	below, err := mountPoints(func(p string) bool { return strings.HasPrefix(p, m.stateDir+"/") })
	if err != nil || len(below) > 0 {
		return err
	}
	if self, err := isSelfBind(m.stateDir); err != nil || !self {
		return err
	}
	if err := unix.Unmount(m.stateDir, unix.UMOUNT_NOFOLLOW); err != nil {
		return fmt.Errorf("unmount sandbox state dir %s: %w", m.stateDir, err)
	}
	return nil
}

// lookup resolves an ID or a unique ID prefix (crictl's short IDs, like
// containerd's truncindex). Unknown → ErrNotFound; ambiguous →
// ErrInvalidArgument.
func (m *Manager) lookup(idOrPrefix string) (*entry, error) {
	if idOrPrefix == "" {
		return nil, fmt.Errorf("empty sandbox id: %w", errdefs.ErrInvalidArgument)
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if e, ok := m.sandboxes[idOrPrefix]; ok {
		return e, nil
	}
	// A linear scan: a node has at most a few hundred sandboxes, and
	// exact IDs (what kubelet sends) take the map path above.
	var found *entry
	for id, e := range m.sandboxes {
		if len(id) >= len(idOrPrefix) && id[:len(idOrPrefix)] == idOrPrefix {
			if found != nil {
				return nil, fmt.Errorf("sandbox %s: %w: %w", idOrPrefix, errAmbiguous, errdefs.ErrInvalidArgument)
			}
			found = e
		}
	}
	if found == nil {
		return nil, fmt.Errorf("sandbox %s: %w", idOrPrefix, errdefs.ErrNotFound)
	}
	return found, nil
}

// Get returns a copy of the sandbox with this ID or unique ID prefix.
func (m *Manager) Get(idOrPrefix string) (*Sandbox, error) {
	e, err := m.lookup(idOrPrefix)
	if err != nil {
		return nil, err
	}
	return e.snapshot(), nil
}

func (e *entry) snapshot() *Sandbox {
	e.smu.Lock()
	defer e.smu.Unlock()
	return e.sb.clone()
}

func (e *entry) state() State {
	e.smu.Lock()
	defer e.smu.Unlock()
	return e.sb.State
}

// Filter selects sandboxes in List. Zero fields match everything.
type Filter struct {
	ID     string            // ID or ID prefix
	State  State             // exact state
	Labels map[string]string // every pair must be among the sandbox's labels
}

// List returns copies of the sandboxes that match f, in no particular
// order. Sandboxes still being created by Run are not listed.
func (m *Manager) List(f Filter) []*Sandbox {
	m.mu.RLock()
	entries := make([]*entry, 0, len(m.sandboxes))
	for id, e := range m.sandboxes {
		if f.ID == "" || len(id) >= len(f.ID) && id[:len(f.ID)] == f.ID {
			entries = append(entries, e)
		}
	}
	m.mu.RUnlock()
	out := make([]*Sandbox, 0, len(entries))
next:
	for _, e := range entries {
		sb := e.snapshot()
		if f.State != "" && sb.State != f.State {
			continue
		}
		for k, v := range f.Labels {
			if got, ok := sb.Config.Labels[k]; !ok || got != v {
				continue next
			}
		}
		out = append(out, sb)
	}
	return out
}

// Update lets server record what it learns after Run: fn gets a copy of the
// sandbox, and the changes it makes to IP, AdditionalIPs and Config.Extra
// are stored and checkpointed (a new IP is also written, with the
// hostname, to the pod's hosts file); changes to other fields are discarded. If fn
// returns an error nothing changes and the error is returned as is.
func (m *Manager) Update(idOrPrefix string, fn func(*Sandbox) error) error {
	e, err := m.lookup(idOrPrefix)
	if err != nil {
		return err
	}
	e.smu.Lock()
	defer e.smu.Unlock()
	cp := e.sb.clone()
	if err := fn(cp); err != nil {
		return err
	}
	next := e.sb
	next.IP = cp.IP
	next.AdditionalIPs = cloneSlice(cp.AdditionalIPs)
	next.Config.Extra = cloneMap(cp.Config.Extra)
	if next.IP != e.sb.IP {
		if err := rewriteHosts(&next); err != nil {
			return fmt.Errorf("update sandbox %s: %w", next.ID, err)
		}
	}
	if err := writeCheckpoint(e.dir, &next); err != nil {
		return fmt.Errorf("update sandbox %s: %w", next.ID, err)
	}
	e.sb = next
	return nil
}

// WithReady runs fn while the sandbox is Ready and cannot start stopping:
// server wraps container creation in it. It fails at once with
// ErrSandboxStopping or ErrSandboxNotReady (both FailedPrecondition)
// otherwise. fn runs under the sandbox's lifecycle lock, so it must not call
// Stop or Remove of the same sandbox; lock order is sandbox then container.
func (m *Manager) WithReady(ctx context.Context, idOrPrefix string, fn func(ctx context.Context, sb *Sandbox) error) error {
	e, err := m.lookup(idOrPrefix)
	if err != nil {
		return err
	}
	check := func() error {
		switch s := e.state(); s {
		case StateReady:
			return nil
		case StateStopping:
			return fmt.Errorf("sandbox %s: %w", e.id, ErrSandboxStopping)
		default:
			return fmt.Errorf("sandbox %s is %s: %w", e.id, s, ErrSandboxNotReady)
		}
	}
	// Checked before taking the lock too, so that a Stop in progress
	// (which holds it) refuses us at once instead of after its teardown.
	if err := check(); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.removed {
		return fmt.Errorf("sandbox %s: %w", e.id, errdefs.ErrNotFound)
	}
	if err := check(); err != nil {
		return err
	}
	return fn(ctx, e.snapshot())
}

// setState records a new state and checkpoints it (when persist).
// Precondition: e.mu held.
func (e *entry) setStateLocked(s State, persist bool) error {
	e.smu.Lock()
	defer e.smu.Unlock()
	next := e.sb
	next.State = s
	if persist {
		if err := writeCheckpoint(e.dir, &next); err != nil {
			// Keep the state in memory: the sandbox is what it is even if
			// the disk disagrees; recovery reconciles anyway.
			e.sb = next
			return err
		}
	}
	e.sb = next
	return nil
}
