package imagestore

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/require"

	"github.com/crid-dev/crid/imagestore/registry"
	"github.com/crid-dev/crid/internal/log"
)

var (
	_ Resolver      = (*fakeRegistry)(nil)
	_ LayerUnpacker = (*fakeUnpacker)(nil)
)

// fakeRegistry serves manifests, configs and blobs from memory and counts
// what it is asked for.
type fakeRegistry struct {
	mu       sync.Mutex
	blobs    map[digest.Digest][]byte
	tags     map[string]ocispec.Descriptor // normalized reference → target
	fetches  map[digest.Digest]int
	resolves int
	// serve replaces what Fetch returns for a digest (corruption tests).
	serve map[digest.Digest][]byte
	// stallAfter makes the body of a digest stop after n bytes until it is
	// closed or its context ends.
	stallAfter map[digest.Digest]int
	// stallFetch makes Fetch of a digest block until its context ends.
	stallFetch map[digest.Digest]bool
	// gate, when set for a digest, is waited on before Fetch returns.
	gate map[digest.Digest]chan struct{}
	// slow makes the body of a digest deliver one chunk per interval.
	slow map[digest.Digest]time.Duration
	// failFetch makes Fetch of a digest fail.
	failFetch map[digest.Digest]bool
}

func newFakeRegistry() *fakeRegistry {
	return &fakeRegistry{
		blobs:      make(map[digest.Digest][]byte),
		tags:       make(map[string]ocispec.Descriptor),
		fetches:    make(map[digest.Digest]int),
		serve:      make(map[digest.Digest][]byte),
		stallAfter: make(map[digest.Digest]int),
		stallFetch: make(map[digest.Digest]bool),
		gate:       make(map[digest.Digest]chan struct{}),
		slow:       make(map[digest.Digest]time.Duration),
		failFetch:  make(map[digest.Digest]bool),
	}
}

func (r *fakeRegistry) Resolve(ctx context.Context, ref reference.Named, creds *registry.Credentials) (ocispec.Descriptor, registry.Fetcher, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.resolves++
	if d, ok := ref.(reference.Digested); ok {
		b, ok := r.blobs[d.Digest()]
		if !ok {
			return ocispec.Descriptor{}, nil, fmt.Errorf("manifest %s: %w", d.Digest(), errdefs.ErrNotFound)
		}
		var probe docProbe
		_ = json.Unmarshal(b, &probe)
		return ocispec.Descriptor{MediaType: probe.MediaType, Digest: d.Digest(), Size: int64(len(b))}, r, nil
	}
	desc, ok := r.tags[ref.String()]
	if !ok {
		return ocispec.Descriptor{}, nil, fmt.Errorf("%s: %w", ref, errdefs.ErrNotFound)
	}
	return desc, r, nil
}

func (r *fakeRegistry) Fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	r.mu.Lock()
	r.fetches[desc.Digest]++
	gate := r.gate[desc.Digest]
	r.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	r.mu.Lock()
	b, ok := r.blobs[desc.Digest]
	if s, ok2 := r.serve[desc.Digest]; ok2 {
		b, ok = s, true
	}
	stallFetch := r.stallFetch[desc.Digest]
	stallAfter, stall := r.stallAfter[desc.Digest]
	slow := r.slow[desc.Digest]
	fail := r.failFetch[desc.Digest]
	r.mu.Unlock()
	if fail {
		return nil, fmt.Errorf("injected fetch failure of %s: %w", desc.Digest, errdefs.ErrUnavailable)
	}
	if stallFetch {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if !ok {
		return nil, fmt.Errorf("blob %s: %w", desc.Digest, errdefs.ErrNotFound)
	}
	body := &fakeBody{ctx: ctx, data: b, stallAt: -1, closed: make(chan struct{}), slow: slow}
	if stall {
		body.stallAt = stallAfter
	}
	return body, nil
}

func (r *fakeRegistry) fetchCount(d digest.Digest) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fetches[d]
}

func (r *fakeRegistry) resolveCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.resolves
}

// fakeBody is a response body that can stall or trickle like a slow
// registry. A Read in progress returns when the body is closed or its
// context ends, as an HTTP body does.
type fakeBody struct {
	ctx       context.Context
	data      []byte
	off       int
	stallAt   int
	slow      time.Duration
	closeOnce sync.Once
	closed    chan struct{}
}

