package imagestore

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// writeLayerEntry writes a layerdb entry by hand, leaving out the files
// named in omit, and gives it a snapshot in the fake unpacker.
func (e *testEnv) writeLayerEntry(l Layer, omit ...string) {
	e.t.Helper()
	dir := e.s.layerDir(l.ChainID)
	require.NoError(e.t, os.MkdirAll(dir, 0o700))
	for name, data := range map[string]string{
		diffFile: l.DiffID.String(), sizeFile: strconv.FormatInt(l.Size, 10), cacheIDFile: l.CacheID, parentFile: l.Parent.String(),
	} {
		if slices.Contains(omit, name) || (name == parentFile && l.Parent == "") {
			continue
		}
		require.NoError(e.t, os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600))
	}
	e.unp.mu.Lock()
	e.unp.snapshots[l.CacheID] = &snapshot{files: map[string]string{}}
	e.unp.mu.Unlock()
}

func cacheIDFor(s string) string { return digest.FromString("cache " + s).Encoded() }

func TestRecoveryDropsWhatACrashLeft(t *testing.T) {
	e := newEnv(t, nil)
	f := e.reg.push(t, "app", imageSpec{layers: []layerSpec{files("a", "1"), files("b", "2")}})
	app := e.mustPull("app")

	write := func(data string, parts ...string) {
		require.NoError(t, os.MkdirAll(filepath.Dir(e.path(parts...)), 0o700))
		require.NoError(t, os.WriteFile(e.path(parts...), []byte(data), 0o600))
	}
	// tmp/ leftovers.
	write("junk", "tmp", "file-123")
	write("sha256:x", "tmp", "layer-456", "diff")

	// A layer missing its cache-id; one whose parent is missing; one whose
	// files do not hash to its name; one nobody uses (a failed pull's).
	d1, d2, d3 := digest.FromString("d1"), digest.FromString("d2"), digest.FromString("d3")
	noCache := Layer{ChainID: d1, DiffID: d1, Size: 1, CacheID: cacheIDFor("no cache-id")}
	e.writeLayerEntry(noCache, cacheIDFile)
	orphanParent := digest.FromString("gone")
	orphan := Layer{ChainID: ChainIDs([]digest.Digest{orphanParent, d2})[1], DiffID: d2, Parent: orphanParent, Size: 2, CacheID: cacheIDFor("orphan")}
	e.writeLayerEntry(orphan)
	orphanChild := Layer{ChainID: ChainIDs([]digest.Digest{orphan.ChainID, d3})[1], DiffID: d3, Parent: orphan.ChainID, Size: 3, CacheID: cacheIDFor("orphan child")}
	e.writeLayerEntry(orphanChild)
	wrongName := Layer{ChainID: digest.FromString("not the chain-id"), DiffID: d3, Size: 3, CacheID: cacheIDFor("wrong name")}
	e.writeLayerEntry(wrongName)
	unused := Layer{ChainID: d2, DiffID: d2, Size: 2, CacheID: cacheIDFor("unused")}
	e.writeLayerEntry(unused)
	write("x", "layerdb", "sha256", "not-a-digest")

	// An image config without metadata, one with a missing layer, metadata
	// without a config.
	cfg := func(diffIDs ...digest.Digest) []byte {
		b, err := json.Marshal(ocispec.Image{RootFS: ocispec.RootFS{Type: "layers", DiffIDs: diffIDs}})
		require.NoError(t, err)
		return b
	}
	noMeta := cfg(f.diffIDs[0])
	noMetaID := digest.FromBytes(noMeta)
	write(string(noMeta), "imagedb", "content", "sha256", noMetaID.Encoded())
	missingLayer := cfg(f.diffIDs[0], digest.FromString("never pulled"))
	missingLayerID := digest.FromBytes(missingLayer)
	write(string(missingLayer), "imagedb", "content", "sha256", missingLayerID.Encoded())
	require.NoError(t, e.s.writeMeta(missingLayerID, imageMeta{RepoDigests: []string{"docker.io/library/broken@" + digest.FromString("m").String()}}))
	strayMeta := digest.FromString("stray")
	require.NoError(t, e.s.writeMeta(strayMeta, imageMeta{}))
	badConfig := "not the config of its name"
	write(badConfig, "imagedb", "content", "sha256", digest.FromString("other").Encoded())

	// References to a missing image and a malformed one.
	var repos map[string]map[string]map[string]string
	require.NoError(t, json.Unmarshal([]byte(e.read("repositories.json")), &repos))
	repos["Repositories"]["docker.io/library/ghost"] = map[string]string{"docker.io/library/ghost:latest": digest.FromString("ghost").String()}
	repos["Repositories"]["docker.io/library/app"]["Bad Ref"] = app.ID.String()
	b, err := json.Marshal(repos)
	require.NoError(t, err)
	write(string(b), "repositories.json")

	// A blob no image lists, a stale diff-id record, an interrupted atomic
	// write.
	write("{}", "blobs", "sha256", digest.FromString("{}").Encoded())
	write(digest.FromString("gone").String(), "distribution", "diffid-by-digest", "sha256", digest.FromString("blob").Encoded())
	write("{", ".tmp-repositories.json-123")
	write("{", "imagedb", "metadata", "sha256", app.ID.Encoded(), ".tmp-metadata.json-9")

	e.unp.removes = nil
	e.reopen()

	// The good image is intact.
	got, err := e.s.Get(testCtx(t), "app")
	require.NoError(t, err)
	assert.Equal(t, app.Layers, got.Layers)
	assert.Equal(t, app.RepoTags, got.RepoTags)
	assert.Equal(t, app.RepoDigests, got.RepoDigests)
	assert.Len(t, e.s.List(testCtx(t)), 1)

	// Everything else is gone.
	assert.ElementsMatch(t, []string{app.Layers[0].ChainID.Encoded(), app.Layers[1].ChainID.Encoded()}, e.list("layerdb", "sha256"))
	assert.ElementsMatch(t, []string{orphanChild.CacheID, orphan.CacheID, wrongName.CacheID, unused.CacheID}, e.unp.removed(),
		"the snapshots of dropped layers are removed (the one without cache-id is the daemon's sweep's)")
	assert.Less(t, slices.Index(e.unp.removed(), orphanChild.CacheID), slices.Index(e.unp.removed(), orphan.CacheID), "top down")
	assert.Equal(t, []string{app.ID.Encoded()}, e.list("imagedb", "content", "sha256"))
	assert.Equal(t, []string{app.ID.Encoded()}, e.list("imagedb", "metadata", "sha256"))
	assert.Equal(t, []string{metadataFile}, e.list("imagedb", "metadata", "sha256", app.ID.Encoded()))
	assert.ElementsMatch(t, []string{f.manifest.Digest.Encoded(), f.config.Digest.Encoded()}, e.list("blobs", "sha256"))
	assert.ElementsMatch(t, []string{f.layers[0].Digest.Encoded(), f.layers[1].Digest.Encoded()}, e.list("distribution", "diffid-by-digest", "sha256"))
	assert.JSONEq(t, `{"Repositories":{"docker.io/library/app":{
		"docker.io/library/app:latest":"`+app.ID.String()+`",
		"docker.io/library/app@`+f.manifest.Digest.String()+`":"`+app.ID.String()+`"}}}`, e.read("repositories.json"))
	assert.Equal(t, []string{"VERSION", "blobs", "distribution", "imagedb", "layerdb", "repositories.json", "tmp"}, e.list())

	// The daemon's sweep removes the snapshot no layer owns.
	for _, k := range e.unp.keys() {
		if !e.s.CacheIDs()[k] {
			require.NoError(t, e.unp.Remove(testCtx(t), k))
		}
	}
	e.checkConsistent()

	// Pulls work again.
	e.reg.push(t, "other", imageSpec{layers: []layerSpec{files("a", "1"), files("c", "3")}})
	other := e.mustPull("other")
	assert.Equal(t, app.Layers[0], other.Layers[0])
	e.mustPull("app")
	e.checkConsistent()
}

