package imagestore

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Defaults applied by New to zero Options fields.
const (
	DefaultMaxConcurrentDownloads = 3
	DefaultProgressTimeout        = time.Minute
	DefaultMaxLayerSize           = 64 << 30
	DefaultMaxManifestSize        = 4 << 20
	DefaultMaxConfigSize          = 8 << 20
)

// Options configure a Store. Root, Resolver and Unpacker are required; a
// zero value in any other field selects its default.
type Options struct {
	// Root is the store's directory (created 0700 when missing).
	Root     string
	Resolver Resolver
	Unpacker LayerUnpacker
	// MaxConcurrentDownloads bounds the layer downloads of one pull
	// (default 3).
	MaxConcurrentDownloads int
	// ProgressTimeout fails a pull whose open downloads receive no byte for
	// this long (default 1m).
	ProgressTimeout time.Duration
	// MaxLayerSize caps the uncompressed size of one layer (default 64 GiB).
	MaxLayerSize int64
	// MaxManifestSize and MaxConfigSize cap manifests and indexes (default
	// 4 MiB) and image configs (default 8 MiB).
	MaxManifestSize int64
	MaxConfigSize   int64
	// Platform is the one picked from multi-platform images (default: this
	// process's GOOS/GOARCH, plus the variant for arm and arm64).
	Platform ocispec.Platform
	// PinnedImages are references whose images are reported Pinned, so that
	// kubelet's image GC keeps them (the sandbox image).
	PinnedImages []string
	// GzipCommand, when set, inflates gzip layers in an external process
	// (e.g. {"/usr/bin/igzip", "-d", "-c"}: ISA-L inflates about four times
	// faster than any Go inflater), reading the compressed stream on stdin
	// and writing the tar on stdout. It runs as nobody, without
	// capabilities, since its input is hostile. Empty: inflate in-process.
	GzipCommand []string
}

// Image is a pulled image. Its slices and Config are the caller's copy.
type Image struct {
	// ID is the digest of the image config.
	ID digest.Digest
	// RepoTags ("name:tag") and RepoDigests ("name@digest") are the
	// references that resolve to the image, sorted.
	RepoTags    []string
	RepoDigests []string
	Config      ocispec.Image
	// Layers are bottom first.
	Layers []Layer
	// Size is the sum of the layers' sizes.
	Size int64
	// ManifestDigest is the digest of the platform-specific image manifest
	// this image was last pulled through (RepoDigests name the digest the
	// reference resolved to, an index for multi-platform images).
	ManifestDigest digest.Digest
	// Pinned is true when a reference of the image is in
	// Options.PinnedImages.
	Pinned bool
	// Pulled is when the image was last pulled.
	Pulled time.Time
}

// Layer is one entry of layerdb.
type Layer struct {
	ChainID digest.Digest
	DiffID  digest.Digest
	// Parent is the chain-id of the layer below ("" for the bottom layer).
	Parent digest.Digest
	// Size is the layer's size as the LayerUnpacker reported it.
	Size int64
	// CacheID names the layer's snapshot in the LayerUnpacker.
	CacheID string
}

// layerRecord is a layer with its reference counts.
type layerRecord struct {
	Layer
	// refs counts the images whose Layers include this layer.
	refs int
	// holds counts the pulls in flight that use this layer.
	holds int
}

// imageRecord is an image as the store keeps it in memory.
type imageRecord struct {
	id     digest.Digest
	config ocispec.Image
	chain  []digest.Digest
	meta   imageMeta
}

// Store is the node's image store. It is safe for concurrent use.
type Store struct {
	root     string
	opts     Options
	platform ocispec.Platform
	pinned   map[string]bool

	pulls  pullGroup
	chains keyedMutex

	// mu guards the fields below. It is held for in-memory changes and the
	// small metadata files that go with them, never across a network call
	// or a LayerUnpacker call.
	mu     sync.RWMutex
	images map[digest.Digest]*imageRecord
	// layers is layerdb by chain-id.
	layers map[digest.Digest]*layerRecord
	// refs is repositories.json flattened: reference → image ID.
	refs map[string]digest.Digest
	// blobs counts the users (images and pulls in flight) of each file in
	// blobs/.
	blobs map[digest.Digest]int
	// inflight are the cache-ids of snapshots that pulls are creating.
	inflight map[string]bool
}

