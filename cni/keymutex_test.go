package cni

import (
	"fmt"
	"runtime"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestKeyMutexNoLeak(t *testing.T) {
	var k keyMutex
	k.lock("a")()
	require.Empty(t, k.locks)

	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			for j := range 20 {
				unlock := k.lock(fmt.Sprintf("key-%d", (i+j)%7))
				unlock()
			}
		})
	}
	wg.Wait()
	require.Empty(t, k.locks, "idle keys hold no memory")
}

func TestKeyMutexSerializesOneKey(t *testing.T) {
	var k keyMutex
	var (
		mu       sync.Mutex
		holders  int
		maxHeld  int
		sections int
	)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			for range 20 {
				unlock := k.lock("same")
				mu.Lock()
				holders++
				maxHeld = max(maxHeld, holders)
				sections++
				mu.Unlock()
				runtime.Gosched() // let others try to enter meanwhile

				mu.Lock()
				holders--
				mu.Unlock()
				unlock()
			}
		})
	}
	wg.Wait()
	require.Equal(t, 1, maxHeld, "two holders of one key at once")
	require.Equal(t, 400, sections)
	require.Empty(t, k.locks)
}

func TestKeyMutexWaiterGetsLockAfterUnlock(t *testing.T) {
	var k keyMutex
	unlock := k.lock("p")
	released := false
	got := make(chan bool, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		u := k.lock("p")
		got <- released // read under the key's lock: ordered after the write below
		u()
	}()
	// A different key does not wait for "p".
	k.lock("q")()
	// Wait until the waiter holds a reference to "p": it is blocked, or
	// about to block, on the key's lock.
	for refs := 0; refs < 2; runtime.Gosched() {
		select {
		case <-got:
			t.Fatal("the waiter acquired the key while it was locked")
		default:
		}
		k.mu.Lock()
		refs = k.locks["p"].refs
		k.mu.Unlock()
	}
	select {
	case <-got:
		t.Fatal("the waiter acquired the key while it was locked")
	default:
	}
	released = true
	unlock()
	<-done
	require.True(t, <-got, "the waiter acquired the key before it was unlocked")
	require.Empty(t, k.locks)
}
