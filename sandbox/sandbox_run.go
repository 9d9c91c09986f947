package sandbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/crid-dev/crid/internal/cleanup"
	"github.com/crid-dev/crid/internal/log"
	"github.com/crid-dev/crid/internal/mount"
)

// createTimeout bounds a creation that continues after its caller's
// context ended (kubelet gives RunPodSandbox 4 minutes, then retries).
const createTimeout = 4 * time.Minute

// Run creates a sandbox and returns it Ready. It is idempotent for the same
// Metadata.Key() (kubelet retries with the same name and attempt):
//
//   - a Ready holder of the name is returned as is;
//   - a holder still being created is waited for (bounded by ctx), then
//     returned, or its failure is retried;
//   - a holder that is not Ready yields a *ReservedError (FailedPrecondition).
//
// Creation runs on a context detached from ctx: if ctx ends first, Run
// returns ctx's error, the creation finishes (or rolls back completely)
// on its own, and the retry gets its result. Invalid configs fail with
// ErrInvalidArgument before anything is created.
func (m *Manager) Run(ctx context.Context, cfg Config) (*Sandbox, error) {
	cfg = cfg.clone() // the caller may reuse its maps
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	key := cfg.Metadata.Key()
	for {
		e, mine, err := m.reserve(key)
		if err != nil {
			return nil, err
		}
		if mine {
			go m.create(context.WithoutCancel(ctx), e, cfg)
		}
		select {
		case <-e.created:
		case <-ctx.Done():
			return nil, fmt.Errorf("run sandbox %s: %w", key, ctx.Err())
		}
		if e.createErr != nil {
			if mine {
				return nil, e.createErr
			}
			continue // the other creation failed and released the name: try ours
		}
		sb := e.snapshot()
		if sb.State == StateReady {
			return sb, nil
		}
		m.mu.RLock()
		holder := m.names[key]
		m.mu.RUnlock()
		if holder != e {
			continue // removed meanwhile: the name is free or held by another
		}
		return nil, &ReservedError{Name: key, ID: sb.ID}
	}
}

// reserve returns the entry holding key, creating it (mine) if none does.
func (m *Manager) reserve(key string) (e *entry, mine bool, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.names[key]; ok {
		return e, false, nil
	}
	var id string
	for {
		if id, err = newID(); err != nil {
			return nil, false, err
		}
		if _, taken := m.sandboxes[id]; !taken {
			break
		}
	}
	e = &entry{created: make(chan struct{}), id: id, dir: filepath.Join(m.stateDir, id)}
	m.names[key] = e
	return e, true, nil
}

func newID() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate sandbox id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// create builds the sandbox, publishes it on success, and in every case
// sets e.createErr and closes e.created. It runs on its own goroutine so
// that it completes when Run's caller gives up.
func (m *Manager) create(ctx context.Context, e *entry, cfg Config) {
	ctx, cancel := context.WithTimeout(ctx, createTimeout)
	defer cancel()
	key := cfg.Metadata.Key()
	err := m.build(ctx, e, cfg)
	m.mu.Lock()
	if err != nil {
		e.createErr = fmt.Errorf("run sandbox %s: %w", key, err)
		delete(m.names, key)
		if e.kept {
			// Listed NotReady (not holding the name: a retry creates anew)
			// so that kubelet's GC stops and removes it.
			m.sandboxes[e.id] = e
		}
	} else {
		m.sandboxes[e.id] = e
	}
	m.mu.Unlock()
	close(e.created)
}

// build acquires everything a Ready sandbox holds, releasing it all if a
// step fails. Precondition: e is reserved and not yet visible to Get.
func (m *Manager) build(ctx context.Context, e *entry, cfg Config) error {
	// kept is set when the rollback could not detach the pod from the pod
	// network: the plugins may hold an address that nothing else would
	// ever free (libcni caches only attachments that completed, so GC does
	// not know it). The sandbox then stays, NotReady with its network
	// namespace pinned and NetworkAttached, for Stop and Remove (kubelet's
	// sandbox GC) to retry the DEL. Runs after cu's rollback.
	var kept *Sandbox
	defer func() {
		if kept != nil {
			e.keepFailed(ctx, kept)
		}
	}()
	cu := cleanup.New(ctx)
	defer cu.Run()

	sysctls, err := sortedSysctls(cfg)
	if err != nil {
		return err
	}
	hostname, err := cfg.podHostname(os.Hostname)
	if err != nil {
		return err
	}
	sb := &Sandbox{
		ID:             e.id,
		Config:         cfg,
		State:          StateCreated,
		CreatedAt:      time.Now().UTC(),
		Hostname:       hostname,
		HostnamePath:   filepath.Join(e.dir, "hostname"),
		HostsPath:      filepath.Join(e.dir, "hosts"),
		ResolvConfPath: filepath.Join(e.dir, "resolv.conf"),
		ShmPath:        hostShm,
	}
	ns := cfg.Namespaces
	if ns.Network.isPod() {
		sb.NetNSPath = filepath.Join(e.dir, "netns")
		sb.UTSNSPath = filepath.Join(e.dir, "utsns")
	}
	if ns.IPC.isPod() {
		sb.IPCNSPath = filepath.Join(e.dir, "ipcns")
		sb.ShmPath = filepath.Join(e.dir, "shm")
	}

	if err := os.Mkdir(e.dir, 0o700); err != nil {
		return fmt.Errorf("create sandbox dir: %w", err)
	}
	cu.Add("remove sandbox dir "+e.dir, func(context.Context) error {
		if kept != nil {
			return nil
		}
		return removeDir(e.dir)
	})
	// Recorded first, as Created, so that a crash from here on leaves a
	// record that recovery rolls back.
	if err := writeCheckpoint(e.dir, sb); err != nil {
		return err
	}
	if err := writeFiles(sb); err != nil {
		return err
	}
	if ns.IPC.isPod() {
		cu.Add("unmount shm", func(context.Context) error {
			if kept != nil {
				return nil // Stop unmounts it
			}
			return mount.Unmount(sb.ShmPath)
		})
		if err := mountShm(sb.ShmPath); err != nil {
			return err
		}
	}
	cu.Add("release namespaces", func(context.Context) error {
		if kept != nil {
			return nil // the netns stays pinned for the DEL that Stop retries
		}
		return releaseNamespaces(sb)
	})
	err = createNamespaces(nsSetup{
		net: sb.NetNSPath != "", ipc: sb.IPCNSPath != "", uts: sb.UTSNSPath != "",
		netPath: sb.NetNSPath, ipcPath: sb.IPCNSPath, utsPath: sb.UTSNSPath,
		hostname: hostname, sysctls: sysctls,
	})
	if err != nil {
		return fmt.Errorf("create namespaces: %w", err)
	}
	if ns.PID.isPod() {
		p, err := startPause(m.pause)
		if err != nil {
			return err
		}
		cu.Add("kill pause process", p.kill)
		e.pause = p // e is not shared yet: no lock needed
		sb.PausePID, sb.PauseStartTime = p.pid, p.startTime
		sb.PIDNSPath = fmt.Sprintf("/proc/%d/ns/pid", p.pid)
	}
	if sb.NetNSPath != "" && m.network != nil {
		if err := m.setupNetwork(ctx, cu, e.dir, sb, func() { kept = sb }); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("create sandbox: %w", err)
	}
	sb.State = StateReady
	if err := writeCheckpoint(e.dir, sb); err != nil {
		return err
	}
	e.sb = *sb
	cu.Release()
	return nil
}

