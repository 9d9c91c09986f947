package imagestore

import (
	"encoding/json"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPullLayoutOnDisk(t *testing.T) {
	e := newEnv(t, nil)
	f := e.reg.push(t, "busybox:latest", imageSpec{layers: []layerSpec{
		files("bin/sh", "shell", "etc/passwd", "root:x:0:0"),
		files("etc/hosts", "127.0.0.1 localhost"),
	}})
	before := time.Now().UTC()
	img := e.mustPull("busybox")

	id := f.config.Digest
	chain := ChainIDs(f.diffIDs)
	assert.Equal(t, id, img.ID)
	assert.Equal(t, []string{"docker.io/library/busybox:latest"}, img.RepoTags)
	assert.Equal(t, []string{"docker.io/library/busybox@" + f.manifest.Digest.String()}, img.RepoDigests)
	assert.Equal(t, f.manifest.Digest, img.ManifestDigest)
	assert.Equal(t, []string{"PATH=/bin"}, img.Config.Config.Env)
	assert.Equal(t, f.diffIDs, img.Config.RootFS.DiffIDs)
	assert.False(t, img.Pinned)
	assert.False(t, img.Pulled.Before(before.Add(-time.Second)))
	require.Len(t, img.Layers, 2)
	assert.Equal(t, int64(len("shell")+len("root:x:0:0")+len("127.0.0.1 localhost")), img.Size)

	// VERSION, blobs, repositories.json.
	assert.Equal(t, "1", e.read("VERSION"))
	assert.ElementsMatch(t, []string{f.config.Digest.Encoded(), f.manifest.Digest.Encoded()}, e.list("blobs", "sha256"))
	assert.Equal(t, string(f.manifestB), e.read("blobs", "sha256", f.manifest.Digest.Encoded()))
	assert.Equal(t, string(f.configData), e.read("blobs", "sha256", f.config.Digest.Encoded()))
	assert.JSONEq(t, `{"Repositories":{"docker.io/library/busybox":{
		"docker.io/library/busybox:latest":"`+id.String()+`",
		"docker.io/library/busybox@`+f.manifest.Digest.String()+`":"`+id.String()+`"}}}`, e.read("repositories.json"))

	// imagedb.
	assert.Equal(t, []string{id.Encoded()}, e.list("imagedb", "content", "sha256"))
	assert.Equal(t, string(f.configData), e.read("imagedb", "content", "sha256", id.Encoded()))
	var meta map[string]any
	require.NoError(t, json.Unmarshal([]byte(e.read("imagedb", "metadata", "sha256", id.Encoded(), "metadata.json")), &meta))
	assert.Equal(t, float64(1), meta["version"])
	assert.Equal(t, f.manifest.Digest.String(), meta["manifestDigest"])
	assert.Equal(t, []any{"docker.io/library/busybox@" + f.manifest.Digest.String()}, meta["repoDigests"])
	assert.ElementsMatch(t, []any{f.manifest.Digest.String(), f.config.Digest.String()}, meta["blobs"])
	pulled, err := time.Parse(time.RFC3339Nano, meta["pulled"].(string))
	require.NoError(t, err)
	assert.True(t, pulled.Equal(img.Pulled))

	// layerdb, in Docker's formats.
	assert.ElementsMatch(t, []string{chain[0].Encoded(), chain[1].Encoded()}, e.list("layerdb", "sha256"))
	l0, l1 := chain[0].Encoded(), chain[1].Encoded()
	assert.Equal(t, []string{"cache-id", "diff", "size"}, e.list("layerdb", "sha256", l0))
	assert.Equal(t, []string{"cache-id", "diff", "parent", "size"}, e.list("layerdb", "sha256", l1))
	assert.Equal(t, f.diffIDs[0].String(), e.read("layerdb", "sha256", l0, "diff"))
	assert.Equal(t, f.diffIDs[1].String(), e.read("layerdb", "sha256", l1, "diff"))
	assert.Equal(t, chain[0].String(), e.read("layerdb", "sha256", l1, "parent"))
	assert.Equal(t, "15", e.read("layerdb", "sha256", l0, "size"))
	assert.Equal(t, "19", e.read("layerdb", "sha256", l1, "size"))
	cache0, cache1 := e.read("layerdb", "sha256", l0, "cache-id"), e.read("layerdb", "sha256", l1, "cache-id")
	assert.Regexp(t, "^[0-9a-f]{64}$", cache0)
	assert.Regexp(t, "^[0-9a-f]{64}$", cache1)
	assert.Equal(t, []Layer{
		{ChainID: chain[0], DiffID: f.diffIDs[0], Size: 15, CacheID: cache0},
		{ChainID: chain[1], DiffID: f.diffIDs[1], Parent: chain[0], Size: 19, CacheID: cache1},
	}, img.Layers)

	// The snapshots, named by cache-id, hold the files.
	e.unp.mu.Lock()
	assert.Equal(t, map[string]string{"bin/sh": "shell", "etc/passwd": "root:x:0:0"}, e.unp.snapshots[cache0].files)
	assert.Equal(t, "", e.unp.snapshots[cache0].parent)
	assert.Equal(t, map[string]string{"etc/hosts": "127.0.0.1 localhost"}, e.unp.snapshots[cache1].files)
	assert.Equal(t, cache0, e.unp.snapshots[cache1].parent)
	e.unp.mu.Unlock()

	// distribution/diffid-by-digest.
	assert.ElementsMatch(t, []string{f.layers[0].Digest.Encoded(), f.layers[1].Digest.Encoded()}, e.list("distribution", "diffid-by-digest", "sha256"))
	assert.Equal(t, f.diffIDs[0].String(), e.read("distribution", "diffid-by-digest", "sha256", f.layers[0].Digest.Encoded()))
	assert.Equal(t, f.diffIDs[1].String(), e.read("distribution", "diffid-by-digest", "sha256", f.layers[1].Digest.Encoded()))

	// Nothing else at the root; tmp/ is empty.
	assert.Equal(t, []string{"VERSION", "blobs", "distribution", "imagedb", "layerdb", "repositories.json", "tmp"}, e.list())
	assert.Empty(t, e.list("tmp"))
	for _, dir := range []string{".", "layerdb/sha256", "imagedb/metadata/sha256"} {
		st, err := os.Stat(e.path(dir))
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o700), st.Mode().Perm(), dir)
	}

	bytes, layers := e.s.Usage()
	assert.Equal(t, int64(34), bytes)
	assert.Equal(t, 2, layers)
	assert.Equal(t, map[string]bool{cache0: true, cache1: true}, e.s.CacheIDs())
	e.checkConsistent()

	// A restart reads back the same image.
	e.reopen()
	again, err := e.s.Get(testCtx(t), "busybox")
	require.NoError(t, err)
	assert.Equal(t, img.ID, again.ID)
	assert.Equal(t, img.Layers, again.Layers)
	assert.Equal(t, img.RepoTags, again.RepoTags)
	assert.Equal(t, img.RepoDigests, again.RepoDigests)
	assert.True(t, img.Pulled.Equal(again.Pulled))
	assert.Equal(t, img.Config, again.Config)
	e.checkConsistent()
}

