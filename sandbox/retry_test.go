package sandbox

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestRunCancelRetry is kubelet's deadline case: the first RunPodSandbox's
// context ends mid-creation; the retry with the same name gets the sandbox
// the first one finished.
func TestRunCancelRetry(t *testing.T) {
	m, _ := newManager(t)
	cfg := podConfig("retry")
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the creation goroutine starts, then Run gives up at once
	// The creation takes milliseconds, so the cancelled context always
	// wins the race.
	_, err := m.Run(ctx, cfg)
	require.ErrorIs(t, err, context.Canceled)
	sb, err := m.Run(context.Background(), cfg)
	require.NoError(t, err)
	require.Equal(t, StateReady, sb.State)
	all := m.List(Filter{})
	require.Len(t, all, 1, "one sandbox, not two")
	require.Equal(t, sb.ID, all[0].ID)
}

// TestRunConcurrentSameName: concurrent Runs of one name share one sandbox.
func TestRunConcurrentSameName(t *testing.T) {
	m, _ := newManager(t)
	cfg := podConfig("same")
	const n = 8
	ids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sb, err := m.Run(context.Background(), cfg)
			errs[i] = err
			if err == nil {
				ids[i] = sb.ID
			}
		}()
	}
	wg.Wait()
	require.NoError(t, errors.Join(errs...))
	for _, id := range ids {
		require.Equal(t, ids[0], id)
	}
	require.Len(t, m.List(Filter{}), 1)
}

// TestWithReadyRefusedWhileStopping: a container creation that arrives
// while Stop holds the sandbox is refused at once.
func TestWithReadyRefusedWhileStopping(t *testing.T) {
	m, _ := newManager(t)
	sb := run(t, m, podConfig("stopping"))
	e := m.sandboxes[sb.ID]
	e.mu.Lock() // what Stop holds during its teardown
	require.NoError(t, e.setStateLocked(StateStopping, false))
	err := m.WithReady(context.Background(), sb.ID, func(context.Context, *Sandbox) error { return nil })
	e.mu.Unlock()
	require.ErrorIs(t, err, ErrSandboxStopping)
	require.NoError(t, m.Stop(context.Background(), sb.ID))
}
