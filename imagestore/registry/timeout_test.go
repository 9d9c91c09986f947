package registry

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/require"
)

func TestResponseHeaderTimeoutMovesOn(t *testing.T) {
	img := newTestImage(t)
	upstream := newFakeRegistry(t)
	want := img.serve(upstream, "app", "1")
	release := make(chan struct{})
	stuck := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(stuck.Close)
	t.Cleanup(func() { close(release) })

	dir := t.TempDir()
	r, err := NewResolver(Options{ConfigPath: dir, Timeouts: Timeouts{ResponseHeader: 200 * time.Millisecond}})
	require.NoError(t, err)
	t.Cleanup(r.CloseIdleConnections)
	writeHostsToml(t, dir, upstream.host(), fmt.Sprintf("[host.%q]\n", stuck.URL))

	start := time.Now()
	desc, _, err := r.Resolve(t.Context(), mustRef(t, upstream.host()+"/app:1"), nil)
	require.NoError(t, err)
	require.Equal(t, want, desc)
	require.Less(t, time.Since(start), 5*time.Second)
}

func TestSlowBodyIsNotCut(t *testing.T) {
	img := newTestImage(t)
	f := newFake()
	img.serve(f, "app", "1")
	blob := bytes.Repeat([]byte("0123456789abcdef"), 4096)
	d := digest.FromBytes(blob)
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/blobs/"+d.String()) {
			f.serve(w, r)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(blob)))
		w.WriteHeader(http.StatusOK)
		for chunk := range slices.Chunk(blob, len(blob)/8) {
			_, _ = w.Write(chunk)
			w.(http.Flusher).Flush()
			time.Sleep(60 * time.Millisecond)
		}
	}))
	t.Cleanup(f.srv.Close)

	r, err := NewResolver(Options{ConfigPath: t.TempDir(), Timeouts: Timeouts{ResponseHeader: 100 * time.Millisecond}})
	require.NoError(t, err)
	t.Cleanup(r.CloseIdleConnections)
	_, fetcher, err := r.Resolve(t.Context(), mustRef(t, f.host()+"/app:1"), nil)
	require.NoError(t, err)
	rc, err := fetcher.Fetch(t.Context(), ocispec.Descriptor{Digest: d, Size: int64(len(blob))})
	require.NoError(t, err)
	defer rc.Close()
	got, err := io.ReadAll(rc)
	require.NoError(t, err, "no timeout applies to a body that makes progress")
	require.Equal(t, blob, got)
}

func TestNegativeTimeout(t *testing.T) {
	_, err := NewResolver(Options{Timeouts: Timeouts{Dial: -time.Second}})
	require.Error(t, err)
}

// BenchmarkFetchParallel streams three 48 MiB blobs at once from a loopback
// registry, as a pull does with large layers.
func BenchmarkFetchParallel(b *testing.B) {
	const size = 48 << 20
	blob := bytes.Repeat([]byte{0x5a}, size)
	d := digest.FromBytes(blob)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/manifests/") {
			w.Header().Set("Content-Type", ocispec.MediaTypeImageManifest)
			w.Header().Set("Docker-Content-Digest", d.String())
			w.Header().Set("Content-Length", "2")
			return
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(blob))
	}))
	b.Cleanup(srv.Close)
	r, err := NewResolver(Options{ConfigPath: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	ref, _ := parseRef(strings.TrimPrefix(srv.URL, "http://") + "/app:1")
	_, fetcher, err := r.Resolve(b.Context(), ref, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(3 * size)
	b.ResetTimer()
	for range b.N {
		var wg sync.WaitGroup
		for range 3 {
			wg.Go(func() {
				rc, err := fetcher.Fetch(b.Context(), ocispec.Descriptor{Digest: d, Size: size})
				if err != nil {
					b.Error(err)
					return
				}
				defer rc.Close()
				if n, err := io.Copy(io.Discard, rc); err != nil || n != size {
					b.Error(n, err)
				}
			})
		}
		wg.Wait()
	}
}
