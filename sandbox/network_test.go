package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var (
	errSetup    = errors.New("fake network: setup failed")
	errTeardown = errors.New("fake network: teardown failed")
)

// ctxKey marks the request context, to see whether a Network call got it.
type ctxKey struct{}

// netCall is one call of a fakeNetwork and what the fake saw while it ran.
type netCall struct {
	sb          *Sandbox // what the Network was given
	netnsPinned bool     // sb.NetNSPath was a pinned nsfs mount
	pauseAlive  bool     // the pause process ran (false when there is none)
	record      *Sandbox // the checkpoint on disk; nil if unreadable
	ctxErr      error
	deadline    time.Time // zero: none
	value       any       // ctx.Value(ctxKey{})
}

// fakeNetwork is a Network that records its calls and fails on demand.
type fakeNetwork struct {
	mu            sync.Mutex
	ips           []string
	setupFails    int // the next this many Setups fail
	teardownFails int // the next this many Teardowns fail
	setups        []netCall
	teardowns     []netCall
	// duringSetup runs inside Setup (on Run's creation goroutine).
	duringSetup func(sb *Sandbox)
}

var _ Network = (*fakeNetwork)(nil)

func newFakeNetwork() *fakeNetwork {
	return &fakeNetwork{ips: []string{"10.9.0.5", "fd00::5"}}
}

func observe(ctx context.Context, sb *Sandbox) netCall {
	c := netCall{
		sb:          sb.clone(),
		netnsPinned: isPinned(sb.NetNSPath),
		ctxErr:      ctx.Err(),
		value:       ctx.Value(ctxKey{}),
	}
	c.deadline, _ = ctx.Deadline()
	if sb.PausePID != 0 {
		c.pauseAlive = pauseAlive(sb.PausePID, sb.PauseStartTime)
	}
	c.record, _ = readCheckpoint(filepath.Dir(sb.HostsPath))
	return c
}

func (f *fakeNetwork) Setup(ctx context.Context, sb *Sandbox) ([]string, error) {
	c := observe(ctx, sb)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.setups = append(f.setups, c)
	if f.duringSetup != nil {
		f.duringSetup(sb)
	}
	if f.setupFails > 0 {
		f.setupFails--
		return nil, errSetup
	}
	return cloneSlice(f.ips), nil
}

func (f *fakeNetwork) Teardown(ctx context.Context, sb *Sandbox) error {
	c := observe(ctx, sb)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.teardowns = append(f.teardowns, c)
	if f.teardownFails > 0 {
		f.teardownFails--
		return errTeardown
	}
	return nil
}

func (f *fakeNetwork) failSetup(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.setupFails = n
}

func (f *fakeNetwork) failTeardown(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.teardownFails = n
}

// calls returns copies of the calls so far.
func (f *fakeNetwork) calls() (setups, teardowns []netCall) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]netCall(nil), f.setups...), append([]netCall(nil), f.teardowns...)
}

// newNetManager is newManager with a fakeNetwork attached.
func newNetManager(t *testing.T) (*Manager, string, *fakeNetwork) {
	t.Helper()
	m, stateDir := newManager(t)
	fn := newFakeNetwork()
	m.network = fn // what Options.Network sets; no request has run yet
	return m, stateDir, fn
}

// newNetManagerOn is a crid restart on stateDir with a new fakeNetwork.
func newNetManagerOn(t *testing.T, stateDir string) (*Manager, *fakeNetwork) {
	t.Helper()
	fn := newFakeNetwork()
	m, err := New(context.Background(), Options{StateDir: stateDir, PauseCommand: []string{"/proc/self/exe"}, Network: fn})
	require.NoError(t, err)
	return m, fn
}

func requireStateDirEmpty(t *testing.T, stateDir string) {
	t.Helper()
	require.Empty(t, mountsUnder(t, stateDir))
	entries, err := os.ReadDir(stateDir)
	require.NoError(t, err)
	require.Empty(t, entries)
}