// New opens (creating when needed) the store at opts.Root and recovers its
// state. Entries that are incomplete or inconsistent are dropped and logged;
// New fails only when the root is unusable or was written by a newer
// version of the store.
func New(ctx context.Context, opts Options) (*Store, error) {
	if opts.Root == "" {
		return nil, fmt.Errorf("imagestore: no root: %w", errdefs.ErrInvalidArgument)
	}
	if opts.Resolver == nil || opts.Unpacker == nil {
		return nil, fmt.Errorf("imagestore: resolver and unpacker are required: %w", errdefs.ErrInvalidArgument)
	}
	if opts.MaxConcurrentDownloads <= 0 {
		opts.MaxConcurrentDownloads = DefaultMaxConcurrentDownloads
	}
	if opts.ProgressTimeout <= 0 {
		opts.ProgressTimeout = DefaultProgressTimeout
	}
	if opts.MaxLayerSize <= 0 {
		opts.MaxLayerSize = DefaultMaxLayerSize
	}
	if opts.MaxManifestSize <= 0 {
		opts.MaxManifestSize = DefaultMaxManifestSize
	}
	if opts.MaxConfigSize <= 0 {
		opts.MaxConfigSize = DefaultMaxConfigSize
	}
	platform := opts.Platform
	if platform.OS == "" && platform.Architecture == "" {
		platform = DefaultPlatform()
	}
	s := &Store{
		root:     opts.Root,
		opts:     opts,
		platform: normalizePlatform(platform),
		pinned:   make(map[string]bool),
		images:   make(map[digest.Digest]*imageRecord),
		layers:   make(map[digest.Digest]*layerRecord),
		refs:     make(map[string]digest.Digest),
		blobs:    make(map[digest.Digest]int),
		inflight: make(map[string]bool),
	}
	for _, p := range opts.PinnedImages {
		named, err := ParseRef(p)
		if err != nil {
			return nil, fmt.Errorf("imagestore: pinned image: %w", err)
		}
		s.pinned[lookupKey(named)] = true
	}
	if err := s.init(); err != nil {
		return nil, err
	}
	if err := s.recoverState(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Get returns the image that ref names: an image ID ("sha256:<hex>" or
// "<hex>"), a unique prefix of one (as crictl's short IDs), a reference
// ("busybox", "name:tag") or "name@digest". An unknown image returns an
// error wrapping errdefs.ErrNotFound.
func (s *Store) Get(ctx context.Context, ref string) (Image, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	rec, err := s.lookupLocked(ref)
	if err != nil {
		return Image{}, err
	}
	return s.imageLocked(rec), nil
}

// List returns every image, sorted by ID.
func (s *Store) List(ctx context.Context) []Image {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ids := slices.Sorted(maps.Keys(s.images))
	byID := make(map[digest.Digest][]string, len(ids))
	for ref, id := range s.refs {
		byID[id] = append(byID[id], ref)
	}
	out := make([]Image, 0, len(ids))
	for _, id := range ids {
		out = append(out, s.buildImageLocked(s.images[id], byID[id]))
	}
	return out
}

// Usage returns the bytes and the number of layers in layerdb, for
// ImageFsInfo.
func (s *Store) Usage() (bytes int64, layers int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, l := range s.layers {
		bytes += l.Size
	}
	return bytes, len(s.layers)
}

// CacheIDs returns every cache-id in use: those of layerdb and those that
// pulls in flight are unpacking. A snapshot named by none of them is an
// orphan the daemon may remove.
func (s *Store) CacheIDs() map[string]bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[string]bool, len(s.layers)+len(s.inflight))
	for _, l := range s.layers {
		out[l.CacheID] = true
	}
	for id := range s.inflight {
		out[id] = true
	}
	return out
}

// lookupLocked resolves ref as Get documents.
// Precondition: s.mu held.
func (s *Store) lookupLocked(ref string) (*imageRecord, error) {
	if ref == "" {
		return nil, fmt.Errorf("image reference is empty: %w", errdefs.ErrInvalidArgument)
	}
	hex, full, isID := idForm(ref)
	if full {
		if rec, ok := s.images[digest.NewDigestFromEncoded(digest.SHA256, hex)]; ok {
			return rec, nil
		}
		return nil, fmt.Errorf("image %s: %w", ref, errdefs.ErrNotFound)
	}
	if named, err := ParseRef(ref); err == nil {
		if id, ok := s.refs[lookupKey(named)]; ok {
			if rec, ok := s.images[id]; ok {
				return rec, nil
			}
		}
	}
	if isID {
		// A short ID, as containerd's CRI resolves it: any unambiguous
		// prefix of an image ID's hex.
		var found *imageRecord
		for id, rec := range s.images {
			if id.Algorithm() != digest.SHA256 || len(id.Encoded()) < len(hex) || id.Encoded()[:len(hex)] != hex {
				continue
			}
			if found != nil {
				return nil, fmt.Errorf("image id prefix %s is ambiguous: %w", ref, errdefs.ErrInvalidArgument)
			}
			found = rec
		}
		if found != nil {
			return found, nil
		}
	}
	return nil, fmt.Errorf("image %s: %w", ref, errdefs.ErrNotFound)
}

// imageLocked builds the caller's copy of rec.
// Precondition: s.mu held.
func (s *Store) imageLocked(rec *imageRecord) Image {
	var refs []string
	for ref, id := range s.refs {
		if id == rec.id {
			refs = append(refs, ref)
		}
	}
	return s.buildImageLocked(rec, refs)
}

// buildImageLocked builds the caller's copy of rec, whose references are
// refs.
// Precondition: s.mu held.
func (s *Store) buildImageLocked(rec *imageRecord, refs []string) Image {
	img := Image{
		ID:             rec.id,
		Config:         cloneConfig(rec.config),
		Layers:         make([]Layer, 0, len(rec.chain)),
		ManifestDigest: rec.meta.ManifestDigest,
		Pulled:         rec.meta.Pulled,
	}
	for _, c := range rec.chain {
		if l, ok := s.layers[c]; ok {
			img.Layers = append(img.Layers, l.Layer)
			img.Size += l.Size
		}
	}
	for _, ref := range refs {
		if isRepoDigest(ref) {
			img.RepoDigests = append(img.RepoDigests, ref)
		} else {
			img.RepoTags = append(img.RepoTags, ref)
		}
		if s.pinned[ref] {
			img.Pinned = true
		}
	}
	slices.Sort(img.RepoTags)
	slices.Sort(img.RepoDigests)
	return img
}

// cloneConfig deep-copies the parts of an image config a caller could
// modify in place.
func cloneConfig(c ocispec.Image) ocispec.Image {
	if c.Created != nil {
		t := *c.Created
		c.Created = &t
	}
	c.OSFeatures = slices.Clone(c.OSFeatures)
	c.Config.ExposedPorts = maps.Clone(c.Config.ExposedPorts)
	c.Config.Env = slices.Clone(c.Config.Env)
	c.Config.Entrypoint = slices.Clone(c.Config.Entrypoint)
	c.Config.Cmd = slices.Clone(c.Config.Cmd)
	c.Config.Volumes = maps.Clone(c.Config.Volumes)
	c.Config.Labels = maps.Clone(c.Config.Labels)
	c.RootFS.DiffIDs = slices.Clone(c.RootFS.DiffIDs)
	c.History = slices.Clone(c.History)
	for i := range c.History {
		if c.History[i].Created != nil {
			t := *c.History[i].Created
			c.History[i].Created = &t
		}
	}
	return c
}

// cloneImage copies img's slices so that two callers never share them.
func cloneImage(img Image) Image {
	img.RepoTags = slices.Clone(img.RepoTags)
	img.RepoDigests = slices.Clone(img.RepoDigests)
	img.Layers = slices.Clone(img.Layers)
	img.Config = cloneConfig(img.Config)
	return img
}
