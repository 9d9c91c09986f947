package imagebuild

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/singleflight"

	"github.com/crid-dev/crid/internal/atomicfile"
)

// Docker media types (image manifest v2 schema 2). The OCI ones are the
// ocispec.MediaType* constants.
const (
	MediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeDockerConfig       = "application/vnd.docker.container.image.v1+json"
	MediaTypeDockerLayerGzip    = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	MediaTypeDockerLayer        = "application/vnd.docker.image.rootfs.diff.tar"
)

// layerFormat versions the way layers are written; bump it whenever the tar
// or compressed output of an unchanged description changes, so that cached
// blobs are not reused.
const layerFormat = "imagebuild-layer/v2"

// gzipLevel is fixed: the output (and so the digest) depends on it.
const gzipLevel = gzip.DefaultCompression

// Builder builds images into a cache directory. Layer blobs live under
// <dir>/blobs/sha256/ and the layer cache index under <dir>/layers/.
type Builder struct {
	dir   string
	sem   chan struct{} // bounds concurrent layer writes
	group singleflight.Group
}

// NewBuilder returns a builder that stores blobs under dir, creating it. A
// directory reused across runs makes rebuilding an unchanged layer a stat.
func NewBuilder(dir string) (*Builder, error) {
	for _, d := range []string{filepath.Join(dir, "blobs", "sha256"), filepath.Join(dir, "layers")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("create build cache dir: %w", err)
		}
	}
	return &Builder{dir: dir, sem: make(chan struct{}, runtime.GOMAXPROCS(0))}, nil
}

// Dir returns the builder's cache directory.
func (b *Builder) Dir() string { return b.dir }

// BuiltLayer describes a built layer blob.
type BuiltLayer struct {
	MediaType string
	// Digest and Size of the (compressed) blob.
	Digest digest.Digest
	Size   int64
	// DiffID is the digest of the uncompressed tar.
	DiffID           digest.Digest
	UncompressedSize int64
	Compression      Compression

	path string
}

// Open opens the layer blob.
func (l BuiltLayer) Open() (io.ReadCloser, error) {
	f, err := os.Open(l.path)
	if err != nil {
		return nil, fmt.Errorf("open layer blob %s: %w", l.Digest, err)
	}
	return f, nil
}

// Descriptor returns the layer's descriptor as written in the manifest.
func (l BuiltLayer) Descriptor() ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: l.MediaType, Digest: l.Digest, Size: l.Size}
}

// BuiltImage is a built single-platform image.
type BuiltImage struct {
	// MediaType, Digest and bytes of the manifest.
	MediaType string
	Digest    digest.Digest
	Manifest  []byte
	// ConfigMediaType, ConfigDigest (the image ID) and bytes of the config.
	ConfigMediaType string
	ConfigDigest    digest.Digest
	Config          []byte
	Layers          []BuiltLayer
	Platform        Platform
}

// DiffIDs returns the layers' diff IDs, bottom first.
func (i *BuiltImage) DiffIDs() []digest.Digest {
	ids := make([]digest.Digest, len(i.Layers))
	for n, l := range i.Layers {
		ids[n] = l.DiffID
	}
	return ids
}

// ChainIDs returns the chain ID of each layer stack, bottom first, as
// defined by the OCI image spec (the last one identifies the rootfs).
func (i *BuiltImage) ChainIDs() []digest.Digest {
	ids := make([]digest.Digest, len(i.Layers))
	for n, l := range i.Layers {
		if n == 0 {
			ids[n] = l.DiffID
			continue
		}
		ids[n] = digest.FromString(ids[n-1].String() + " " + l.DiffID.String())
	}
	return ids
}

// Descriptor returns the manifest's descriptor, with its platform.
func (i *BuiltImage) Descriptor() ocispec.Descriptor {
	return ocispec.Descriptor{
		MediaType: i.MediaType,
		Digest:    i.Digest,
		Size:      int64(len(i.Manifest)),
		Platform: &ocispec.Platform{
			Architecture: i.Platform.Architecture,
			OS:           i.Platform.OS,
			Variant:      i.Platform.Variant,
		},
	}
}

