package imagestore

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSharedLayersAreStoredOnceAndRefcounted(t *testing.T) {
	e := newEnv(t, nil)
	base := []layerSpec{files("base", "1"), files("lib", "2")}
	fa := e.reg.push(t, "a", imageSpec{layers: append(slices.Clone(base), files("app", "A"))})
	fb := e.reg.push(t, "b", imageSpec{layers: append(slices.Clone(base), files("app", "B"))})

	a := e.mustPull("a")
	b := e.mustPull("b")
	require.Len(t, a.Layers, 3)
	require.Len(t, b.Layers, 3)
	assert.Equal(t, a.Layers[:2], b.Layers[:2], "shared layers are the same records")
	assert.NotEqual(t, a.Layers[2].CacheID, b.Layers[2].CacheID)
	for i := 0; i < 2; i++ {
		assert.Equal(t, fa.layers[i].Digest, fb.layers[i].Digest)
		assert.Equal(t, 1, e.reg.fetchCount(fa.layers[i].Digest), "shared layer %d fetched again", i)
	}
	assert.Equal(t, 4, e.unp.unpackCount())
	assert.Len(t, e.list("layerdb", "sha256"), 4)
	_, n := e.s.Usage()
	assert.Equal(t, 4, n)

	require.NoError(t, e.s.Remove(testCtx(t), "a"))
	assert.Equal(t, []string{a.Layers[2].CacheID}, e.unp.removed(), "only A's own layer is freed")
	assert.NoDirExists(t, e.s.layerDir(a.Layers[2].ChainID))
	for _, l := range b.Layers {
		assert.DirExists(t, e.s.layerDir(l.ChainID))
	}
	e.checkConsistent()

	// A restart rebuilds the counts from imagedb.
	e.reopen()
	require.NoError(t, e.s.Remove(testCtx(t), "b"))
	assert.Equal(t, []string{a.Layers[2].CacheID, b.Layers[2].CacheID, b.Layers[1].CacheID, b.Layers[0].CacheID}, e.unp.removed(),
		"B's layers are freed top down")
	assert.Empty(t, e.unp.keys())
	assert.Empty(t, e.list("layerdb", "sha256"))
	assert.Empty(t, e.list("blobs", "sha256"))
	assert.Empty(t, e.list("imagedb", "content", "sha256"))
	assert.Empty(t, e.list("imagedb", "metadata", "sha256"))
	assert.JSONEq(t, `{"Repositories":{}}`, e.read("repositories.json"))
	bytes, n := e.s.Usage()
	assert.Zero(t, bytes)
	assert.Zero(t, n)
	e.checkConsistent()
}

func TestRemoveByAnyReferenceRemovesTheWholeImage(t *testing.T) {
	for _, form := range []string{"id", "id without algorithm", "short id", "tag", "other tag", "digest", "familiar digest"} {
		t.Run(form, func(t *testing.T) {
			e := newEnv(t, nil)
			f := e.reg.push(t, "busybox:1.36", imageSpec{layers: []layerSpec{files("a", "b")}})
			e.reg.tag(t, "busybox:latest", f.manifest)
			e.mustPull("busybox:1.36")
			img := e.mustPull("busybox")
			assert.Equal(t, []string{"docker.io/library/busybox:1.36", "docker.io/library/busybox:latest"}, img.RepoTags)
			assert.Equal(t, []string{"docker.io/library/busybox@" + f.manifest.Digest.String()}, img.RepoDigests)

			ref := map[string]string{
				"id":                   img.ID.String(),
				"id without algorithm": img.ID.Encoded(),
				"short id":             img.ID.Encoded()[:12],
				"tag":                  "busybox:latest",
				"other tag":            "docker.io/library/busybox:1.36",
				"digest":               "docker.io/library/busybox@" + f.manifest.Digest.String(),
				"familiar digest":      "busybox@" + f.manifest.Digest.String(),
			}[form]
			require.NoError(t, e.s.Remove(testCtx(t), ref))
			for _, r := range []string{img.ID.String(), "busybox", "busybox:1.36", "busybox@" + f.manifest.Digest.String()} {
				_, err := e.s.Get(testCtx(t), r)
				assert.True(t, errdefs.IsNotFound(err), "Get(%s) after Remove: %v", r, err)
			}
			assert.Empty(t, e.s.List(testCtx(t)))
			assert.Empty(t, e.unp.keys())

			err := e.s.Remove(testCtx(t), ref)
			assert.True(t, errdefs.IsNotFound(err), "second Remove: %v", err)
			e.checkConsistent()
		})
	}
}