func (b *fakeBody) Read(p []byte) (int, error) {
	if b.stallAt >= 0 && b.off >= b.stallAt {
		select {
		case <-b.closed:
			return 0, errors.New("read on closed body")
		case <-b.ctx.Done():
			return 0, b.ctx.Err()
		}
	}
	if b.slow > 0 {
		select {
		case <-time.After(b.slow):
		case <-b.closed:
			return 0, errors.New("read on closed body")
		}
		if len(p) > 64 {
			p = p[:64]
		}
	}
	if err := b.ctx.Err(); err != nil {
		return 0, err
	}
	if b.off >= len(b.data) {
		return 0, io.EOF
	}
	end := len(b.data)
	if b.stallAt >= 0 && end > b.stallAt {
		end = b.stallAt
	}
	n := copy(p, b.data[b.off:end])
	b.off += n
	return n, nil
}

func (b *fakeBody) Close() error {
	b.closeOnce.Do(func() { close(b.closed) })
	return nil
}

// snapshot is a committed layer in the fake unpacker.
type snapshot struct {
	parent string
	files  map[string]string
	size   int64
}

// fakeUnpacker keeps snapshots in memory. It reads the tar stream up to the
// end-of-archive marker only, as a real extractor does.
type fakeUnpacker struct {
	parallel bool

	mu        sync.Mutex
	snapshots map[string]*snapshot
	unpacks   []string // keys, in call order
	removes   []string // keys, in call order
	calls     int
	// failAt fails the n-th Unpack call (1-based) after reading some of it.
	failAt int
	// hook runs at the start of every Unpack with the call number.
	hook func(n int, key, parent string) error
}

func newFakeUnpacker(parallel bool) *fakeUnpacker {
	return &fakeUnpacker{parallel: parallel, snapshots: make(map[string]*snapshot)}
}

func (u *fakeUnpacker) ParallelUnpack() bool { return u.parallel }

func (u *fakeUnpacker) Unpack(ctx context.Context, key, parent string, r io.Reader) (int64, error) {
	u.mu.Lock()
	u.calls++
	n := u.calls
	u.unpacks = append(u.unpacks, key)
	hook, failAt := u.hook, u.failAt
	_, exists := u.snapshots[key]
	_, parentExists := u.snapshots[parent]
	u.mu.Unlock()
	if exists {
		return 0, fmt.Errorf("snapshot %s: %w", key, errdefs.ErrAlreadyExists)
	}
	if parent != "" && !u.parallel && !parentExists {
		return 0, fmt.Errorf("parent snapshot %s of %s is not committed: %w", parent, key, errdefs.ErrFailedPrecondition)
	}
	if hook != nil {
		if err := hook(n, key, parent); err != nil {
			return 0, err
		}
	}
	snap := &snapshot{parent: parent, files: make(map[string]string)}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, err
		}
		if n == failAt {
			return 0, fmt.Errorf("injected failure in unpack call %d", n)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return 0, err
		}
		snap.files[hdr.Name] = string(b)
		snap.size += hdr.Size
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.parallel && parent != "" && u.snapshots[parent] == nil {
		return 0, fmt.Errorf("parent snapshot %s vanished", parent)
	}
	u.snapshots[key] = snap
	return snap.size, nil
}

func (u *fakeUnpacker) Remove(ctx context.Context, key string) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.removes = append(u.removes, key)
	if _, ok := u.snapshots[key]; !ok {
		return fmt.Errorf("snapshot %s: %w", key, errdefs.ErrNotFound)
	}
	for k, s := range u.snapshots {
		if s.parent == key {
			return fmt.Errorf("snapshot %s has child %s: %w", key, k, errdefs.ErrFailedPrecondition)
		}
	}
	delete(u.snapshots, key)
	return nil
}

func (u *fakeUnpacker) keys() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Sorted(maps.Keys(u.snapshots))
}

func (u *fakeUnpacker) removed() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.removes)
}

func (u *fakeUnpacker) unpackCount() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.unpacks)
}

// layerSpec describes a test layer: its files and how it is packed.
type layerSpec struct {
	files     map[string]string
	mediaType string // default: OCI gzip
}