func record(t *testing.T, stateDir, id string) *Sandbox {
	t.Helper()
	rec, err := readCheckpoint(filepath.Join(stateDir, id))
	require.NoError(t, err)
	return rec
}

// TestNetworkSetupOnRun: Run attaches a pod with its own netns once, with
// the netns pinned and the record already saying "attached", and records
// the IPs it got.
func TestNetworkSetupOnRun(t *testing.T) {
	m, stateDir, fn := newNetManager(t)
	sb := run(t, m, podConfig("web"))

	setups, teardowns := fn.calls()
	require.Len(t, setups, 1)
	require.Empty(t, teardowns)
	c := setups[0]
	require.Equal(t, sb.ID, c.sb.ID)
	require.Equal(t, filepath.Join(stateDir, sb.ID, "netns"), c.sb.NetNSPath)
	require.Equal(t, sb.NetNSPath, c.sb.NetNSPath)
	require.True(t, c.netnsPinned, "the netns is pinned when Setup runs")
	require.NoError(t, c.ctxErr)
	// Persisted as attached before Setup ran, so that a crash during it
	// is torn down by recovery.
	require.NotNil(t, c.record, "checkpoint readable during Setup")
	require.Equal(t, sb.ID, c.record.ID)
	require.Equal(t, StateCreated, c.record.State)
	require.True(t, c.record.NetworkAttached)
	require.Empty(t, c.record.IP)

	require.Equal(t, StateReady, sb.State)
	require.Equal(t, "10.9.0.5", sb.IP)
	require.Equal(t, []string{"fd00::5"}, sb.AdditionalIPs)
	require.True(t, sb.NetworkAttached)
	require.Contains(t, readFile(t, sb.HostsPath), "10.9.0.5\thost-web\n")
	require.Equal(t, sb, record(t, stateDir, sb.ID), "persisted")
	got, err := m.Get(sb.ID)
	require.NoError(t, err)
	require.Equal(t, sb, got)

	// A single-stack pod has no additional IPs.
	fn.mu.Lock()
	fn.ips = []string{"10.9.0.7"}
	fn.mu.Unlock()
	sb = run(t, m, podConfig("v4"))
	require.Equal(t, "10.9.0.7", sb.IP)
	require.Empty(t, sb.AdditionalIPs)
	require.Contains(t, readFile(t, sb.HostsPath), "10.9.0.7\thost-v4\n")
}

// TestNetworkHostNetworkNotAttached: a pod on the node's network is never
// attached nor detached.
func TestNetworkHostNetworkNotAttached(t *testing.T) {
	m, stateDir, fn := newNetManager(t)
	ctx := context.Background()
	cfg := podConfig("hostnet")
	cfg.Namespaces = NamespaceOptions{Network: NamespaceNode}
	sb := run(t, m, cfg)
	require.Empty(t, sb.NetNSPath)
	require.False(t, sb.NetworkAttached)
	require.Empty(t, sb.IP)
	require.False(t, record(t, stateDir, sb.ID).NetworkAttached)
	require.NoError(t, m.Stop(ctx, sb.ID))
	require.NoError(t, m.Remove(ctx, sb.ID))
	setups, teardowns := fn.calls()
	require.Empty(t, setups)
	require.Empty(t, teardowns)
}

