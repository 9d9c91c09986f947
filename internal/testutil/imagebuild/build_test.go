package imagebuild

import (
	"archive/tar"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/require"
)

// digestsOf flattens every digest a build reports.
func digestsOf(img *BuiltImage) []digest.Digest {
	out := []digest.Digest{img.Digest, img.ConfigDigest}
	for _, l := range img.Layers {
		out = append(out, l.Digest, l.DiffID)
	}
	return out
}

func buildTarget(t *testing.T, b *Builder, tg Target) []digest.Digest {
	t.Helper()
	if tg.Index != nil {
		idx, err := b.BuildIndex(t.Context(), *tg.Index)
		require.NoError(t, err)
		out := []digest.Digest{idx.Digest}
		for _, img := range idx.Images {
			out = append(out, digestsOf(img)...)
		}
		return out
	}
	img, err := b.Build(t.Context(), *tg.Image)
	require.NoError(t, err)
	return digestsOf(img)
}

func TestBuildIsDeterministic(t *testing.T) {
	targets, err := Set("basic")
	require.NoError(t, err)
	for _, compressible := range []bool{true, false} {
		img, err := Bench(6, 3, compressible)
		require.NoError(t, err)
		targets = append(targets, Target{Repo: "bench", Tag: "small", Image: &img})
	}
	one, err := NewBuilder(t.TempDir())
	require.NoError(t, err)
	two, err := NewBuilder(t.TempDir())
	require.NoError(t, err)
	for _, tg := range targets {
		t.Run(tg.Ref(), func(t *testing.T) {
			first := buildTarget(t, one, tg)
			require.Equal(t, first, buildTarget(t, two, tg), "fresh cache")
			require.Equal(t, first, buildTarget(t, one, tg), "warm cache")
		})
	}
}

// TestBuildGoldenDigest pins the bytes of a small image. If it fails after
// a change to how layers are written (or a klauspost/compress upgrade),
// bump layerFormat so that stale cached blobs are not reused, then update
// the digests.
func TestBuildGoldenDigest(t *testing.T) {
	b, err := NewBuilder(t.TempDir())
	require.NoError(t, err)
	img, err := b.Build(t.Context(), Image{
		Platform: Platform{OS: "linux", Architecture: "amd64"},
		Config:   Config{Cmd: []string{"/hello"}},
		Layers: []Layer{
			{Entries: []Entry{File("hello", "hello\n", 0o755), Dir("etc", 0o755)}},
			{Compression: Zstd, Entries: []Entry{Whiteout("etc"), RandomFile("r", 4096, 1, true)}},
		},
	})
	require.NoError(t, err)
	require.Equal(t, []digest.Digest{
		"sha256:fdcabb9915e5044a99bbe6bb2fe87d2fdfeab785eab32468c838e119df73abd9", // manifest
		"sha256:69357a6ff764bd0ff18a74cfe100650b4c7734a154f8944372bbbf0acc6433e9", // config
		"sha256:c65501b867300558007da06970f43758709e9c1a33a82cf624b2f086296cb11c", // layer 0 blob (gzip)
		"sha256:09203e6a11fb6abc7e0ec05a56f6277da56c607f2775c5211415906f18c7b7fc", // layer 0 diff ID
		"sha256:cbbbf88b19ca7be148a94e803c9183538c7c60446543706efdbd7b9ac6849f3d", // layer 1 blob (zstd)
		"sha256:b916be4f0f2adefb0182ea1acfc58eb26264f9f57e73fc993b7627e6e8b98f39", // layer 1 diff ID
	}, digestsOf(img))
}