// setupNetwork attaches sb to the pod network and records its IPs. The
// record says "attached" on disk before the plugins run, so a crash
// during the attachment is undone by recovery. A failure from here on is
// rolled back with a DEL, also when the ADD itself failed (a chain that
// failed half-way may hold an address); if that DEL fails, keep is called.
func (m *Manager) setupNetwork(ctx context.Context, cu *cleanup.Cleanup, dir string, sb *Sandbox, keep func()) error {
	sb.NetworkAttached = true
	if err := writeCheckpoint(dir, sb); err != nil {
		return err
	}
	cu.Add("tear down pod network", func(ctx context.Context) error {
		if err := m.teardownNetwork(ctx, sb); err != nil {
			keep()
			return err
		}
		return nil
	})
	ips, err := m.network.Setup(ctx, sb.clone())
	if err != nil {
		return fmt.Errorf("set up pod network: %w", err)
	}
	if len(ips) == 0 {
		return errors.New("pod network gave the pod no IP")
	}
	sb.IP, sb.AdditionalIPs = ips[0], cloneSlice(ips[1:])
	if err := rewriteHosts(sb); err != nil {
		return err
	}
	return nil
}

// sortedSysctls validates cfg's sysctls (again: cheap) and orders them, so
// that application is deterministic.
func sortedSysctls(cfg Config) ([]sysctl, error) {
	out := make([]sysctl, 0, len(cfg.Sysctls))
	for k, v := range cfg.Sysctls {
		s, err := validateSysctl(k, v, cfg.Namespaces)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out, nil
}

func releaseNamespaces(sb *Sandbox) error {
	var errs []error
	for _, p := range []string{sb.NetNSPath, sb.IPCNSPath, sb.UTSNSPath} {
		errs = append(errs, releaseNamespace(p))
	}
	return errors.Join(errs...)
}

// removeDir unmounts whatever is left below dir, renames it aside (so a
// crash mid-delete leaves no half sandbox that looks whole) and deletes it.
func removeDir(dir string) error {
	if err := unmountUnder(dir); err != nil {
		return err
	}
	gone := filepath.Join(filepath.Dir(dir), removingPrefix+filepath.Base(dir))
	if err := os.Rename(dir, gone); err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("rename sandbox dir aside: %w", err)
		}
		// Renamed by an earlier attempt whose delete failed: finish it.
		if err := unmountUnder(gone); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(gone); err != nil {
		return fmt.Errorf("remove sandbox dir: %w", err)
	}
	return nil
}

const removingPrefix = ".removing-"

// keepFailed records a sandbox whose creation failed with the pod still
// attached to the pod network (build's rollback could not DEL it): NotReady,
// NetworkAttached. Precondition: e is not shared yet.
func (e *entry) keepFailed(ctx context.Context, sb *Sandbox) {
	log.G(ctx).Warn("sandbox creation failed and its network could not be detached: kept NotReady, Stop and Remove retry",
		"podsandboxid", e.id)
	keepForTeardown(ctx, e.dir, sb)
	e.pause = nil
	e.sb = *sb
	e.kept = true
}

// keepForTeardown records an unfinished sandbox whose pod network could
// not be detached (its pause process is killed already) as NotReady and
// attached: Stop and Remove then retry the DEL.
func keepForTeardown(ctx context.Context, dir string, sb *Sandbox) {
	sb.State = StateNotReady
	sb.NetworkAttached = true
	sb.PausePID, sb.PauseStartTime, sb.PIDNSPath = 0, 0, ""
	if err := writeCheckpoint(dir, sb); err != nil {
		log.G(ctx).Warn("persist sandbox kept for a network teardown retry", "podsandboxid", sb.ID, "error", err)
	}
}