func TestPullMediaTypes(t *testing.T) {
	for _, tc := range []struct {
		desc       string
		docker     bool
		layerTypes []string
	}{
		{"OCI gzip", false, []string{ocispec.MediaTypeImageLayerGzip, ocispec.MediaTypeImageLayerGzip}},
		{"OCI zstd", false, []string{ocispec.MediaTypeImageLayerZstd, ocispec.MediaTypeImageLayerZstd}},
		{"OCI uncompressed", false, []string{ocispec.MediaTypeImageLayer, ocispec.MediaTypeImageLayer}},
		{"OCI mixed", false, []string{ocispec.MediaTypeImageLayer, ocispec.MediaTypeImageLayerZstd, ocispec.MediaTypeImageLayerGzip}},
		{"OCI non-distributable", false, []string{
			mediaTypeOCINonDistributableGzip, mediaTypeOCINonDistributable, mediaTypeOCINonDistributableZstd,
		}},
		{"Docker gzip", true, []string{mediaTypeDockerLayerGzip, mediaTypeDockerLayerGzip}},
		{"Docker foreign and plain tar", true, []string{mediaTypeDockerForeignGzip, mediaTypeDockerLayer}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			e := newEnv(t, nil)
			spec := imageSpec{docker: tc.docker}
			for i, mt := range tc.layerTypes {
				l := files("f"+string(rune('0'+i)), "content of layer "+string(rune('0'+i)))
				l.mediaType = mt
				spec.layers = append(spec.layers, l)
			}
			f := e.reg.push(t, "example.com/app:v1", spec)
			img := e.mustPull("example.com/app:v1")
			require.Len(t, img.Layers, len(tc.layerTypes))
			for i, l := range img.Layers {
				assert.Equal(t, f.diffIDs[i], l.DiffID)
				e.unp.mu.Lock()
				assert.Equal(t, map[string]string{"f" + string(rune('0'+i)): "content of layer " + string(rune('0'+i))}, e.unp.snapshots[l.CacheID].files)
				e.unp.mu.Unlock()
			}
			e.checkConsistent()
		})
	}
}