// BuiltIndex is a built multi-platform image.
type BuiltIndex struct {
	// MediaType, Digest and bytes of the index (or manifest list).
	MediaType string
	Digest    digest.Digest
	Manifest  []byte
	Images    []*BuiltImage
}

// Build builds a single-platform image.
func (b *Builder) Build(ctx context.Context, img Image) (*BuiltImage, error) {
	return b.build(ctx, img, Inherit)
}

// BuildIndex builds every image of idx and the index over them.
func (b *Builder) BuildIndex(ctx context.Context, idx Index) (*BuiltIndex, error) {
	if len(idx.Images) == 0 {
		return nil, errors.New("build index: no images")
	}
	mt := idx.MediaTypes.or(Inherit)
	out := &BuiltIndex{MediaType: ocispec.MediaTypeImageIndex}
	if mt == Docker {
		out.MediaType = MediaTypeDockerManifestList
	}
	seen := map[Platform]bool{}
	index := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: out.MediaType}
	for n, img := range idx.Images {
		bi, err := b.build(ctx, img, mt)
		if err != nil {
			return nil, fmt.Errorf("build index image %d: %w", n, err)
		}
		if seen[bi.Platform] {
			return nil, fmt.Errorf("build index: platform %s appears twice", bi.Platform)
		}
		seen[bi.Platform] = true
		out.Images = append(out.Images, bi)
		index.Manifests = append(index.Manifests, bi.Descriptor())
	}
	raw, err := json.Marshal(index)
	if err != nil {
		return nil, fmt.Errorf("marshal index: %w", err)
	}
	out.Manifest, out.Digest = raw, digest.FromBytes(raw)
	return out, nil
}

func layerMediaType(mt MediaTypes, c Compression) (string, error) {
	switch {
	case mt == OCI && c == Gzip:
		return ocispec.MediaTypeImageLayerGzip, nil
	case mt == OCI && c == Zstd:
		return ocispec.MediaTypeImageLayerZstd, nil
	case mt == OCI && c == Uncompressed:
		return ocispec.MediaTypeImageLayer, nil
	case mt == Docker && c == Gzip:
		return MediaTypeDockerLayerGzip, nil
	case mt == Docker && c == Uncompressed:
		return MediaTypeDockerLayer, nil
	}
	return "", fmt.Errorf("no %s media type for %s layers", mt, c)
}

func (b *Builder) build(ctx context.Context, img Image, parent MediaTypes) (*BuiltImage, error) {
	mt := img.MediaTypes.or(parent)
	out := &BuiltImage{
		MediaType:       ocispec.MediaTypeImageManifest,
		ConfigMediaType: ocispec.MediaTypeImageConfig,
		Platform:        img.Platform.orDefault(),
		Layers:          make([]BuiltLayer, len(img.Layers)),
	}
	if mt == Docker {
		out.MediaType, out.ConfigMediaType = MediaTypeDockerManifest, MediaTypeDockerConfig
	}
	for n, l := range img.Layers {
		lmt, err := layerMediaType(l.MediaTypes.or(mt), l.Compression)
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", n, err)
		}
		out.Layers[n].MediaType = lmt
		out.Layers[n].Compression = l.Compression
	}

	g, gctx := errgroup.WithContext(ctx)
	for n, l := range img.Layers {
		g.Go(func() error {
			blob, err := b.layer(gctx, l)
			if err != nil {
				return fmt.Errorf("build layer %d: %w", n, err)
			}
			bl := &out.Layers[n]
			bl.Digest, bl.Size, bl.DiffID, bl.UncompressedSize = blob.Digest, blob.Size, blob.DiffID, blob.UncompressedSize
			bl.path = b.blobPath(blob.Digest)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}

	cfg, err := json.Marshal(imageConfig(img.Config, out.Platform, out.DiffIDs()))
	if err != nil {
		return nil, fmt.Errorf("marshal image config: %w", err)
	}
	out.Config, out.ConfigDigest = cfg, digest.FromBytes(cfg)

	m := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: out.MediaType,
		Config:    ocispec.Descriptor{MediaType: out.ConfigMediaType, Digest: out.ConfigDigest, Size: int64(len(cfg))},
		Layers:    make([]ocispec.Descriptor, len(out.Layers)),
	}
	for n, l := range out.Layers {
		m.Layers[n] = l.Descriptor()
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("marshal manifest: %w", err)
	}
	out.Manifest, out.Digest = raw, digest.FromBytes(raw)
	return out, nil
}

