package sandbox

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// TestNoLeaks runs 50 full cycles and checks that no mount, file, goroutine
// or pause process is left.
func TestNoLeaks(t *testing.T) {
	m, stateDir := newManager(t)
	ignore := goleak.IgnoreCurrent()
	ctx := context.Background()
	type pauseID struct {
		pid int
		st  uint64
	}
	var pauses []pauseID
	for i := range 50 {
		cfg := podConfig(fmt.Sprintf("leak-%d", i))
		cfg.Sysctls = map[string]string{"net.ipv4.ip_unprivileged_port_start": "80"}
		sb, err := m.Run(ctx, cfg)
		require.NoError(t, err)
		pauses = append(pauses, pauseID{sb.PausePID, sb.PauseStartTime})
		require.NoError(t, m.Stop(ctx, sb.ID))
		require.NoError(t, m.Remove(ctx, sb.ID))
	}
	require.Empty(t, mountsUnder(t, stateDir))
	entries, err := os.ReadDir(stateDir)
	require.NoError(t, err)
	require.Empty(t, entries)
	for _, p := range pauses {
		require.False(t, pauseAlive(p.pid, p.st), "pause %d", p.pid)
		_, err := os.Stat(fmt.Sprintf("/proc/%d", p.pid))
		if err == nil {
			// The PID may have been reused; it is not our zombie though.
			st, err := procStartTime(p.pid)
			require.True(t, err != nil || st != p.st)
		}
	}
	require.Empty(t, m.List(Filter{}))
	m.mu.RLock()
	require.Empty(t, m.names)
	m.mu.RUnlock()
	goleak.VerifyNone(t, ignore)
}