// TestNetworkSetupFailureRollsBack: a failing Setup fails Run and leaves
// nothing; Setup cleaned up itself, so Teardown is not called. The name is
// free for kubelet's retry.
func TestNetworkSetupFailureRollsBack(t *testing.T) {
	m, stateDir, fn := newNetManager(t)
	cfg := podConfig("fail")
	fn.failSetup(1)
	_, err := m.Run(context.Background(), cfg)
	require.ErrorIs(t, err, errSetup)

	setups, teardowns := fn.calls()
	require.Len(t, setups, 1)
	// A chain that failed half-way may hold an address: the rollback
	// detaches too, while the netns is pinned.
	require.Len(t, teardowns, 1)
	require.True(t, teardowns[0].sb.NetworkAttached)
	require.True(t, teardowns[0].netnsPinned)
	requireStateDirEmpty(t, stateDir)
	require.Empty(t, m.List(Filter{}))
	m.mu.RLock()
	require.Empty(t, m.names, "name released")
	m.mu.RUnlock()
	failed := setups[0].sb
	require.NotZero(t, failed.PausePID)
	require.False(t, pauseAlive(failed.PausePID, failed.PauseStartTime), "pause process killed")

	sb := run(t, m, cfg)
	require.Equal(t, StateReady, sb.State)
	require.NotEqual(t, failed.ID, sb.ID)
	require.Equal(t, "10.9.0.5", sb.IP)
	setups, teardowns = fn.calls()
	require.Len(t, setups, 2)
	require.Len(t, teardowns, 1)
}

// TestNetworkRollbackTeardownFailsKeepsSandbox: when a Run fails and its
// rollback cannot detach the pod either, nothing else would ever free what
// the plugins hold (libcni caches only completed ADDs). The sandbox stays,
// NotReady and attached with its netns pinned, without holding the name:
// the retry creates a new one, and Stop/Remove (kubelet's GC) retry the
// DEL, also after a restart of crid.
func TestNetworkRollbackTeardownFailsKeepsSandbox(t *testing.T) {
	for _, restart := range []bool{false, true} {
		t.Run(fmt.Sprintf("restart=%v", restart), func(t *testing.T) {
			m, stateDir, fn := newNetManager(t)
			ctx := context.Background()
			cfg := podConfig("keep")
			fn.failSetup(1)
			fn.failTeardown(1)
			_, err := m.Run(ctx, cfg)
			require.ErrorIs(t, err, errSetup)

			list := m.List(Filter{})
			require.Len(t, list, 1)
			kept := list[0]
			require.Equal(t, StateNotReady, kept.State)
			require.True(t, kept.NetworkAttached)
			require.Zero(t, kept.PausePID, "the pause process was killed")
			require.True(t, isPinned(kept.NetNSPath), "pinned for the DEL's retry")
			rec := record(t, stateDir, kept.ID)
			require.Equal(t, StateNotReady, rec.State)
			require.True(t, rec.NetworkAttached)

			sb := run(t, m, cfg)
			require.NotEqual(t, kept.ID, sb.ID, "the failed one does not hold the name")
			require.Equal(t, StateReady, sb.State)

			if restart {
				m, fn = newNetManagerOn(t, stateDir)
				got, err := m.Get(kept.ID)
				require.NoError(t, err)
				require.Equal(t, StateNotReady, got.State)
				require.True(t, got.NetworkAttached)
			}
			require.NoError(t, m.Stop(ctx, kept.ID))
			_, teardowns := fn.calls()
			require.NotEmpty(t, teardowns)
			last := teardowns[len(teardowns)-1]
			require.Equal(t, kept.ID, last.sb.ID)
			require.True(t, last.netnsPinned, "the retried DEL runs in the pinned netns")
			require.False(t, isPinned(kept.NetNSPath), "released once detached")
			require.NoError(t, m.Remove(ctx, kept.ID))
			require.NoDirExists(t, filepath.Join(stateDir, kept.ID))
			got, err := m.Get(sb.ID)
			require.NoError(t, err)
			require.Equal(t, StateReady, got.State, "the retry's sandbox is untouched")
			require.NoError(t, m.Stop(ctx, sb.ID))
			require.NoError(t, m.Remove(ctx, sb.ID))
			requireStateDirEmpty(t, stateDir)
		})
	}
}