func TestBuildManifestAndConfig(t *testing.T) {
	b, err := NewBuilder(t.TempDir())
	require.NoError(t, err)
	img, err := b.Build(t.Context(), Image{
		MediaTypes: Docker,
		Platform:   Platform{OS: "linux", Architecture: "arm64", Variant: "v8"},
		Config: Config{
			Entrypoint:   []string{"/bin/sh", "-c"},
			Cmd:          []string{"echo hi"},
			Env:          []string{"A=1", "PATH=/bin"},
			User:         "1000:1000",
			WorkingDir:   "/work",
			StopSignal:   "SIGINT",
			Volumes:      []string{"/data", "/cache"},
			ExposedPorts: []string{"80/tcp", "53/udp"},
			Labels:       map[string]string{"b": "2", "a": "1"},
		},
		Layers: []Layer{
			{Entries: []Entry{File("a", "a", 0o644)}},
			{Compression: Uncompressed, Entries: []Entry{File("b", "b", 0o644)}},
			{MediaTypes: OCI, Entries: []Entry{File("c", "c", 0o644)}},
		},
	})
	require.NoError(t, err)

	var m ocispec.Manifest
	require.NoError(t, json.Unmarshal(img.Manifest, &m))
	require.Equal(t, MediaTypeDockerManifest, m.MediaType)
	require.Equal(t, 2, m.SchemaVersion)
	require.Equal(t, ocispec.Descriptor{MediaType: MediaTypeDockerConfig, Digest: img.ConfigDigest, Size: int64(len(img.Config))}, m.Config)
	require.Equal(t, digest.FromBytes(img.Config), img.ConfigDigest)
	require.Equal(t, digest.FromBytes(img.Manifest), img.Digest)
	require.Equal(t, []string{MediaTypeDockerLayerGzip, MediaTypeDockerLayer, ocispec.MediaTypeImageLayerGzip},
		[]string{m.Layers[0].MediaType, m.Layers[1].MediaType, m.Layers[2].MediaType})
	for i, l := range img.Layers {
		require.Equal(t, l.Descriptor(), m.Layers[i])
	}
	require.Equal(t, img.Layers[1].DiffID, img.Layers[1].Digest, "uncompressed layer")

	var c ocispec.Image
	require.NoError(t, json.Unmarshal(img.Config, &c))
	require.Equal(t, "arm64", c.Architecture)
	require.Equal(t, "v8", c.Variant)
	require.Equal(t, "linux", c.OS)
	require.Equal(t, Epoch, c.Created.UTC())
	require.Equal(t, []string{"/bin/sh", "-c"}, c.Config.Entrypoint)
	require.Equal(t, []string{"echo hi"}, c.Config.Cmd)
	require.Equal(t, []string{"A=1", "PATH=/bin"}, c.Config.Env)
	require.Equal(t, "1000:1000", c.Config.User)
	require.Equal(t, "/work", c.Config.WorkingDir)
	require.Equal(t, "SIGINT", c.Config.StopSignal)
	require.Equal(t, map[string]struct{}{"/data": {}, "/cache": {}}, c.Config.Volumes)
	require.Equal(t, map[string]struct{}{"80/tcp": {}, "53/udp": {}}, c.Config.ExposedPorts)
	require.Equal(t, map[string]string{"a": "1", "b": "2"}, c.Config.Labels)
	require.Equal(t, "layers", c.RootFS.Type)
	require.Equal(t, img.DiffIDs(), c.RootFS.DiffIDs)
	require.Len(t, c.History, 3)

	chain := img.ChainIDs()
	require.Equal(t, img.Layers[0].DiffID, chain[0])
	require.Equal(t, digest.FromString(chain[0].String()+" "+img.Layers[1].DiffID.String()), chain[1])
}

func TestBuildIndex(t *testing.T) {
	b, err := NewBuilder(t.TempDir())
	require.NoError(t, err)
	layer := Layer{Entries: []Entry{File("f", "f", 0o644)}}
	for _, tc := range []struct {
		desc                   string
		mt                     MediaTypes
		wantIndex, wantManifst string
	}{
		{desc: "oci", mt: Inherit, wantIndex: ocispec.MediaTypeImageIndex, wantManifst: ocispec.MediaTypeImageManifest},
		{desc: "docker", mt: Docker, wantIndex: MediaTypeDockerManifestList, wantManifst: MediaTypeDockerManifest},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			idx, err := b.BuildIndex(t.Context(), Index{MediaTypes: tc.mt, Images: []Image{
				{Layers: []Layer{layer}, Platform: Platform{OS: "linux", Architecture: "amd64"}},
				{Layers: []Layer{layer}, Platform: Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}},
			}})
			require.NoError(t, err)
			require.Equal(t, tc.wantIndex, idx.MediaType)
			var x ocispec.Index
			require.NoError(t, json.Unmarshal(idx.Manifest, &x))
			require.Equal(t, tc.wantIndex, x.MediaType)
			require.Len(t, x.Manifests, 2)
			for i, d := range x.Manifests {
				require.Equal(t, tc.wantManifst, d.MediaType)
				require.Equal(t, idx.Images[i].Descriptor(), d)
			}
			require.Equal(t, "arm64", x.Manifests[1].Platform.Architecture)
			require.Equal(t, "v8", x.Manifests[1].Platform.Variant)
			require.NotEqual(t, idx.Images[0].ConfigDigest, idx.Images[1].ConfigDigest)
			require.Equal(t, idx.Images[0].Layers, idx.Images[1].Layers)
		})
	}
}

