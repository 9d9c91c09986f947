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
	} else {
		m.sandboxes[e.id] = e
	}
	m.mu.Unlock()
	close(e.created)
}

// build acquires everything a Ready sandbox holds, releasing it all if a
// step fails. Precondition: e is reserved and not yet visible to Get.
func (m *Manager) build(ctx context.Context, e *entry, cfg Config) error {
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
	cu.Add("remove sandbox dir "+e.dir, func(context.Context) error { return removeDir(e.dir) })
	// Recorded first, as Created, so that a crash from here on leaves a
	// record that recovery rolls back.
	if err := writeCheckpoint(e.dir, sb); err != nil {
		return err
	}
	if err := writeFiles(sb); err != nil {
		return err
	}
	if ns.IPC.isPod() {
		cu.Add("unmount shm", func(context.Context) error { return mount.Unmount(sb.ShmPath) })
		if err := mountShm(sb.ShmPath); err != nil {
			return err
		}
	}
	cu.Add("release namespaces", func(context.Context) error { return releaseNamespaces(sb) })
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
		if err := m.setupNetwork(ctx, cu, e.dir, sb); err != nil {
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
// during the attachment is undone by recovery.
func (m *Manager) setupNetwork(ctx context.Context, cu *cleanup.Cleanup, dir string, sb *Sandbox) error {
	sb.NetworkAttached = true
	if err := writeCheckpoint(dir, sb); err != nil {
		return err
	}
	ips, err := m.network.Setup(ctx, sb.clone())
	if err != nil {
		return fmt.Errorf("set up pod network: %w", err)
	}
	cu.Add("tear down pod network", func(ctx context.Context) error { return m.teardownNetwork(ctx, sb) })
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
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("rename sandbox dir aside: %w", err)
	}
	if err := os.RemoveAll(gone); err != nil {
		return fmt.Errorf("remove sandbox dir: %w", err)
	}
	return nil
}

const removingPrefix = ".removing-"