// TestNetworkRollbackAfterSetup: when a step after a successful Setup
// fails, the rollback detaches the pod, while its netns is still pinned.
func TestNetworkRollbackAfterSetup(t *testing.T) {
	for _, tc := range []struct {
		desc string
		mut  func(*fakeNetwork)
	}{
		{desc: "hosts file not writable", mut: func(f *fakeNetwork) {
			f.duringSetup = func(sb *Sandbox) {
				// rewriteHosts cannot write a directory.
				if err := os.Remove(sb.HostsPath); err == nil {
					_ = os.Mkdir(sb.HostsPath, 0o700)
				}
			}
		}},
		{desc: "no IP", mut: func(f *fakeNetwork) { f.ips = nil }},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			m, stateDir, fn := newNetManager(t)
			tc.mut(fn)
			_, err := m.Run(context.Background(), podConfig("rollback"))
			require.Error(t, err)
			setups, teardowns := fn.calls()
			require.Len(t, setups, 1)
			require.Len(t, teardowns, 1)
			c := teardowns[0]
			require.Equal(t, setups[0].sb.ID, c.sb.ID)
			require.True(t, c.sb.NetworkAttached)
			require.True(t, c.netnsPinned, "detached before the netns is released")
			requireStateDirEmpty(t, stateDir)
			require.Empty(t, m.List(Filter{}))
		})
	}
}

// TestNetworkTeardownOnStop: Stop detaches the pod once, after the pause
// process is gone and before the netns is released, and persists that.
// Later Stops and Remove do not detach again.
func TestNetworkTeardownOnStop(t *testing.T) {
	m, stateDir, fn := newNetManager(t)
	ctx := context.Background()
	sb := run(t, m, podConfig("stop"))
	require.NotZero(t, sb.PausePID)

	require.NoError(t, m.Stop(ctx, sb.ID))
	_, teardowns := fn.calls()
	require.Len(t, teardowns, 1)
	c := teardowns[0]
	require.Equal(t, sb.ID, c.sb.ID)
	require.Equal(t, sb.NetNSPath, c.sb.NetNSPath)
	require.False(t, c.pauseAlive, "the pause process is gone before the teardown")
	require.True(t, c.netnsPinned, "the netns is still pinned during the teardown")
	require.Equal(t, StateStopping, c.record.State, "on disk before the teardown: a crash now recovers NotReady")

	got, err := m.Get(sb.ID)
	require.NoError(t, err)
	require.Equal(t, StateNotReady, got.State)
	require.False(t, got.NetworkAttached)
	rec := record(t, stateDir, sb.ID)
	require.Equal(t, StateNotReady, rec.State)
	require.False(t, rec.NetworkAttached, "persisted")
	require.NoFileExists(t, sb.NetNSPath)
	require.Empty(t, mountsUnder(t, stateDir))

	require.NoError(t, m.Stop(ctx, sb.ID))
	require.NoError(t, m.Remove(ctx, sb.ID))
	_, teardowns = fn.calls()
	require.Len(t, teardowns, 1, "detached once")

	// Remove without Stop detaches too, once.
	sb = run(t, m, podConfig("remove"))
	require.NoError(t, m.Remove(ctx, sb.ID))
	_, teardowns = fn.calls()
	require.Len(t, teardowns, 2)
	c = teardowns[1]
	require.Equal(t, sb.ID, c.sb.ID)
	require.False(t, c.pauseAlive)
	require.True(t, c.netnsPinned)
	requireStateDirEmpty(t, stateDir)
}