func TestPullIndexSelectsPlatform(t *testing.T) {
	platforms := []ocispec.Platform{
		{OS: "linux", Architecture: "amd64"},
		{OS: "linux", Architecture: "arm64"},
		{OS: "linux", Architecture: "arm64", Variant: "v8"},
		{OS: "linux", Architecture: "arm", Variant: "v7"},
		{OS: "linux", Architecture: "arm", Variant: "v6"},
		{OS: "windows", Architecture: "amd64"},
		{OS: "unknown", Architecture: "unknown"},
	}
	for _, tc := range []struct {
		desc    string
		node    ocispec.Platform
		want    int // index in platforms
		listMT  string
		entries []int // subset of platforms in the index (default: all)
	}{
		{desc: "amd64 takes the amd64 entry", node: ocispec.Platform{OS: "linux", Architecture: "amd64"}, want: 0},
		{desc: "arm64 prefers an explicit v8", node: ocispec.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}, want: 2},
		{desc: "arm64 takes arm64 without variant", node: ocispec.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}, want: 1, entries: []int{0, 1, 3}},
		{desc: "arm/v7 exact", node: ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}, want: 3},
		{desc: "arm/v7 falls back to v6", node: ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}, want: 4, entries: []int{0, 1, 4}},
		{desc: "aarch64 spelling", node: ocispec.Platform{OS: "linux", Architecture: "aarch64"}, want: 2},
		{desc: "Docker manifest list", node: ocispec.Platform{OS: "linux", Architecture: "amd64"}, want: 0, listMT: mediaTypeDockerManifestList},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			e := newEnv(t, func(o *Options) { o.Platform = tc.node })
			entries := tc.entries
			if entries == nil {
				entries = []int{0, 1, 2, 3, 4, 5, 6}
			}
			fixtures := map[int]fixture{}
			idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, Manifests: []ocispec.Descriptor{}}
			idx.MediaType = ocispec.MediaTypeImageIndex
			if tc.listMT != "" {
				idx.MediaType = tc.listMT
			}
			for _, i := range entries {
				p := platforms[i]
				f := e.reg.build(t, imageSpec{platform: p, layers: []layerSpec{files("arch", p.Architecture+p.Variant)}, docker: tc.listMT != ""})
				fixtures[i] = f
				d := f.manifest
				d.Platform = &platforms[i]
				idx.Manifests = append(idx.Manifests, d)
			}
			ib, err := json.Marshal(idx)
			require.NoError(t, err)
			idesc := ocispec.Descriptor{MediaType: idx.MediaType, Digest: e.reg.putBlob(ib), Size: int64(len(ib))}
			e.reg.tag(t, "multi:latest", idesc)

			img := e.mustPull("multi")
			want := fixtures[tc.want]
			assert.Equal(t, want.config.Digest, img.ID)
			assert.Equal(t, want.manifest.Digest, img.ManifestDigest)
			// The repo digest names the index, as the reference resolved to it.
			assert.Equal(t, []string{"docker.io/library/multi@" + idesc.Digest.String()}, img.RepoDigests)
			assert.ElementsMatch(t, []string{idesc.Digest.Encoded(), want.manifest.Digest.Encoded(), want.config.Digest.Encoded()}, e.list("blobs", "sha256"))
			for i, f := range fixtures {
				if i != tc.want {
					assert.Zero(t, e.reg.fetchCount(f.manifest.Digest), "manifest of platform %d fetched", i)
				}
			}
			// Pulling by the index digest finds the same image.
			byDigest := e.mustPull("multi@" + idesc.Digest.String())
			assert.Equal(t, img.ID, byDigest.ID)
			e.checkConsistent()
		})
	}

	t.Run("no matching platform", func(t *testing.T) {
		e := newEnv(t, func(o *Options) { o.Platform = ocispec.Platform{OS: "linux", Architecture: "s390x"} })
		f := e.reg.build(t, imageSpec{layers: []layerSpec{files("a", "b")}})
		d := f.manifest
		d.Platform = &platforms[0]
		ib, err := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{d}})
		require.NoError(t, err)
		e.reg.tag(t, "multi", ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: e.reg.putBlob(ib), Size: int64(len(ib))})
		_, err = e.pull("multi")
		require.ErrorContains(t, err, "no manifest for platform linux/s390x")
		assert.Empty(t, e.s.List(testCtx(t)))
		assert.Empty(t, e.list("blobs", "sha256"))
		e.checkConsistent()
	})
}

