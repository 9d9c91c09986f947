package imagestore

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/crid-dev/crid/imagestore/registry"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// eventually polls cond for up to 10s and fails the test if it stays false.
// Call it from the test's goroutine.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	if !poll(cond) {
		t.Fatalf("timed out waiting: %s", what)
	}
}

// poll polls cond for up to 10s and reports whether it became true.
func poll(cond func() bool) bool {
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
	return true
}

// gate makes Fetch of d wait until the returned func is called.
func (r *fakeRegistry) gateFetch(d digest.Digest) (open func()) {
	ch := make(chan struct{})
	r.mu.Lock()
	r.gate[d] = ch
	r.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { close(ch) }) }
}

// waiters returns how many callers wait for the pull keyed by ref
// (anonymous).
func (s *Store) waiters(t *testing.T, ref string) int {
	named, err := ParseRef(ref)
	require.NoError(t, err)
	s.pulls.mu.Lock()
	defer s.pulls.mu.Unlock()
	if f, ok := s.pulls.m[pullKey(named, nil)]; ok {
		return f.waiters
	}
	return 0
}

func TestConcurrentPullsOfOneRefShareOneOperation(t *testing.T) {
	e := newEnv(t, nil)
	f := e.reg.push(t, "app", imageSpec{layers: []layerSpec{files("a", "1"), files("b", "2")}})
	open := e.reg.gateFetch(f.layers[1].Digest)

	const n = 5
	results := make([]Image, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = e.s.Pull(testCtx(t), "docker.io/library/app:latest", nil)
		}()
	}
	eventually(t, "all callers joined", func() bool { return e.s.waiters(t, "app") == n })
	open()
	wg.Wait()
	for i := 0; i < n; i++ {
		require.NoError(t, errs[i])
		assert.Equal(t, f.config.Digest, results[i].ID)
	}
	assert.Equal(t, 1, e.reg.resolveCount())
	assert.Equal(t, 1, e.reg.fetchCount(f.manifest.Digest))
	assert.Equal(t, 1, e.reg.fetchCount(f.config.Digest))
	assert.Equal(t, 1, e.reg.fetchCount(f.layers[0].Digest))
	assert.Equal(t, 1, e.reg.fetchCount(f.layers[1].Digest))
	assert.Equal(t, 2, e.unp.unpackCount())
	// Each caller has its own copy.
	results[0].RepoTags[0] = "changed"
	assert.Equal(t, "docker.io/library/app:latest", results[1].RepoTags[0])
	e.checkConsistent()
}

func TestCallerGivingUpDoesNotCancelTheSharedPull(t *testing.T) {
	e := newEnv(t, nil)
	f := e.reg.push(t, "app", imageSpec{layers: []layerSpec{files("a", "1")}})
	open := e.reg.gateFetch(f.layers[0].Digest)

	ctx1, cancel1 := context.WithCancel(testCtx(t))
	done1 := make(chan error, 1)
	go func() {
		_, err := e.s.Pull(ctx1, "app", nil)
		done1 <- err
	}()
	done2 := make(chan error, 1)
	var img2 Image
	go func() {
		var err error
		img2, err = e.s.Pull(testCtx(t), "app", nil)
		done2 <- err
	}()
	eventually(t, "both callers joined", func() bool { return e.s.waiters(t, "app") == 2 })
	cancel1()
	assert.ErrorIs(t, <-done1, context.Canceled)
	open()
	require.NoError(t, <-done2)
	assert.Equal(t, f.config.Digest, img2.ID)
	assert.Equal(t, 1, e.reg.resolveCount())
	e.checkConsistent()
}

func TestPullIsCancelledWhenEveryCallerHasGone(t *testing.T) {
	for _, parallel := range []bool{true, false} {
		t.Run(map[bool]string{true: "parallel", false: "sequential"}[parallel], func(t *testing.T) {
			e := newEnv(t, nil)
			e.unp.parallel = parallel
			f := e.reg.push(t, "app", imageSpec{layers: []layerSpec{files("a", "1"), files("b", "2"), files("c", "3")}})
			// The bottom layer is done, the others hang.
			e.reg.gateFetch(f.layers[1].Digest)
			e.reg.gateFetch(f.layers[2].Digest)

			ctx, cancel := context.WithCancel(testCtx(t))
			done := make(chan error, 1)
			go func() {
				_, err := e.s.Pull(ctx, "app", nil)
				done <- err
			}()
			eventually(t, "layers 2 and 3 requested", func() bool {
				return e.reg.fetchCount(f.layers[1].Digest) == 1 && e.reg.fetchCount(f.layers[2].Digest) == 1
			})
			cancel()
			assert.ErrorIs(t, <-done, context.Canceled)
			e.s.pulls.wait()

			assert.Empty(t, e.s.List(testCtx(t)))
			e.checkConsistent() // the bottom layer may stay, recorded; nothing else
			assert.LessOrEqual(t, len(e.list("layerdb", "sha256")), 1)

			// A new pull starts afresh and reuses what was recorded.
			clear(e.reg.gate)
			img := e.mustPull("app")
			assert.Equal(t, f.config.Digest, img.ID)
			assert.Equal(t, 2, e.reg.resolveCount())
			e.checkConsistent()
		})
	}
}