// TestNetworkTeardownFailureOnStop: a failed teardown fails Stop, leaves
// the sandbox NotReady with only its netns pinned and still attached; the
// next Stop retries, and Remove then works.
func TestNetworkTeardownFailureOnStop(t *testing.T) {
	m, stateDir, fn := newNetManager(t)
	ctx := context.Background()
	sb := run(t, m, podConfig("tdfail"))
	fn.failTeardown(1)

	err := m.Stop(ctx, sb.ID)
	require.ErrorIs(t, err, errTeardown)
	got, err := m.Get(sb.ID)
	require.NoError(t, err)
	require.Equal(t, StateNotReady, got.State)
	require.True(t, got.NetworkAttached)
	rec := record(t, stateDir, sb.ID)
	require.Equal(t, StateNotReady, rec.State)
	require.True(t, rec.NetworkAttached, "persisted as attached")
	require.False(t, pauseAlive(sb.PausePID, sb.PauseStartTime))
	require.True(t, isPinned(sb.NetNSPath), "kept for the retry of the teardown")
	require.NoFileExists(t, sb.IPCNSPath)
	require.NoFileExists(t, sb.UTSNSPath)
	require.Equal(t, []string{sb.NetNSPath}, mountsUnder(t, stateDir), "shm and the other namespaces released")
	require.ErrorIs(t, m.WithReady(ctx, sb.ID, func(context.Context, *Sandbox) error { return nil }), ErrSandboxNotReady)

	require.NoError(t, m.Stop(ctx, sb.ID), "the retry succeeds")
	_, teardowns := fn.calls()
	require.Len(t, teardowns, 2)
	require.Equal(t, sb.ID, teardowns[1].sb.ID)
	require.True(t, teardowns[1].netnsPinned)
	require.NoFileExists(t, sb.NetNSPath)
	require.Empty(t, mountsUnder(t, stateDir))
	got, err = m.Get(sb.ID)
	require.NoError(t, err)
	require.Equal(t, StateNotReady, got.State)
	require.False(t, got.NetworkAttached)
	require.False(t, record(t, stateDir, sb.ID).NetworkAttached, "persisted")

	require.NoError(t, m.Remove(ctx, sb.ID))
	_, teardowns = fn.calls()
	require.Len(t, teardowns, 2)
	requireStateDirEmpty(t, stateDir)
}

// TestNetworkRemoveKeepsSandboxWhileTeardownFails: Remove fails and keeps
// the sandbox (and its name) while the teardown fails, so that kubelet
// retries; the first Remove after the network recovered removes it.
func TestNetworkRemoveKeepsSandboxWhileTeardownFails(t *testing.T) {
	m, stateDir, fn := newNetManager(t)
	ctx := context.Background()
	cfg := podConfig("rmfail")
	sb := run(t, m, cfg)
	fn.failTeardown(2)
	for range 2 {
		require.ErrorIs(t, m.Remove(ctx, sb.ID), errTeardown)
		got, err := m.Get(sb.ID)
		require.NoError(t, err)
		require.Equal(t, StateNotReady, got.State)
		require.True(t, got.NetworkAttached)
		require.DirExists(t, filepath.Join(stateDir, sb.ID))
		require.True(t, isPinned(sb.NetNSPath))
	}
	_, err := m.Run(ctx, cfg)
	var re *ReservedError
	require.ErrorAs(t, err, &re, "the name stays held")
	require.Equal(t, sb.ID, re.ID)

	require.NoError(t, m.Remove(ctx, sb.ID))
	_, teardowns := fn.calls()
	require.Len(t, teardowns, 3)
	requireStateDirEmpty(t, stateDir)
	run(t, m, cfg)
}