func TestGet(t *testing.T) {
	e := newEnv(t, nil)
	f := e.reg.push(t, "registry.k8s.io/pause:3.10", imageSpec{layers: []layerSpec{files("pause", "p")}})
	img := e.mustPull("registry.k8s.io/pause:3.10")
	for _, ref := range []string{
		img.ID.String(),
		img.ID.Encoded(),
		img.ID.Encoded()[:12],
		"sha256:" + img.ID.Encoded()[:12],
		"registry.k8s.io/pause:3.10",
		"registry.k8s.io/pause@" + f.manifest.Digest.String(),
		"registry.k8s.io/pause:3.10@" + f.manifest.Digest.String(),
		"registry.k8s.io/pause:other@" + f.manifest.Digest.String(), // the digest wins
	} {
		got, err := e.s.Get(testCtx(t), ref)
		require.NoError(t, err, ref)
		assert.Equal(t, img.ID, got.ID, ref)
	}
	for _, ref := range []string{
		"registry.k8s.io/pause:3.9",
		"registry.k8s.io/pause", // :latest was never pulled
		"pause:3.10",            // docker.io/library/pause
		"sha256:" + strings.Repeat("0", 64),
		strings.Repeat("0", 64),
		"0000000000",
		"registry.k8s.io/pause@" + digest.FromString("x").String(),
		"Not A Reference",
	} {
		_, err := e.s.Get(testCtx(t), ref)
		assert.True(t, errdefs.IsNotFound(err), "Get(%q): %v", ref, err)
	}
	_, err := e.s.Get(testCtx(t), "")
	assert.True(t, errdefs.IsInvalidArgument(err), "Get(\"\"): %v", err)

	// Callers get copies.
	got, err := e.s.Get(testCtx(t), img.ID.String())
	require.NoError(t, err)
	got.Config.Config.Env[0] = "changed"
	got.RepoTags[0] = "changed"
	again, err := e.s.Get(testCtx(t), img.ID.String())
	require.NoError(t, err)
	assert.Equal(t, "PATH=/bin", again.Config.Config.Env[0])
	assert.Equal(t, "registry.k8s.io/pause:3.10", again.RepoTags[0])
}

func TestShortIDs(t *testing.T) {
	e := newEnv(t, nil)
	// Push images until two IDs share their first hex digit.
	byFirst := map[byte]digest.Digest{}
	var a, b digest.Digest
	for i := 0; a == ""; i++ {
		ref := fmt.Sprintf("img%d", i)
		e.reg.push(t, ref, imageSpec{layers: []layerSpec{files("f", ref)}})
		id := e.mustPull(ref).ID
		if other, ok := byFirst[id.Encoded()[0]]; ok {
			a, b = other, id
		}
		byFirst[id.Encoded()[0]] = id
	}
	_, err := e.s.Get(testCtx(t), a.Encoded()[:1])
	assert.True(t, errdefs.IsInvalidArgument(err), "ambiguous prefix: %v", err)
	assert.ErrorContains(t, err, "ambiguous")
	err = e.s.Remove(testCtx(t), a.Encoded()[:1])
	assert.True(t, errdefs.IsInvalidArgument(err), "Remove with an ambiguous prefix: %v", err)

	n := 1
	for a.Encoded()[:n] == b.Encoded()[:n] {
		n++
	}
	got, err := e.s.Get(testCtx(t), a.Encoded()[:n])
	require.NoError(t, err)
	assert.Equal(t, a, got.ID)
}

func TestListIsSorted(t *testing.T) {
	e := newEnv(t, nil)
	var ids []digest.Digest
	for i := 0; i < 5; i++ {
		ref := fmt.Sprintf("img%d", i)
		e.reg.push(t, ref, imageSpec{layers: []layerSpec{files("f", ref)}})
		ids = append(ids, e.mustPull(ref).ID)
	}
	slices.Sort(ids)
	var got []digest.Digest
	for _, img := range e.s.List(testCtx(t)) {
		got = append(got, img.ID)
	}
	assert.Equal(t, ids, got)
}

