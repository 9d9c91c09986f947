package sandbox

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"

	"github.com/crid-dev/crid/internal/mount"
)

func TestRecover(t *testing.T) {
	m, stateDir := newManager(t)
	ctx := context.Background()
	cfg := podConfig("recover")
	sb := run(t, m, cfg)
	other := run(t, m, podConfig("other"))

	// Garbage a crash or an operator could leave.
	junk := filepath.Join(stateDir, "junk")
	require.NoError(t, os.Mkdir(junk, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(junk, checkpointFile), []byte("{not json"), 0o600))
	future := filepath.Join(stateDir, "future")
	require.NoError(t, os.Mkdir(future, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(future, checkpointFile), []byte(`{"version":"v9","sandbox":{}}`), 0o600))
	half := filepath.Join(stateDir, removingPrefix+"half")
	require.NoError(t, os.MkdirAll(filepath.Join(half, "shm"), 0o700))
	require.NoError(t, mountShm(filepath.Join(half, "x")))
	// A Run that crashed after its first checkpoint.
	crashed := &Sandbox{ID: "c0ffee", State: StateCreated, Config: podConfig("crashed")}
	require.NoError(t, os.Mkdir(filepath.Join(stateDir, crashed.ID), 0o700))
	require.NoError(t, writeCheckpoint(filepath.Join(stateDir, crashed.ID), crashed))

	// A new Manager (crid restarted) sees the sandbox Ready.
	m2, err := New(ctx, Options{StateDir: stateDir})
	require.NoError(t, err)
	got, err := m2.Get(sb.ID)
	require.NoError(t, err)
	require.Equal(t, StateReady, got.State)
	require.Equal(t, sb, got)
	require.Len(t, m2.List(Filter{}), 2, "bad records dropped")
	for _, d := range []string{junk, future, half, filepath.Join(stateDir, crashed.ID)} {
		require.NoDirExists(t, d)
	}
	// The retry of the same Run gets the recovered sandbox.
	again, err := m2.Run(ctx, cfg)
	require.NoError(t, err)
	require.Equal(t, sb.ID, again.ID)

	// Unpin the netns behind crid's back: the next start marks it NotReady.
	require.NoError(t, mount.Unmount(sb.NetNSPath))
	m3, err := New(ctx, Options{StateDir: stateDir})
	require.NoError(t, err)
	got, err = m3.Get(sb.ID)
	require.NoError(t, err)
	require.Equal(t, StateNotReady, got.State)
	got, err = m3.Get(other.ID)
	require.NoError(t, err)
	require.Equal(t, StateReady, got.State)
	_, err = m3.Run(ctx, cfg)
	var re *ReservedError
	require.ErrorAs(t, err, &re)
	require.Equal(t, sb.ID, re.ID)

	// The recovered pause process (not m3's child) is killed on Stop.
	require.NoError(t, m3.Stop(ctx, sb.ID))
	require.False(t, pauseAlive(sb.PausePID, sb.PauseStartTime))
	require.NoError(t, m3.Remove(ctx, sb.ID))
	require.NoError(t, m3.Remove(ctx, other.ID))
	require.False(t, pauseAlive(other.PausePID, other.PauseStartTime))
	require.Empty(t, mountsUnder(t, stateDir))
	entries, err := os.ReadDir(stateDir)
	require.NoError(t, err)
	require.Empty(t, entries)

	// A fourth start finds the NotReady state persisted, and nothing else.
	m4, err := New(ctx, Options{StateDir: stateDir})
	require.NoError(t, err)
	require.Empty(t, m4.List(Filter{}))
	_, err = m4.Get(sb.ID)
	require.ErrorIs(t, err, errdefs.ErrNotFound)
}

// TestRecoverPauseGone: a Ready sandbox whose pause process died is NotReady
// after a restart.
func TestRecoverPauseGone(t *testing.T) {
	m, stateDir := newManager(t)
	sb := run(t, m, podConfig("pausegone"))
	require.NoError(t, m.sandboxes[sb.ID].pause.kill(context.Background()))
	m2, err := New(context.Background(), Options{StateDir: stateDir})
	require.NoError(t, err)
	got, err := m2.Get(sb.ID)
	require.NoError(t, err)
	require.Equal(t, StateNotReady, got.State)
	// Persisted.
	rec, err := readCheckpoint(filepath.Join(stateDir, sb.ID))
	require.NoError(t, err)
	require.Equal(t, StateNotReady, rec.State)
}
