package sandbox

import (
	"context"
	"errors"
	"fmt"

	"github.com/containerd/errdefs"

	"github.com/crid-dev/crid/internal/log"
	"github.com/crid-dev/crid/internal/mount"
)

// Stop releases what a Ready sandbox holds: it kills (and reaps) the pause
// process, detaches the pod from the pod network (while its network
// namespace still exists), unmounts the pod's /dev/shm and unpins its
// namespaces. The record stays, NotReady, with its paths, until Remove.
//
// Stop is idempotent: stopping a NotReady sandbox retries the teardown
// (every step is a no-op when its resource is gone). If a step fails the
// sandbox is NotReady anyway and the error is returned so that kubelet
// retries. An unknown ID is ErrNotFound (server answers OK).
func (m *Manager) Stop(ctx context.Context, idOrPrefix string) error {
	e, err := m.lookup(idOrPrefix)
	if err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.removed {
		return fmt.Errorf("sandbox %s: %w", e.id, errdefs.ErrNotFound)
	}
	return e.stopLocked(ctx, m)
}

// The pod network is torn down after the pause process is gone and before
// the network namespace is released; if that fails the namespace stays
// pinned for the retry.
// Precondition: e.mu held.
func (e *entry) stopLocked(ctx context.Context, m *Manager) error {
	if e.state() == StateReady {
		// Persisted before anything is torn down: a crash after the DEL
		// but before the namespaces are released (a pod without a pause
		// process looks intact then) recovers NotReady, not Ready with an
		// address IPAM may already have given to another pod.
		if err := e.setStateLocked(StateStopping, true /* persist */); err != nil {
			log.G(ctx).Warn("persisting Stopping state failed", "podsandboxid", e.id, "error", err)
		}
	}
	sb := e.snapshot()
	var errs []error
	if err := e.killPauseLocked(ctx, sb); err != nil {
		errs = append(errs, err)
	}
	persist := sb.State != StateNotReady
	release := *sb
	if err := m.teardownNetwork(ctx, sb); err != nil {
		errs = append(errs, fmt.Errorf("tear down pod network: %w", err))
		release.NetNSPath = "" // stays pinned for the retry of the teardown
	} else if sb.NetworkAttached && m.network != nil { // without a Network nothing was torn down
		e.smu.Lock()
		e.sb.NetworkAttached = false
		e.smu.Unlock()
		persist = true
	}
	if sb.ShmPath != hostShm {
		if err := mount.Unmount(sb.ShmPath); err != nil {
			errs = append(errs, fmt.Errorf("unmount shm: %w", err))
		}
	}
	if err := releaseNamespaces(&release); err != nil {
		errs = append(errs, fmt.Errorf("release namespaces: %w", err))
	}
	if persist {
		if err := e.setStateLocked(StateNotReady, true /* persist */); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("stop sandbox %s: %w", e.id, err)
	}
	return nil
}

// killPauseLocked kills the pause process, bounded by pauseWaitTimeout.
// Precondition: e.mu held.
func (e *entry) killPauseLocked(ctx context.Context, sb *Sandbox) error {
	if sb.PausePID == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pauseWaitTimeout)
	defer cancel()
	if e.pause != nil {
		return e.pause.kill(ctx)
	}
	return killRecovered(ctx, sb.PausePID, sb.PauseStartTime)
}
