package imagestore

import (
	"context"
	"sync"

	"github.com/opencontainers/go-digest"
)

// keyedMutex is a set of mutexes named by chain-id, created on demand and
// forgotten when nobody holds or waits for them. Lock waits can be
// cancelled.
type keyedMutex struct {
	mu sync.Mutex
	m  map[digest.Digest]*keyedEntry
}

type keyedEntry struct {
	ch chan struct{} // holds one token while locked
	n  int           // holders and waiters
}

func (k *keyedMutex) lock(ctx context.Context, key digest.Digest) error {
	k.mu.Lock()
	if k.m == nil {
		k.m = make(map[digest.Digest]*keyedEntry)
	}
	e := k.m[key]
	if e == nil {
		e = &keyedEntry{ch: make(chan struct{}, 1)}
		k.m[key] = e
	}
	e.n++
	k.mu.Unlock()
	select {
	case e.ch <- struct{}{}:
		return nil
	case <-ctx.Done():
		k.release(key, e)
		return ctx.Err()
	}
}

func (k *keyedMutex) unlock(key digest.Digest) {
	k.mu.Lock()
	e := k.m[key]
	k.mu.Unlock()
	<-e.ch
	k.release(key, e)
}

func (k *keyedMutex) release(key digest.Digest, e *keyedEntry) {
	k.mu.Lock()
	defer k.mu.Unlock()
	e.n--
	if e.n == 0 {
		delete(k.m, key)
	}
}

// pullGroup runs one pull per key however many callers ask for it. Unlike
// singleflight, it counts the callers: the pull runs on a context detached
// from all of them and is cancelled only when every caller has given up,
// so one kubelet request timing out does not fail the pull for the others.
type pullGroup struct {
	mu sync.Mutex
	m  map[string]*flight
	wg sync.WaitGroup
}

type flight struct {
	done    chan struct{}
	cancel  context.CancelFunc
	waiters int // guarded by pullGroup.mu
	img     Image
	err     error
}

func (g *pullGroup) do(ctx context.Context, key string, fn func(context.Context) (Image, error)) (Image, error) {
	g.mu.Lock()
	if g.m == nil {
		g.m = make(map[string]*flight)
	}
	f, ok := g.m[key]
	if !ok {
		fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		f = &flight{done: make(chan struct{}), cancel: cancel}
		g.m[key] = f
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			img, err := fn(fctx)
			g.mu.Lock()
			f.img, f.err = img, err
			if g.m[key] == f {
				delete(g.m, key)
			}
			g.mu.Unlock()
			cancel()
			close(f.done)
		}()
	}
	f.waiters++
	g.mu.Unlock()

	select {
	case <-f.done:
		if f.err != nil {
			return Image{}, f.err
		}
		return cloneImage(f.img), nil
	case <-ctx.Done():
		g.mu.Lock()
		f.waiters--
		if f.waiters == 0 {
			// Nobody wants the result any more: cancel, and let the next
			// caller start afresh rather than join a dying pull.
			if g.m[key] == f {
				delete(g.m, key)
			}
			f.cancel()
		}
		g.mu.Unlock()
		return Image{}, ctx.Err()
	}
}

// wait blocks until every pull started so far has returned.
func (g *pullGroup) wait() { g.wg.Wait() }