func TestRecoveryRestoresLostRepoDigests(t *testing.T) {
	for _, content := range []string{`{"Repositories":{}}`, "garbage{"} {
		t.Run(content, func(t *testing.T) {
			e := newEnv(t, nil)
			f := e.reg.push(t, "app", imageSpec{layers: []layerSpec{files("a", "1")}})
			app := e.mustPull("app")
			// A crash between the metadata and repositories.json, or a torn
			// file nothing should produce.
			require.NoError(t, os.WriteFile(e.path("repositories.json"), []byte(content), 0o600))
			e.reopen()
			got, err := e.s.Get(testCtx(t), "app@"+f.manifest.Digest.String())
			require.NoError(t, err)
			assert.Equal(t, app.ID, got.ID)
			assert.Empty(t, got.RepoTags, "the tag is lost, the digest is not")
			assert.JSONEq(t, `{"Repositories":{"docker.io/library/app":{
				"docker.io/library/app@`+f.manifest.Digest.String()+`":"`+app.ID.String()+`"}}}`, e.read("repositories.json"))
			_, err = e.s.Get(testCtx(t), "app")
			assert.True(t, errdefs.IsNotFound(err))
			e.checkConsistent()
		})
	}
}

func TestRecoveryAfterCrashMidRemove(t *testing.T) {
	e := newEnv(t, nil)
	e.reg.push(t, "app", imageSpec{layers: []layerSpec{files("a", "1"), files("b", "2")}})
	app := e.mustPull("app")
	// Remove moves the metadata out first; a crash right after leaves the
	// config, the references and the layers.
	require.NoError(t, os.RemoveAll(e.s.metadataDir(app.ID)))
	e.reopen()
	assert.Empty(t, e.s.List(testCtx(t)))
	assert.Empty(t, e.list("layerdb", "sha256"))
	assert.Empty(t, e.list("imagedb", "content", "sha256"))
	assert.JSONEq(t, `{"Repositories":{}}`, e.read("repositories.json"))
	assert.Empty(t, e.unp.keys())
	e.checkConsistent()
}