func imageConfig(c Config, p Platform, diffIDs []digest.Digest) ocispec.Image {
	created := Epoch
	set := func(list []string) map[string]struct{} {
		if len(list) == 0 {
			return nil
		}
		m := make(map[string]struct{}, len(list))
		for _, s := range list {
			m[s] = struct{}{}
		}
		return m
	}
	history := make([]ocispec.History, len(diffIDs))
	for n := range history {
		history[n] = ocispec.History{Created: &created, CreatedBy: fmt.Sprintf("imagebuild layer %d", n)}
	}
	if diffIDs == nil {
		diffIDs = []digest.Digest{} // "diff_ids": [] rather than null
	}
	return ocispec.Image{
		Created:  &created,
		Platform: ocispec.Platform{Architecture: p.Architecture, OS: p.OS, Variant: p.Variant},
		Config: ocispec.ImageConfig{
			User:         c.User,
			ExposedPorts: set(c.ExposedPorts),
			Env:          c.Env,
			Entrypoint:   c.Entrypoint,
			Cmd:          c.Cmd,
			Volumes:      set(c.Volumes),
			WorkingDir:   c.WorkingDir,
			Labels:       c.Labels,
			StopSignal:   c.StopSignal,
		},
		RootFS:  ocispec.RootFS{Type: "layers", DiffIDs: diffIDs},
		History: history,
	}
}

// layerBlob is what the layer cache records for a layer description.
type layerBlob struct {
	Digest           digest.Digest `json:"digest"`
	Size             int64         `json:"size"`
	DiffID           digest.Digest `json:"diffID"`
	UncompressedSize int64         `json:"uncompressedSize"`
}

func (b *Builder) blobPath(d digest.Digest) string {
	return filepath.Join(b.dir, "blobs", d.Algorithm().String(), d.Encoded())
}