// imageSpec describes a test image.
type imageSpec struct {
	layers []layerSpec
	// docker selects Docker media types for the manifest and config.
	docker bool
	// configMod changes the config before it is serialized.
	configMod func(*ocispec.Image)
	// manifestMod changes the manifest document before it is serialized.
	manifestMod func(map[string]any)
	// platform goes into the config.
	platform ocispec.Platform
}

// fixture is an image pushed to a fakeRegistry.
type fixture struct {
	manifest   ocispec.Descriptor
	config     ocispec.Descriptor
	configData []byte
	manifestB  []byte
	layers     []ocispec.Descriptor
	diffIDs    []digest.Digest
}

func tarOf(t testing.TB, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, name := range slices.Sorted(maps.Keys(files)) {
		require.NoError(t, tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(files[name])), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}))
		_, err := tw.Write([]byte(files[name]))
		require.NoError(t, err)
	}
	require.NoError(t, tw.Close())
	return buf.Bytes()
}

func compress(t testing.TB, mediaType string, raw []byte) []byte {
	t.Helper()
	c, err := layerCompression(mediaType)
	require.NoError(t, err)
	var buf bytes.Buffer
	switch c {
	case compressionGzip:
		zw := gzip.NewWriter(&buf)
		_, err = zw.Write(raw)
		require.NoError(t, err)
		require.NoError(t, zw.Close())
	case compressionZstd:
		zw, err := zstd.NewWriter(&buf)
		require.NoError(t, err)
		_, err = zw.Write(raw)
		require.NoError(t, err)
		require.NoError(t, zw.Close())
	default:
		buf.Write(raw)
	}
	return buf.Bytes()
}

func (r *fakeRegistry) putBlob(b []byte) digest.Digest {
	d := digest.FromBytes(b)
	r.mu.Lock()
	r.blobs[d] = b
	r.mu.Unlock()
	return d
}

func (r *fakeRegistry) tag(t testing.TB, ref string, desc ocispec.Descriptor) {
	t.Helper()
	named, err := ParseRef(ref)
	require.NoError(t, err)
	r.mu.Lock()
	r.tags[named.String()] = desc
	r.mu.Unlock()
}

// build pushes the blobs, config and manifest of spec (without tagging).
func (r *fakeRegistry) build(t testing.TB, spec imageSpec) fixture {
	t.Helper()
	var f fixture
	for _, l := range spec.layers {
		mt := l.mediaType
		if mt == "" {
			mt = ocispec.MediaTypeImageLayerGzip
		}
		raw := tarOf(t, l.files)
		blob := compress(t, mt, raw)
		d := r.putBlob(blob)
		f.layers = append(f.layers, ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(blob))})
		f.diffIDs = append(f.diffIDs, digest.FromBytes(raw))
	}
	p := spec.platform
	if p.OS == "" {
		p = ocispec.Platform{OS: "linux", Architecture: "amd64"}
	}
	cfg := ocispec.Image{
		Platform: p,
		Config:   ocispec.ImageConfig{Env: []string{"PATH=/bin"}, Cmd: []string{"/bin/sh"}, Labels: map[string]string{"a": "b"}},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: slices.Clone(f.diffIDs)},
	}
	if spec.configMod != nil {
		spec.configMod(&cfg)
	}
	cfgB, err := json.Marshal(cfg)
	require.NoError(t, err)
	f.configData = cfgB
	cmt, mmt := ocispec.MediaTypeImageConfig, ocispec.MediaTypeImageManifest
	if spec.docker {
		cmt, mmt = mediaTypeDockerConfig, mediaTypeDockerManifest
	}
	f.config = ocispec.Descriptor{MediaType: cmt, Digest: r.putBlob(cfgB), Size: int64(len(cfgB))}
	doc := map[string]any{"schemaVersion": 2, "mediaType": mmt, "config": f.config, "layers": f.layers}
	if spec.manifestMod != nil {
		spec.manifestMod(doc)
	}
	mb, err := json.Marshal(doc)
	require.NoError(t, err)
	f.manifestB = mb
	f.manifest = ocispec.Descriptor{MediaType: mmt, Digest: r.putBlob(mb), Size: int64(len(mb))}
	return f
}

// push builds spec and tags it as ref.
func (r *fakeRegistry) push(t testing.TB, ref string, spec imageSpec) fixture {
	t.Helper()
	f := r.build(t, spec)
	r.tag(t, ref, f.manifest)
	return f
}