// TestFailureAtEveryStep fails a pull at each fetch and each unpack in
// turn, checks that it left nothing but whole layers, restarts the store
// and pulls again.
func TestFailureAtEveryStep(t *testing.T) {
	spec := imageSpec{layers: []layerSpec{files("a", "1"), files("b", "2"), files("c", "3"), files("d", "4")}}
	probe := newFakeRegistry().build(t, spec)
	type step struct {
		name  string
		apply func(e *testEnv)
	}
	var steps []step
	for _, d := range append([]digest.Digest{probe.manifest.Digest, probe.config.Digest}, digestsOf(probe.layers)...) {
		steps = append(steps, step{"fetch " + d.Encoded()[:8], func(e *testEnv) { e.reg.failFetch[d] = true }})
	}
	for n := 1; n <= len(spec.layers); n++ {
		steps = append(steps, step{fmt.Sprintf("unpack %d", n), func(e *testEnv) { e.unp.failAt = n }})
		steps = append(steps, step{fmt.Sprintf("unpack %d refused", n), func(e *testEnv) {
			e.unp.hook = func(call int, key, parent string) error {
				if call == n {
					return fmt.Errorf("injected: %w", errdefs.ErrUnavailable)
				}
				return nil
			}
		}})
	}
	for _, st := range steps {
		for _, parallel := range []bool{true, false} {
			t.Run(st.name+map[bool]string{true: "", false: "/sequential"}[parallel], func(t *testing.T) {
				e := newEnv(t, func(o *Options) { o.MaxConcurrentDownloads = 2 })
				e.unp.parallel = parallel
				f := e.reg.push(t, "app", spec)
				st.apply(e)
				_, err := e.pull("app")
				require.Error(t, err)
				assert.Empty(t, e.s.List(testCtx(t)))
				e.checkConsistent()

				// Restart: the layers the failed pull recorded are unused
				// and go.
				e.unp.failAt, e.unp.hook = 0, nil
				clear(e.reg.failFetch)
				e.reopen()
				assert.Empty(t, e.list("layerdb", "sha256"))
				assert.Empty(t, e.unp.keys())
				e.checkConsistent()

				img := e.mustPull("app")
				assert.Equal(t, f.config.Digest, img.ID)
				require.Len(t, img.Layers, 4)
				e.checkConsistent()
			})
		}
	}
}