func TestConcurrentPullsOfImagesSharingLayersUnpackThemOnce(t *testing.T) {
	e := newEnv(t, nil)
	base := []layerSpec{files("base", "1"), files("lib", "2")}
	fa := e.reg.push(t, "a", imageSpec{layers: append(base[:2:2], files("app", "A"))})
	fb := e.reg.push(t, "b", imageSpec{layers: append(base[:2:2], files("app", "B"))})
	open := e.reg.gateFetch(fa.layers[0].Digest)

	var wg sync.WaitGroup
	var imgA, imgB Image
	var errA, errB error
	wg.Add(3)
	go func() { defer wg.Done(); imgA, errA = e.s.Pull(testCtx(t), "a", nil) }()
	go func() { defer wg.Done(); imgB, errB = e.s.Pull(testCtx(t), "b", nil) }()
	// Same reference, other credentials: a separate operation, which must
	// still share the layers.
	var imgA2 Image
	var errA2 error
	go func() {
		defer wg.Done()
		imgA2, errA2 = e.s.Pull(testCtx(t), "a", &registry.Credentials{Username: "u", Password: "p"})
	}()
	eventually(t, "bottom layer requested", func() bool { return e.reg.fetchCount(fa.layers[0].Digest) == 1 })
	eventually(t, "three pulls resolved", func() bool { return e.reg.resolveCount() == 3 })
	time.Sleep(20 * time.Millisecond) // let the others reach the chain lock
	open()
	wg.Wait()
	require.NoError(t, errA)
	require.NoError(t, errB)
	require.NoError(t, errA2)
	assert.Equal(t, imgA.ID, imgA2.ID)
	assert.Equal(t, imgA.Layers[:2], imgB.Layers[:2])
	assert.Equal(t, 1, e.reg.fetchCount(fa.layers[0].Digest))
	assert.Equal(t, 1, e.reg.fetchCount(fb.layers[1].Digest))
	assert.Equal(t, 1, e.reg.fetchCount(fa.layers[2].Digest))
	assert.Equal(t, 1, e.reg.fetchCount(fb.layers[2].Digest))
	assert.Equal(t, 4, e.unp.unpackCount(), "each layer unpacked once")
	assert.Len(t, e.list("layerdb", "sha256"), 4)
	e.checkConsistent()

	// The refcounts are right: removing A keeps B whole.
	require.NoError(t, e.s.Remove(testCtx(t), "a"))
	assert.Equal(t, []string{imgA.Layers[2].CacheID}, e.unp.removed())
	e.checkConsistent()
}

func TestProgressTimeout(t *testing.T) {
	const timeout = 150 * time.Millisecond
	for _, tc := range []struct {
		desc  string
		stall func(e *testEnv, f fixture) digest.Digest
		what  string
	}{
		{"layer body stops", func(e *testEnv, f fixture) digest.Digest {
			e.reg.stallAfter[f.layers[1].Digest] = 100
			return f.layers[1].Digest
		}, "layer"},
		{"layer fetch never answers", func(e *testEnv, f fixture) digest.Digest {
			e.reg.stallFetch[f.layers[0].Digest] = true
			return f.layers[0].Digest
		}, "layer"},
		{"manifest body stops", func(e *testEnv, f fixture) digest.Digest {
			e.reg.stallAfter[f.manifest.Digest] = 10
			return f.manifest.Digest
		}, "manifest"},
		{"config fetch never answers", func(e *testEnv, f fixture) digest.Digest {
			e.reg.stallFetch[f.config.Digest] = true
			return f.config.Digest
		}, "config"},
	} {
		for _, parallel := range []bool{true, false} {
			t.Run(tc.desc+map[bool]string{true: "", false: "/sequential"}[parallel], func(t *testing.T) {
				e := newEnv(t, func(o *Options) { o.ProgressTimeout = timeout })
				e.unp.parallel = parallel
				f := e.reg.push(t, "app", imageSpec{layers: []layerSpec{files("a", strings.Repeat("a", 4000)), files("b", strings.Repeat("b", 4000))}})
				d := tc.stall(e, f)
				start := time.Now()
				_, err := e.pull("app")
				require.Error(t, err)
				assert.True(t, errdefs.IsUnavailable(err), "%v", err)
				assert.EqualError(t, err, "no progress for 150ms pulling "+tc.what+" "+d.String()+": unavailable")
				assert.Less(t, time.Since(start), 5*time.Second)
				assert.Empty(t, e.s.List(testCtx(t)))
				e.checkConsistent()
			})
		}
	}

	t.Run("slow but steady is fine", func(t *testing.T) {
		const timeout = 300 * time.Millisecond
		e := newEnv(t, func(o *Options) { o.ProgressTimeout = timeout })
		f := e.reg.push(t, "app", imageSpec{layers: []layerSpec{files("a", randomText(3000))}})
		// 64 bytes every 40ms: the layer takes several timeouts in all.
		e.reg.slow[f.layers[0].Digest] = 40 * time.Millisecond
		require.Greater(t, f.layers[0].Size, int64(64*20))
		start := time.Now()
		img := e.mustPull("app")
		assert.Greater(t, time.Since(start), 2*timeout)
		assert.Equal(t, f.config.Digest, img.ID)
	})
}