// randomText returns n reproducible letters that compress poorly.
func randomText(n int) string {
	r := rand.New(rand.NewPCG(1, uint64(n)))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + r.IntN(26))
	}
	return string(b)
}

// files is a short way to write a one-file layer.
func files(kv ...string) layerSpec {
	m := make(map[string]string)
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return layerSpec{files: m}
}

type testEnv struct {
	t    *testing.T
	root string
	reg  *fakeRegistry
	unp  *fakeUnpacker
	opts Options
	s    *Store
}

// newEnv opens a store on a temporary root with a fake registry and a fake
// (parallel) unpacker. mod may change the options first.
func newEnv(t *testing.T, mod func(*Options)) *testEnv {
	t.Helper()
	e := &testEnv{t: t, root: filepath.Join(t.TempDir(), "images"), reg: newFakeRegistry(), unp: newFakeUnpacker(true)}
	e.opts = Options{Root: e.root, Resolver: e.reg, Unpacker: e.unp, Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"}}
	if mod != nil {
		mod(&e.opts)
	}
	e.reopen()
	return e
}

// reopen opens a new Store on the same root, as a restart does.
func (e *testEnv) reopen() {
	e.t.Helper()
	if e.s != nil {
		e.s.pulls.wait()
	}
	s, err := New(testCtx(e.t), e.opts)
	require.NoError(e.t, err)
	e.s = s
	e.t.Cleanup(s.pulls.wait)
}

func (e *testEnv) pull(ref string) (Image, error) {
	return e.s.Pull(testCtx(e.t), ref, nil)
}

func (e *testEnv) mustPull(ref string) Image {
	e.t.Helper()
	img, err := e.pull(ref)
	require.NoError(e.t, err)
	return img
}

func (e *testEnv) path(parts ...string) string {
	return filepath.Join(append([]string{e.root}, parts...)...)
}

func (e *testEnv) read(parts ...string) string {
	e.t.Helper()
	b, err := os.ReadFile(e.path(parts...))
	require.NoError(e.t, err)
	return string(b)
}

func (e *testEnv) list(parts ...string) []string {
	e.t.Helper()
	entries, err := os.ReadDir(e.path(parts...))
	require.NoError(e.t, err)
	var out []string
	for _, en := range entries {
		out = append(out, en.Name())
	}
	sort.Strings(out)
	return out
}

// checkConsistent asserts the store's invariants on disk and in the fake
// unpacker: every layer's parent is in layerdb, every image's layers are,
// every snapshot belongs to a layer (or the pull in flight) and the other
// way round, tmp/ is empty, every reference names an image.
func (e *testEnv) checkConsistent() {
	e.t.Helper()
	t := e.t
	cacheIDs := map[string]bool{}
	for _, c := range e.list("layerdb", "sha256") {
		chain := digest.NewDigestFromEncoded(digest.SHA256, c)
		l, err := e.s.readLayer(chain)
		require.NoError(t, err, "layer %s", c)
		if l.Parent != "" {
			require.DirExists(t, e.s.layerDir(l.Parent), "parent of %s", c)
		}
		cacheIDs[l.CacheID] = true
	}
	require.Equal(t, slices.Sorted(maps.Keys(cacheIDs)), e.unp.keys(), "snapshots vs layerdb cache-ids")
	require.Equal(t, cacheIDs, e.s.CacheIDs())
	require.Empty(t, e.list("tmp"), "tmp/")
	for _, id := range e.list("imagedb", "content", "sha256") {
		rec, err := e.s.readImage(digest.NewDigestFromEncoded(digest.SHA256, id))
		require.NoError(t, err, "image %s", id)
		for _, c := range rec.chain {
			require.DirExists(t, e.s.layerDir(c))
		}
	}
	repos, err := e.s.readRepos()
	require.NoError(t, err)
	for _, refs := range repos.Repositories {
		for ref, id := range refs {
			require.FileExists(t, e.s.contentPath(id), "image of %s", ref)
		}
	}
}

// testCtx is a context whose logger writes to the test's log.
func testCtx(t testing.TB) context.Context {
	h := slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})
	return log.WithLogger(context.Background(), slog.New(h))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