// TestRetryReusesRecordedLayers checks that the layers a failed pull
// recorded serve the retry without a restart.
func TestRetryReusesRecordedLayers(t *testing.T) {
	e := newEnv(t, nil)
	e.unp.parallel = false
	f := e.reg.push(t, "app", imageSpec{layers: []layerSpec{files("a", "1"), files("b", "2"), files("c", "3")}})
	// The top layer fails once the two below it are recorded.
	open := e.reg.gateFetch(f.layers[2].Digest)
	go func() {
		if !poll(func() bool {
			entries, _ := os.ReadDir(e.path("layerdb", "sha256"))
			return len(entries) == 2
		}) {
			t.Error("the two bottom layers were not recorded")
		}
		e.reg.mu.Lock()
		e.reg.failFetch[f.layers[2].Digest] = true
		e.reg.mu.Unlock()
		open()
	}()
	_, err := e.pull("app")
	require.Error(t, err)
	assert.True(t, errdefs.IsUnavailable(err))
	recorded := len(e.list("layerdb", "sha256"))
	assert.Equal(t, 2, recorded, "the two layers below the failure are recorded")
	e.checkConsistent()

	e.reg.mu.Lock()
	clear(e.reg.failFetch)
	e.reg.mu.Unlock()
	img := e.mustPull("app")
	assert.Len(t, img.Layers, 3)
	assert.Equal(t, 1, e.reg.fetchCount(f.layers[0].Digest), "recorded layers are not fetched again")
	assert.Equal(t, 1, e.reg.fetchCount(f.layers[1].Digest))
	assert.Equal(t, 3, e.unp.unpackCount())
	e.checkConsistent()
}

func digestsOf(descs []ocispec.Descriptor) []digest.Digest {
	var out []digest.Digest
	for _, d := range descs {
		out = append(out, d.Digest)
	}
	return out
}

func TestRemoveReclaimsLayersFailedPullsLeft(t *testing.T) {
	e := newEnv(t, nil)
	e.reg.push(t, "keep", imageSpec{layers: []layerSpec{files("k", "1")}})
	keep := e.mustPull("keep")
	e.reg.push(t, "gone", imageSpec{layers: []layerSpec{files("g", "1")}})
	e.mustPull("gone")

	f := e.reg.push(t, "broken", imageSpec{layers: []layerSpec{files("a", "1"), files("b", "2")}})
	// The top layer fails once the bottom one is recorded.
	open := e.reg.gateFetch(f.layers[1].Digest)
	go func() {
		if !poll(func() bool {
			entries, _ := os.ReadDir(e.path("layerdb", "sha256"))
			return len(entries) == 3
		}) {
			t.Error("the bottom layer was not recorded")
		}
		e.reg.mu.Lock()
		e.reg.failFetch[f.layers[1].Digest] = true
		e.reg.mu.Unlock()
		open()
	}()
	_, err := e.pull("broken")
	require.Error(t, err)
	require.Len(t, e.list("layerdb", "sha256"), 3, "the failed pull's bottom layer stays for a retry")
	e.checkConsistent()

	require.NoError(t, e.s.Remove(testCtx(t), "gone"))
	assert.ElementsMatch(t, []string{keep.Layers[0].ChainID.Encoded()}, e.list("layerdb", "sha256"),
		"the removed image's layer and the failed pull's are both freed")
	assert.Len(t, e.unp.removed(), 2)
	e.checkConsistent()
}

func TestCommitFailureRollsBackImageFiles(t *testing.T) {
	e := newEnv(t, nil)
	f := e.reg.push(t, "app", imageSpec{layers: []layerSpec{files("a", "1")}})
	// Make the metadata write fail: its directory is a file.
	metaDir := e.path("imagedb", "metadata", "sha256")
	require.NoError(t, os.Remove(metaDir))
	require.NoError(t, os.WriteFile(metaDir, nil, 0o600))

	_, err := e.pull("app")
	require.ErrorContains(t, err, "write metadata of image "+f.config.Digest.String())
	assert.Empty(t, e.s.List(testCtx(t)))
	assert.Empty(t, e.list("blobs", "sha256"), "blobs written by the failed commit are removed")
	assert.Empty(t, e.list("imagedb", "content", "sha256"))
	assert.Len(t, e.list("layerdb", "sha256"), 1, "the recorded layer stays for a retry")
	_, err = os.Stat(e.path("repositories.json"))
	assert.True(t, os.IsNotExist(err), "repositories.json untouched")

	require.NoError(t, os.Remove(metaDir))
	require.NoError(t, os.Mkdir(metaDir, 0o700))
	img := e.mustPull("app")
	assert.Equal(t, f.config.Digest, img.ID)
	assert.Equal(t, 1, e.unp.unpackCount(), "the retry reused the recorded layer")
	e.checkConsistent()
}