// TestNetworkRecoverCreated: a Run that crashed during or after Setup left
// a Created record that says "attached"; the next crid detaches it (while
// its netns is still pinned) and drops it. A Created record not yet
// attached is dropped without a teardown.
func TestNetworkRecoverCreated(t *testing.T) {
	m, stateDir, fn := newNetManager(t)
	crashed := run(t, m, podConfig("crashed"))
	setups, _ := fn.calls()
	require.Len(t, setups, 1)
	// The disk as it was while Setup ran.
	duringSetup := setups[0].record
	require.NotNil(t, duringSetup)
	require.Equal(t, StateCreated, duringSetup.State)
	require.True(t, duringSetup.NetworkAttached)
	require.NoError(t, writeCheckpoint(filepath.Join(stateDir, crashed.ID), duringSetup))
	// A crash before the network setup began.
	early := run(t, m, podConfig("early"))
	rec := record(t, stateDir, early.ID)
	rec.State, rec.NetworkAttached, rec.IP, rec.AdditionalIPs = StateCreated, false, "", nil
	require.NoError(t, writeCheckpoint(filepath.Join(stateDir, early.ID), rec))

	m2, fn2 := newNetManagerOn(t, stateDir)
	setups, teardowns := fn2.calls()
	require.Empty(t, setups)
	require.Len(t, teardowns, 1, "only the attached record is detached")
	c := teardowns[0]
	require.Equal(t, crashed.ID, c.sb.ID)
	require.Equal(t, crashed.NetNSPath, c.sb.NetNSPath)
	require.True(t, c.netnsPinned, "detached before its dir is removed")
	require.False(t, c.pauseAlive, "its pause process was killed first")
	require.NoError(t, c.ctxErr)
	require.Empty(t, m2.List(Filter{}))
	requireStateDirEmpty(t, stateDir)
	require.False(t, pauseAlive(early.PausePID, early.PauseStartTime))

	// The names are free.
	sb, err := m2.Run(context.Background(), podConfig("crashed"))
	require.NoError(t, err)
	require.NotEqual(t, crashed.ID, sb.ID)
}

// TestNetworkRecoverCreatedTeardownFails: when the teardown of an
// unfinished Run fails at recovery, the record is kept NotReady and
// attached with its netns pinned (libcni has no cache of an interrupted
// ADD, so no GC would free its address); Stop retries the DEL.
func TestNetworkRecoverCreatedTeardownFails(t *testing.T) {
	m, stateDir, fn := newNetManager(t)
	sb := run(t, m, podConfig("crashed"))
	setups, _ := fn.calls()
	require.NoError(t, writeCheckpoint(filepath.Join(stateDir, sb.ID), setups[0].record))

	fn2 := newFakeNetwork()
	fn2.failTeardown(1)
	m2, err := New(context.Background(), Options{StateDir: stateDir, PauseCommand: []string{"/proc/self/exe"}, Network: fn2})
	require.NoError(t, err, "a bad record never fails New")
	_, teardowns := fn2.calls()
	require.Len(t, teardowns, 1)
	require.False(t, pauseAlive(sb.PausePID, sb.PauseStartTime), "its pause process was killed")
	got, err := m2.Get(sb.ID)
	require.NoError(t, err)
	require.Equal(t, StateNotReady, got.State)
	require.True(t, got.NetworkAttached)
	require.Zero(t, got.PausePID)
	require.True(t, isPinned(got.NetNSPath), "pinned for the DEL's retry")
	require.Equal(t, StateNotReady, record(t, stateDir, sb.ID).State)

	require.NoError(t, m2.Stop(context.Background(), sb.ID))
	_, teardowns = fn2.calls()
	require.Len(t, teardowns, 2)
	require.True(t, teardowns[1].netnsPinned)
	require.NoError(t, m2.Remove(context.Background(), sb.ID))
	requireStateDirEmpty(t, stateDir)
}

// TestNetworkRecoverAttached: a recovered sandbox stays attached; its Stop
// in the new crid detaches it. That holds for a Ready sandbox and for one
// whose teardown failed before the restart.
func TestNetworkRecoverAttached(t *testing.T) {
	m, stateDir, fn := newNetManager(t)
	ctx := context.Background()
	ready := run(t, m, podConfig("ready"))
	halfStopped := run(t, m, podConfig("half"))
	fn.failTeardown(1)
	require.ErrorIs(t, m.Stop(ctx, halfStopped.ID), errTeardown)

	m2, fn2 := newNetManagerOn(t, stateDir)
	setups, teardowns := fn2.calls()
	require.Empty(t, setups)
	require.Empty(t, teardowns, "recovery detaches only unfinished Runs")
	got, err := m2.Get(ready.ID)
	require.NoError(t, err)
	require.Equal(t, ready, got, "Ready, attached, with its IPs")
	got, err = m2.Get(halfStopped.ID)
	require.NoError(t, err)
	require.Equal(t, StateNotReady, got.State)
	require.True(t, got.NetworkAttached)
	require.True(t, isPinned(halfStopped.NetNSPath))

	require.NoError(t, m2.Stop(ctx, ready.ID))
	require.NoError(t, m2.Stop(ctx, halfStopped.ID))
	_, teardowns = fn2.calls()
	require.Len(t, teardowns, 2)
	for i, sb := range []*Sandbox{ready, halfStopped} {
		c := teardowns[i]
		require.Equal(t, sb.ID, c.sb.ID)
		require.True(t, c.netnsPinned)
		require.False(t, c.pauseAlive)
		require.False(t, record(t, stateDir, sb.ID).NetworkAttached)
	}
	require.Empty(t, mountsUnder(t, stateDir))
	require.NoError(t, m2.Remove(ctx, ready.ID))
	require.NoError(t, m2.Remove(ctx, halfStopped.ID))
	_, teardowns = fn2.calls()
	require.Len(t, teardowns, 2)
	requireStateDirEmpty(t, stateDir)
}