// layer returns the blob for l, from the cache or by building it.
func (b *Builder) layer(ctx context.Context, l Layer) (layerBlob, error) {
	key, err := layerKey(l)
	if err != nil {
		return layerBlob{}, fmt.Errorf("hash layer description: %w", err)
	}
	v, err, _ := b.group.Do(key, func() (any, error) {
		metaPath := filepath.Join(b.dir, "layers", key+".json")
		if blob, ok := b.cached(metaPath); ok {
			return blob, nil
		}
		select {
		case b.sem <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		defer func() { <-b.sem }()
		blob, err := b.writeLayer(ctx, l)
		if err != nil {
			return nil, err
		}
		meta, err := json.Marshal(blob)
		if err != nil {
			return nil, err
		}
		if err := atomicfile.WriteFile(metaPath, meta, 0o644); err != nil {
			return nil, fmt.Errorf("record layer in cache: %w", err)
		}
		return blob, nil
	})
	if err != nil {
		return layerBlob{}, err
	}
	return v.(layerBlob), nil
}

// cached returns the recorded blob of a layer if the record and a blob of
// the recorded size exist.
func (b *Builder) cached(metaPath string) (layerBlob, bool) {
	raw, err := os.ReadFile(metaPath)
	if err != nil {
		return layerBlob{}, false
	}
	var blob layerBlob
	if json.Unmarshal(raw, &blob) != nil || blob.Digest.Validate() != nil {
		return layerBlob{}, false
	}
	st, err := os.Stat(b.blobPath(blob.Digest))
	if err != nil || st.Size() != blob.Size {
		return layerBlob{}, false
	}
	return blob, true
}

type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

// writeLayer writes the compressed layer blob into the blob store.
func (b *Builder) writeLayer(ctx context.Context, l Layer) (blob layerBlob, err error) {
	f, err := os.CreateTemp(filepath.Join(b.dir, "blobs", "sha256"), ".tmp-layer-")
	if err != nil {
		return blob, fmt.Errorf("create layer blob: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			_ = os.Remove(tmp)
		}
	}()

	fileBuf := bufio.NewWriterSize(f, 1<<20)
	blobHash, blobCount := sha256.New(), &countingWriter{}
	compOut := io.MultiWriter(fileBuf, blobHash, blobCount)
	var comp io.WriteCloser
	switch l.Compression {
	case Gzip:
		comp, err = gzip.NewWriterLevel(compOut, gzipLevel)
	case Zstd:
		comp, err = zstd.NewWriter(compOut, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedDefault))
	case Uncompressed:
		comp = nopWriteCloser{compOut}
	default:
		err = fmt.Errorf("unknown compression %s", l.Compression)
	}
	if err != nil {
		return blob, fmt.Errorf("start compressor: %w", err)
	}
	diffHash, rawCount := sha256.New(), &countingWriter{}
	tarBuf := bufio.NewWriterSize(io.MultiWriter(comp, diffHash, rawCount), 1<<20)

	if err := writeTar(ctx, tarBuf, l); err != nil {
		return blob, err
	}
	if err := tarBuf.Flush(); err != nil {
		return blob, fmt.Errorf("write layer: %w", err)
	}
	if err := comp.Close(); err != nil {
		return blob, fmt.Errorf("finish %s stream: %w", l.Compression, err)
	}
	if err := fileBuf.Flush(); err != nil {
		return blob, fmt.Errorf("write layer blob: %w", err)
	}
	if err := f.Close(); err != nil {
		return blob, fmt.Errorf("write layer blob: %w", err)
	}
	blob = layerBlob{
		Digest:           digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(blobHash.Sum(nil))),
		Size:             blobCount.n,
		DiffID:           digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(diffHash.Sum(nil))),
		UncompressedSize: rawCount.n,
	}
	if err := os.Rename(tmp, b.blobPath(blob.Digest)); err != nil {
		return blob, fmt.Errorf("store layer blob: %w", err)
	}
	return blob, nil
}

// layerKey hashes everything that determines a layer blob's bytes.
func layerKey(l Layer) (string, error) {
	type entryKey struct {
		Entry
		HostDigest digest.Digest `json:",omitempty"`
	}
	desc := struct {
		Format      string
		Compressor  string
		Compression Compression
		Verbatim    bool
		Tar         digest.Digest `json:",omitempty"`
		Entries     []entryKey
	}{
		Format:      layerFormat,
		Compressor:  compressorVersion(),
		Compression: l.Compression,
		Verbatim:    l.Verbatim,
		Entries:     make([]entryKey, len(l.Entries)),
	}
	if l.Tar != nil {
		desc.Tar = digest.FromBytes(l.Tar)
	}
	for n, e := range l.Entries {
		k := entryKey{Entry: e}
		if e.HostPath != "" {
			d, err := fileDigest(e.HostPath)
			if err != nil {
				return "", err
			}
			k.HostPath, k.HostDigest = "", d
		}
		desc.Entries[n] = k
	}
	h := sha256.New()
	if err := json.NewEncoder(h).Encode(desc); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func fileDigest(p string) (digest.Digest, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return digest.SHA256.FromReader(f)
}

// compressorVersion is the klauspost/compress module version compiled in:
// another version may compress the same tar differently.
var compressorVersion = sync.OnceValue(func() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/klauspost/compress" {
				return d.Version
			}
		}
	}
	return "unknown"
})
