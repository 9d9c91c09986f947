package imagebuild

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/require"
)

func TestWriteOCILayout(t *testing.T) {
	b, err := NewBuilder(t.TempDir())
	require.NoError(t, err)
	layer := Layer{Entries: []Entry{File("f", "f", 0o644)}}
	idx, err := b.BuildIndex(t.Context(), Index{Images: []Image{
		{Layers: []Layer{layer}, Platform: Platform{OS: "linux", Architecture: "amd64"}},
		{Layers: []Layer{layer, {Compression: Zstd}}, Platform: Platform{OS: "linux", Architecture: "arm64"}},
	}})
	require.NoError(t, err)

	dir := t.TempDir()
	require.NoError(t, idx.WriteOCILayout(dir, "v1"))
	raw, err := os.ReadFile(filepath.Join(dir, "oci-layout"))
	require.NoError(t, err)
	require.JSONEq(t, `{"imageLayoutVersion":"1.0.0"}`, string(raw))
	raw, err = os.ReadFile(filepath.Join(dir, "index.json"))
	require.NoError(t, err)
	var top ocispec.Index
	require.NoError(t, json.Unmarshal(raw, &top))
	require.Len(t, top.Manifests, 1)
	require.Equal(t, idx.Digest, top.Manifests[0].Digest)
	require.Equal(t, "v1", top.Manifests[0].Annotations[ocispec.AnnotationRefName])

	want := []digest.Digest{idx.Digest}
	for _, img := range idx.Images {
		want = append(want, digestsOf(img)...)
	}
	for _, d := range want {
		blob, err := os.ReadFile(filepath.Join(dir, "blobs", "sha256", d.Encoded()))
		if err != nil { // diff IDs of compressed layers are not blobs
			continue
		}
		require.Equal(t, d, digest.FromBytes(blob))
	}
	entries, err := os.ReadDir(filepath.Join(dir, "blobs", "sha256"))
	require.NoError(t, err)
	// index, 2 manifests, 2 configs, 2 distinct layers.
	require.Len(t, entries, 7)

	one := t.TempDir()
	require.NoError(t, idx.Images[0].WriteOCILayout(one, ""))
	raw, err = os.ReadFile(filepath.Join(one, "index.json"))
	require.NoError(t, err)
	var single ocispec.Index
	require.NoError(t, json.Unmarshal(raw, &single))
	require.Equal(t, idx.Images[0].Digest, single.Manifests[0].Digest)
	require.Empty(t, single.Manifests[0].Annotations)
}