func TestPlatformScore(t *testing.T) {
	p := func(os, arch, variant string) ocispec.Platform {
		return ocispec.Platform{OS: os, Architecture: arch, Variant: variant}
	}
	for _, tc := range []struct {
		desc            string
		node, candidate ocispec.Platform
		match           bool
	}{
		{"amd64 has no variant", p("linux", "amd64", ""), p("linux", "amd64", ""), true},
		{"amd64 v1 is amd64", p("linux", "amd64", ""), p("linux", "amd64", "v1"), true},
		{"amd64 node cannot run v3", p("linux", "amd64", ""), p("linux", "amd64", "v3"), false},
		{"x86_64 spelling", p("linux", "amd64", ""), p("linux", "x86_64", ""), true},
		{"other os", p("linux", "amd64", ""), p("windows", "amd64", ""), false},
		{"arm64 v8 runs arm64 without variant", p("linux", "arm64", "v8"), p("linux", "arm64", ""), true},
		{"arm64 node does not run arm", p("linux", "arm64", "v8"), p("linux", "arm", "v7"), false},
		{"arm v6 node cannot run v7", p("linux", "arm", "v6"), p("linux", "arm", "v7"), false},
		{"arm v7 node runs v5", p("linux", "arm", "v7"), p("linux", "arm", "v5"), true},
		{"armhf is arm v7", p("linux", "arm", "v7"), p("linux", "armhf", ""), true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			node := normalizePlatform(tc.node)
			assert.Equal(t, tc.match, platformScore(node, tc.candidate) > 0)
		})
	}
	// Preference: exact variant > implied variant > older variant.
	arm7 := normalizePlatform(p("linux", "arm", "v7"))
	assert.Greater(t, platformScore(arm7, p("linux", "arm", "v7")), platformScore(arm7, p("linux", "arm", "")))
	assert.Greater(t, platformScore(arm7, p("linux", "arm", "")), platformScore(arm7, p("linux", "arm", "v6")))
	assert.Greater(t, platformScore(arm7, p("linux", "arm", "v6")), platformScore(arm7, p("linux", "arm", "v5")))
	want := map[string]string{"amd64": "", "arm64": "v8", "arm": "v7"}[runtime.GOARCH]
	assert.Equal(t, want, DefaultPlatform().Variant)
	assert.Equal(t, runtime.GOARCH, DefaultPlatform().Architecture)
}