func TestSequentialUnpackSpoolsLaterLayers(t *testing.T) {
	e := newEnv(t, nil)
	e.unp.parallel = false
	f := e.reg.push(t, "app", imageSpec{layers: []layerSpec{
		files("a", strings.Repeat("a", 10000)), files("b", strings.Repeat("b", 10000)), files("c", strings.Repeat("c", 10000)),
	}})
	open := e.reg.gateFetch(f.layers[0].Digest)
	done := make(chan error, 1)
	var img Image
	go func() {
		var err error
		img, err = e.pull("app")
		done <- err
	}()
	// While the bottom layer hangs, the others download into tmp/.
	eventually(t, "layers 2 and 3 spooled", func() bool {
		entries, _ := os.ReadDir(e.path("tmp"))
		complete := 0
		for _, en := range entries {
			if info, err := en.Info(); err == nil && strings.HasPrefix(en.Name(), "spool-") &&
				(info.Size() == f.layers[1].Size || info.Size() == f.layers[2].Size) {
				complete++
			}
		}
		return complete == 2
	})
	assert.Zero(t, e.unp.unpackCount(), "nothing unpacked before the bottom layer")
	open()
	require.NoError(t, <-done)
	require.Len(t, img.Layers, 3)
	e.unp.mu.Lock()
	assert.Equal(t, []string{img.Layers[0].CacheID, img.Layers[1].CacheID, img.Layers[2].CacheID}, e.unp.unpacks, "unpacked bottom up")
	e.unp.mu.Unlock()
	e.checkConsistent()
}

func TestLayerdbNeverHoldsALayerWithoutItsParent(t *testing.T) {
	e := newEnv(t, nil) // parallel unpack
	e.reg.push(t, "app", imageSpec{layers: []layerSpec{files("a", "1"), files("b", "2"), files("c", "3")}})
	release := make(chan struct{})
	checked := make(chan []string, 1)
	e.unp.hook = func(n int, key, parent string) error {
		if parent != "" {
			return nil
		}
		// The bottom layer: wait until the two above it are unpacked, then
		// look at layerdb.
		go func() {
			if !poll(func() bool { return len(e.unp.keys()) == 2 }) {
				t.Error("upper layers were not unpacked")
			}
			time.Sleep(20 * time.Millisecond)
			entries, _ := os.ReadDir(e.path("layerdb", "sha256"))
			var names []string
			for _, en := range entries {
				names = append(names, en.Name())
			}
			checked <- names
			close(release)
		}()
		<-release
		return nil
	}
	img := e.mustPull("app")
	assert.Empty(t, <-checked, "layers were recorded before their parent")
	assert.Len(t, img.Layers, 3)
	e.checkConsistent()
}

func TestKeyedMutex(t *testing.T) {
	var k keyedMutex
	a, b := digest.FromString("a"), digest.FromString("b")
	ctx := context.Background()
	require.NoError(t, k.lock(ctx, a))
	require.NoError(t, k.lock(ctx, b), "other keys are independent")

	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, k.lock(short, a), context.DeadlineExceeded)

	got := make(chan struct{})
	go func() {
		if err := k.lock(ctx, a); err == nil {
			close(got)
		}
	}()
	select {
	case <-got:
		t.Fatal("lock taken twice")
	case <-time.After(20 * time.Millisecond):
	}
	k.unlock(a)
	<-got
	k.unlock(a)
	k.unlock(b)
	assert.Empty(t, k.m, "entries are forgotten")
}

func TestPullGroupWaitsForCallers(t *testing.T) {
	var g pullGroup
	started := make(chan struct{})
	finish := make(chan struct{})
	calls := 0
	fn := func(ctx context.Context) (Image, error) {
		calls++
		close(started)
		select {
		case <-finish:
			return Image{ID: "sha256:x"}, nil
		case <-ctx.Done():
			return Image{}, ctx.Err()
		}
	}
	ctx1, cancel1 := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, err := g.do(ctx1, "k", fn); errc <- err }()
	<-started
	res := make(chan Image, 1)
	go func() {
		img, err := g.do(context.Background(), "k", fn)
		if err == nil {
			res <- img
		}
	}()
	for {
		g.mu.Lock()
		w := g.m["k"].waiters
		g.mu.Unlock()
		if w == 2 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	cancel1()
	assert.True(t, errors.Is(<-errc, context.Canceled))
	close(finish)
	assert.Equal(t, digest.Digest("sha256:x"), (<-res).ID)
	g.wait()
	assert.Equal(t, 1, calls)
	assert.Empty(t, g.m)
}