func TestBuildCache(t *testing.T) {
	b, err := NewBuilder(t.TempDir())
	require.NoError(t, err)
	img, err := Bench(4, 2, true)
	require.NoError(t, err)
	first, err := b.Build(t.Context(), img)
	require.NoError(t, err)
	st, err := os.Stat(first.Layers[0].path)
	require.NoError(t, err)
	// Push the blob's mtime into the past: a cache hit must not rewrite it.
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	require.NoError(t, os.Chtimes(first.Layers[0].path, old, old))

	again, err := b.Build(t.Context(), img)
	require.NoError(t, err)
	require.Equal(t, first, again)
	st2, err := os.Stat(first.Layers[0].path)
	require.NoError(t, err)
	require.Equal(t, old, st2.ModTime())
	require.Equal(t, st.Size(), st2.Size())

	// A lost or truncated blob is rebuilt.
	require.NoError(t, os.Truncate(first.Layers[1].path, 10))
	require.NoError(t, os.Remove(first.Layers[0].path))
	again, err = b.Build(t.Context(), img)
	require.NoError(t, err)
	require.Equal(t, first, again)
	st3, err := os.Stat(first.Layers[1].path)
	require.NoError(t, err)
	require.Equal(t, first.Layers[1].Size, st3.Size())

	// A changed host file is a different layer.
	host := filepath.Join(t.TempDir(), "f")
	require.NoError(t, os.WriteFile(host, []byte("one"), 0o644))
	withHost := Image{Layers: []Layer{{Entries: []Entry{HostFile("f", host, 0o644)}}}}
	a, err := b.Build(t.Context(), withHost)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(host, []byte("two"), 0o644))
	c, err := b.Build(t.Context(), withHost)
	require.NoError(t, err)
	require.NotEqual(t, a.Layers[0].DiffID, c.Layers[0].DiffID)
}

func TestBusybox(t *testing.T) {
	img, err := Busybox()
	require.NoError(t, err)
	require.Equal(t, Platform{OS: "linux", Architecture: runtime.GOARCH}, img.Platform)
	require.Equal(t, []string{"sh"}, img.Config.Cmd)
	require.Equal(t, []string{BusyboxEnvPath}, img.Config.Env)

	b, err := NewBuilder(t.TempDir())
	require.NoError(t, err)
	built, err := b.Build(t.Context(), img)
	require.NoError(t, err)
	hdrs, bodies := readLayer(t, built.Layers[0])
	host, err := os.ReadFile(BusyboxPath)
	require.NoError(t, err)
	require.Equal(t, string(host), bodies["bin/busybox"])
	require.Contains(t, bodies["etc/passwd"], "root:x:0:0:")
	require.Contains(t, bodies["etc/passwd"], "nobody:x:65534:65534:")
	require.Contains(t, bodies["etc/group"], "shared:x:2000:alice,bob")
	require.Contains(t, bodies["etc/hosts"], "localhost")

	order := names(hdrs)
	busybox := slices.Index(order, "bin/busybox")
	require.GreaterOrEqual(t, busybox, 0)
	links := map[string]bool{}
	for i, h := range hdrs {
		if h.Typeflag == tar.TypeLink {
			require.Equal(t, "bin/busybox", h.Linkname)
			require.Greater(t, i, busybox, "hard link %s precedes its target", h.Name)
			links[h.Name] = true
		}
		switch h.Name {
		case "tmp/":
			require.EqualValues(t, 0o1777, h.Mode)
		case "root/":
			require.EqualValues(t, 0o700, h.Mode)
		case "home/alice/":
			require.Equal(t, 1000, h.Uid)
		case "usr/bin/env":
			require.Equal(t, "../../bin/busybox", h.Linkname)
		}
	}
	for _, a := range BusyboxApplets {
		require.True(t, links["bin/"+a], "applet %s", a)
	}
	for _, d := range []string{"tmp/", "root/", "etc/", "proc/", "sys/", "dev/", "usr/", "usr/bin/"} {
		require.Contains(t, order, d)
	}
}

func TestStaticBinaryCheck(t *testing.T) {
	_, err := staticBinaryArch("/nonexistent/busybox")
	require.ErrorContains(t, err, "busybox-static")
	require.ErrorIs(t, err, os.ErrNotExist)

	_, err = staticBinaryArch("/bin/ls") // dynamically linked on Debian
	require.ErrorContains(t, err, "dynamically linked")

	notELF := filepath.Join(t.TempDir(), "busybox")
	require.NoError(t, os.WriteFile(notELF, []byte("#!/bin/sh\n"), 0o755))
	_, err = staticBinaryArch(notELF)
	require.ErrorContains(t, err, "busybox-static")

	arch, err := staticBinaryArch(BusyboxPath)
	require.NoError(t, err)
	require.Equal(t, runtime.GOARCH, arch)
}