// TestNetworkAttachedKeptWithoutNetwork: a crid without a Network cannot
// detach a recovered attached sandbox, so its Stop must not record it as
// detached: a later crid with a Network still tears it down.
func TestNetworkAttachedKeptWithoutNetwork(t *testing.T) {
	m, stateDir, _ := newNetManager(t)
	ctx := context.Background()
	sb := run(t, m, podConfig("nonet"))

	m2, err := New(ctx, Options{StateDir: stateDir, PauseCommand: []string{"/proc/self/exe"}})
	require.NoError(t, err)
	require.NoError(t, m2.Stop(ctx, sb.ID))
	require.True(t, record(t, stateDir, sb.ID).NetworkAttached)

	m3, fn3 := newNetManagerOn(t, stateDir)
	require.NoError(t, m3.Stop(ctx, sb.ID))
	_, teardowns := fn3.calls()
	require.Len(t, teardowns, 1)
	require.False(t, record(t, stateDir, sb.ID).NetworkAttached)
}

// TestNetworkTeardownContextNotCancelled: the teardown runs on a fresh,
// bounded context that keeps the request's values, even when the
// request's context is already cancelled (a cancelled StopPodSandbox must
// not leave an address allocated).
func TestNetworkTeardownContextNotCancelled(t *testing.T) {
	m, stateDir, fn := newNetManager(t)
	stopped := run(t, m, podConfig("stopped"))
	removed := run(t, m, podConfig("removed"))
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "request"))
	cancel()

	start := time.Now()
	require.NoError(t, m.Stop(ctx, stopped.ID))
	require.NoError(t, m.Remove(ctx, removed.ID))
	_, teardowns := fn.calls()
	require.Len(t, teardowns, 2)
	for _, c := range teardowns {
		require.NoError(t, c.ctxErr, "not cancelled with the request")
		require.Equal(t, "request", c.value, "the request's values are kept")
		require.False(t, c.deadline.IsZero(), "bounded")
		require.WithinDuration(t, start.Add(networkTeardownTimeout), c.deadline, 10*time.Second)
	}
	require.False(t, record(t, stateDir, stopped.ID).NetworkAttached)
	require.Empty(t, mountsUnder(t, stateDir))
}

// TestRemoveDirFinishesEarlierAttempt: a Remove whose delete failed after
// the rename leaves ".removing-<id>"; the retry, finding no dir to rename,
// deletes that instead of reporting success over it.
func TestRemoveDirFinishesEarlierAttempt(t *testing.T) {
	stateDir := t.TempDir()
	dir := filepath.Join(stateDir, "abc")
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "sub"), 0o700))
	gone := filepath.Join(stateDir, removingPrefix+"abc")
	require.NoError(t, os.Rename(dir, gone))
	require.NoError(t, removeDir(dir))
	require.NoDirExists(t, gone)
	require.NoError(t, removeDir(dir), "and again: nothing left is not an error")
}
