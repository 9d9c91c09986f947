package sandbox

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
)

// Remove stops the sandbox if needed, then deletes every mount and file it
// has and forgets it, releasing its name. It is idempotent: an unknown or
// already removed ID is ErrNotFound (server answers OK). If deleting fails
// the sandbox stays, NotReady, for kubelet's retry.
//
// Containers are not this package's business: server removes the pod's
// containers first.
func (m *Manager) Remove(ctx context.Context, idOrPrefix string) error {
	e, err := m.lookup(idOrPrefix)
	if err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.removed {
		return fmt.Errorf("sandbox %s: %w", e.id, errdefs.ErrNotFound)
	}
	// Always, not only when Ready: it is cheap when done, and it finishes
	// a Stop that failed half-way (a pause process removeDir cannot see).
	if err := e.stopLocked(ctx, m); err != nil {
		return fmt.Errorf("remove sandbox %s: %w", e.id, err)
	}
	if err := removeDir(e.dir); err != nil {
		return fmt.Errorf("remove sandbox %s: %w", e.id, err)
	}
	e.removed = true
	key := e.snapshot().Config.Metadata.Key()
	m.mu.Lock()
	delete(m.sandboxes, e.id)
	if m.names[key] == e {
		delete(m.names, key)
	}
	m.mu.Unlock()
	return nil
}