func TestPinned(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.PinnedImages = []string{"registry.k8s.io/pause:3.10", "other"} })
	e.reg.push(t, "registry.k8s.io/pause:3.10", imageSpec{layers: []layerSpec{files("pause", "p")}})
	e.reg.push(t, "busybox", imageSpec{layers: []layerSpec{files("sh", "s")}})
	pause := e.mustPull("registry.k8s.io/pause:3.10")
	busybox := e.mustPull("busybox")
	assert.True(t, pause.Pinned)
	assert.False(t, busybox.Pinned)
	got, err := e.s.Get(testCtx(t), pause.ID.String())
	require.NoError(t, err)
	assert.True(t, got.Pinned)

	// Pinned by digest.
	e2 := newEnv(t, func(o *Options) { o.PinnedImages = []string{"registry.k8s.io/pause@" + pause.ManifestDigest.String()} })
	e2.reg = e.reg
	e2.opts.Resolver = e.reg
	e2.reopen()
	assert.True(t, e2.mustPull("registry.k8s.io/pause:3.10").Pinned)

	_, err = New(testCtx(t), Options{Root: t.TempDir(), Resolver: e.reg, Unpacker: e.unp, PinnedImages: []string{"Bad Ref"}})
	assert.True(t, errdefs.IsInvalidArgument(err), "bad pinned image: %v", err)
}

func TestTagMovesToTheNewImage(t *testing.T) {
	e := newEnv(t, nil)
	e.reg.push(t, "app", imageSpec{layers: []layerSpec{files("v", "1")}})
	old := e.mustPull("app")
	e.reg.push(t, "app", imageSpec{layers: []layerSpec{files("v", "2")}})
	cur := e.mustPull("app")
	require.NotEqual(t, old.ID, cur.ID)

	oldNow, err := e.s.Get(testCtx(t), old.ID.String())
	require.NoError(t, err)
	assert.Empty(t, oldNow.RepoTags, "the tag left the old image")
	assert.Equal(t, old.RepoDigests, oldNow.RepoDigests, "the old image keeps its digest")
	assert.Equal(t, []string{"docker.io/library/app:latest"}, cur.RepoTags)
	got, err := e.s.Get(testCtx(t), "app")
	require.NoError(t, err)
	assert.Equal(t, cur.ID, got.ID)

	// Re-pulling the same image is cheap: no layer is fetched again.
	before := e.unp.unpackCount()
	again := e.mustPull("app")
	assert.Equal(t, cur.ID, again.ID)
	assert.Equal(t, before, e.unp.unpackCount())
	assert.False(t, again.Pulled.Before(cur.Pulled))
	e.checkConsistent()
}

func TestNewRefusesUnusableRoots(t *testing.T) {
	reg, unp := newFakeRegistry(), newFakeUnpacker(true)
	t.Run("newer version", func(t *testing.T) {
		root := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(root, "VERSION"), []byte("2"), 0o600))
		_, err := New(testCtx(t), Options{Root: root, Resolver: reg, Unpacker: unp})
		require.Error(t, err)
		assert.True(t, errdefs.IsFailedPrecondition(err), "%v", err)
		assert.ErrorContains(t, err, "format version 2, newer than the 1 this crid supports")
	})
	t.Run("garbage version", func(t *testing.T) {
		root := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(root, "VERSION"), []byte("v1.0"), 0o600))
		_, err := New(testCtx(t), Options{Root: root, Resolver: reg, Unpacker: unp})
		assert.ErrorContains(t, err, `unknown format version "v1.0"`)
	})
	t.Run("root is a file", func(t *testing.T) {
		root := filepath.Join(t.TempDir(), "file")
		require.NoError(t, os.WriteFile(root, nil, 0o600))
		_, err := New(testCtx(t), Options{Root: root, Resolver: reg, Unpacker: unp})
		assert.Error(t, err)
	})
	t.Run("missing dependencies", func(t *testing.T) {
		_, err := New(testCtx(t), Options{Root: t.TempDir()})
		assert.True(t, errdefs.IsInvalidArgument(err), "%v", err)
		_, err = New(testCtx(t), Options{Resolver: reg, Unpacker: unp})
		assert.True(t, errdefs.IsInvalidArgument(err), "%v", err)
	})
	t.Run("version 1 with a newline is accepted", func(t *testing.T) {
		root := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(root, "VERSION"), []byte("1\n"), 0o600))
		_, err := New(testCtx(t), Options{Root: root, Resolver: reg, Unpacker: unp})
		assert.NoError(t, err)
	})
}

func TestDefaults(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Platform.OS, o.Platform.Architecture = "", "" })
	assert.Equal(t, DefaultMaxConcurrentDownloads, e.s.opts.MaxConcurrentDownloads)
	assert.Equal(t, DefaultProgressTimeout, e.s.opts.ProgressTimeout)
	assert.Equal(t, int64(DefaultMaxLayerSize), e.s.opts.MaxLayerSize)
	assert.Equal(t, int64(DefaultMaxManifestSize), e.s.opts.MaxManifestSize)
	assert.Equal(t, int64(DefaultMaxConfigSize), e.s.opts.MaxConfigSize)
	assert.Equal(t, normalizePlatform(DefaultPlatform()), e.s.platform)
}
