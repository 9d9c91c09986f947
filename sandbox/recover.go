package sandbox

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/crid-dev/crid/internal/log"
)

// recover loads every sandbox recorded under the state dir and reconciles
// it with the machine. It fails only if the state dir cannot be read;
// each bad record is logged and dropped or marked NotReady:
//
//   - .removing-* directories (a Remove that crashed) are finished;
//   - a directory without a readable v1 checkpoint, or whose ID does not
//     match its name, is unmounted and deleted (Run writes the checkpoint
//     first, so this is a crash before it did, or garbage);
//   - a Created record is a Run that never finished: its pause process is
//     killed, its pod network torn down, and it is deleted;
//   - a Ready record whose pinned namespaces, shm or pause process are gone
//     becomes NotReady (persisted); Stopping becomes NotReady too.
//
// Names are re-reserved; if two records claim one (cannot happen unless
// the state dir was edited), the Ready one wins and the other keeps
// existing without the name, so kubelet can still remove it by ID.
func (m *Manager) recover(ctx context.Context) error {
	ents, err := os.ReadDir(m.stateDir)
	if err != nil {
		return fmt.Errorf("read sandbox state dir: %w", err)
	}
	for _, de := range ents {
		name := de.Name()
		dir := filepath.Join(m.stateDir, name)
		if strings.HasPrefix(name, removingPrefix) {
			if err := unmountUnder(dir); err == nil {
				err = os.RemoveAll(dir)
			}
			if err != nil {
				log.G(ctx).Warn("finishing removal of sandbox dir failed", "dir", dir, "error", err)
			}
			continue
		}
		if !de.IsDir() {
			continue
		}
		m.recoverOne(ctx, dir)
	}
	return nil
}

func (m *Manager) recoverOne(ctx context.Context, dir string) {
	id := filepath.Base(dir)
	sb, err := readCheckpoint(dir)
	if err == nil && sb.ID != id {
		err = fmt.Errorf("checkpoint of %s names sandbox %s", id, sb.ID)
	}
	if err == nil && sb.State == StateCreated {
		if sb.PausePID != 0 {
			if kerr := killRecovered(ctx, sb.PausePID, sb.PauseStartTime); kerr != nil {
				log.G(ctx).Warn("killing pause process of unfinished sandbox failed", "podsandboxid", id, "error", kerr)
			}
		}
		if nerr := m.teardownNetwork(ctx, sb); nerr != nil {
			// libcni caches only completed ADDs, so no GC would find what
			// an interrupted one holds: keep the sandbox, NotReady and
			// attached with its netns pinned, for Stop and Remove to retry
			// the DEL (as Run does when its rollback cannot detach).
			log.G(ctx).Warn("tearing down the network of an unfinished sandbox failed: kept NotReady, Stop and Remove retry",
				"podsandboxid", id, "error", nerr)
			keepForTeardown(ctx, dir, sb)
		} else {
			err = fmt.Errorf("sandbox creation never finished")
		}
	}
	if err != nil {
		log.G(ctx).Warn("dropping sandbox record", "podsandboxid", id, "error", err)
		if rerr := removeDir(dir); rerr != nil {
			log.G(ctx).Warn("removing dropped sandbox dir failed", "podsandboxid", id, "error", rerr)
		}
		return
	}
	// atomicfile leftovers of a crash mid-write.
	if tmps, _ := filepath.Glob(filepath.Join(dir, ".tmp-*")); len(tmps) > 0 {
		for _, t := range tmps {
			_ = os.Remove(t) // best effort: a stray temp file harms nobody
		}
	}
	e := &entry{created: make(chan struct{}), id: id, dir: dir, sb: *sb}
	close(e.created)
	if sb.State != StateNotReady {
		if why := lostResource(sb); why != "" || sb.State != StateReady {
			if why == "" {
				why = "was " + string(sb.State)
			}
			e.sb.State = StateNotReady
			if err := writeCheckpoint(dir, &e.sb); err != nil {
				log.G(ctx).Warn("persisting NotReady state failed", "podsandboxid", id, "error", err)
			}
			log.G(ctx).Info("recovered sandbox is not ready", "podsandboxid", id, "reason", why)
		}
	}
	key := sb.Config.Metadata.Key()
	m.sandboxes[id] = e
	if old, ok := m.names[key]; !ok || old.sb.State != StateReady {
		m.names[key] = e
	}
}

// lostResource names the first resource of a Ready sandbox that is gone,
// or returns "".
func lostResource(sb *Sandbox) string {
	for _, p := range []string{sb.NetNSPath, sb.IPCNSPath, sb.UTSNSPath} {
		if p != "" && !isPinned(p) {
			return "namespace " + filepath.Base(p) + " is not pinned"
		}
	}
	if sb.ShmPath != hostShm {
		if mp, err := isMountPoint(sb.ShmPath); err != nil || !mp {
			return "shm is not mounted"
		}
	}
	if sb.PausePID != 0 && !pauseAlive(sb.PausePID, sb.PauseStartTime) {
		return fmt.Sprintf("pause process %d is gone", sb.PausePID)
	}
	return ""
}
