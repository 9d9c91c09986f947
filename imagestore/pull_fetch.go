package imagestore

import (
	"context"
	_ "crypto/sha256" // registers the digest algorithm go-digest uses
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Media types of the Docker image format; the OCI ones are in ocispec.
const (
	mediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	mediaTypeDockerSchema1      = "application/vnd.docker.distribution.manifest.v1+prettyjws"
	mediaTypeDockerConfig       = "application/vnd.docker.container.image.v1+json"
	mediaTypeDockerLayer        = "application/vnd.docker.image.rootfs.diff.tar"
	mediaTypeDockerLayerGzip    = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	mediaTypeDockerForeignGzip  = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

	// OCI's non-distributable layers: deprecated for new images (so
	// ocispec marks its constants deprecated), still served by registries.
	mediaTypeOCINonDistributable     = "application/vnd.oci.image.layer.nondistributable.v1.tar"
	mediaTypeOCINonDistributableGzip = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
	mediaTypeOCINonDistributableZstd = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
)

// maxIndexDepth bounds indexes nested in indexes.
const maxIndexDepth = 4

type compression int

const (
	compressionNone compression = iota
	compressionGzip
	compressionZstd
)

// layerCompression maps a layer media type onto how its blob is compressed.
func layerCompression(mediaType string) (compression, error) {
	switch mediaType {
	case ocispec.MediaTypeImageLayer, mediaTypeOCINonDistributable, mediaTypeDockerLayer:
		return compressionNone, nil
	case ocispec.MediaTypeImageLayerGzip, mediaTypeOCINonDistributableGzip, mediaTypeDockerLayerGzip, mediaTypeDockerForeignGzip:
		return compressionGzip, nil
	case ocispec.MediaTypeImageLayerZstd, mediaTypeOCINonDistributableZstd:
		return compressionZstd, nil
	}
	return 0, fmt.Errorf("unsupported layer media type %q: %w", mediaType, errdefs.ErrNotImplemented)
}

// checkDigest accepts the digests this store's layout can hold: sha256.
func checkDigest(what string, d digest.Digest) error {
	if err := d.Validate(); err != nil {
		return fmt.Errorf("%s digest %q: %v: %w", what, d, err, errdefs.ErrInvalidArgument)
	}
	if d.Algorithm() != digest.SHA256 {
		return fmt.Errorf("%s digest %s: algorithm %s: %w", what, d, d.Algorithm(), errdefs.ErrNotImplemented)
	}
	return nil
}

// document is a verified manifest, index or config, written to blobs/ when
// the pull commits.
type document struct {
	digest digest.Digest
	data   []byte
}

// fetchDocument fetches desc, a JSON document of at most max bytes, and
// returns its verified bytes. The read is capped at the descriptor's size.
func (p *puller) fetchDocument(ctx context.Context, desc ocispec.Descriptor, what string, max int64) ([]byte, error) {
	if err := checkDigest(what, desc.Digest); err != nil {
		return nil, err
	}
	if desc.Size < 0 {
		return nil, fmt.Errorf("%s %s: negative size %d: %w", what, desc.Digest, desc.Size, errdefs.ErrInvalidArgument)
	}
	if desc.Size > max {
		return nil, fmt.Errorf("%s %s: size %d exceeds the limit of %d bytes: %w", what, desc.Digest, desc.Size, max, errdefs.ErrResourceExhausted)
	}
	limit := max // a descriptor without a size: the digest still guards it
	if desc.Size > 0 {
		limit = desc.Size
	}
	body, err := p.open(ctx, desc, what)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	b, err := io.ReadAll(io.LimitReader(body, limit+1))
	if err != nil {
		return nil, readErr(what, desc.Digest, err)
	}
	switch n := int64(len(b)); {
	case n > limit && desc.Size > 0:
		return nil, fmt.Errorf("%s %s: more than the %d bytes its descriptor says: %w", what, desc.Digest, desc.Size, errdefs.ErrDataLoss)
	case n > limit:
		return nil, fmt.Errorf("%s %s: exceeds the limit of %d bytes: %w", what, desc.Digest, max, errdefs.ErrResourceExhausted)
	case desc.Size > 0 && n != desc.Size:
		return nil, fmt.Errorf("%s %s: truncated: got %d of %d bytes: %w", what, desc.Digest, n, desc.Size, errdefs.ErrDataLoss)
	}
	if got := desc.Digest.Algorithm().FromBytes(b); got != desc.Digest {
		return nil, fmt.Errorf("%s: digest mismatch: got %s, want %s: %w", what, got, desc.Digest, errdefs.ErrDataLoss)
	}
	return b, nil
}

// docProbe holds the fields that tell manifests and indexes apart.
type docProbe struct {
	MediaType string          `json:"mediaType"`
	Config    json.RawMessage `json:"config"`
	Layers    json.RawMessage `json:"layers"`
	Manifests json.RawMessage `json:"manifests"`
}

// documentMediaType returns the media type of a manifest or index. The
// document's own mediaType field must agree with the descriptor's, and its
// shape with the type, so that a registry cannot pass an index off as a
// manifest or the reverse.
func documentMediaType(desc ocispec.Descriptor, b []byte) (string, error) {
	var probe docProbe
	if err := json.Unmarshal(b, &probe); err != nil {
		return "", fmt.Errorf("parse manifest %s: %v: %w", desc.Digest, err, errdefs.ErrInvalidArgument)
	}
	mt, _, _ := strings.Cut(desc.MediaType, ";") // a Content-Type may carry parameters
	mt = strings.TrimSpace(mt)
	switch mt {
	case "application/json", "application/octet-stream", "text/plain":
		// A generic type claims nothing about the document: trust its
		// own (verified) mediaType field.
		mt = ""
	}
	if probe.MediaType != "" && mt != "" && probe.MediaType != mt {
		return "", fmt.Errorf("manifest %s: document says media type %q, its descriptor %q: %w",
			desc.Digest, probe.MediaType, mt, errdefs.ErrInvalidArgument)
	}
	if mt == "" {
		mt = probe.MediaType
	}
	switch mt {
	case ocispec.MediaTypeImageIndex, mediaTypeDockerManifestList:
		if probe.Config != nil || probe.Layers != nil {
			return "", fmt.Errorf("index %s has config or layers: %w", desc.Digest, errdefs.ErrInvalidArgument)
		}
	case ocispec.MediaTypeImageManifest, mediaTypeDockerManifest:
		if probe.Manifests != nil {
			return "", fmt.Errorf("manifest %s has manifests: %w", desc.Digest, errdefs.ErrInvalidArgument)
		}
	case mediaTypeDockerSchema1:
		return "", fmt.Errorf("manifest %s: Docker schema 1 images are not supported: %w", desc.Digest, errdefs.ErrNotImplemented)
	case "":
		return "", fmt.Errorf("manifest %s has no media type: %w", desc.Digest, errdefs.ErrInvalidArgument)
	default:
		return "", fmt.Errorf("manifest %s: unsupported media type %q: %w", desc.Digest, mt, errdefs.ErrNotImplemented)
	}
	return mt, nil
}

// fetchManifest follows target through indexes to the image manifest for
// the store's platform. It returns the manifest's descriptor and content.
func (p *puller) fetchManifest(ctx context.Context, target ocispec.Descriptor) (ocispec.Descriptor, ocispec.Manifest, error) {
	desc := target
	for depth := 0; ; depth++ {
		b, err := p.fetchDocument(ctx, desc, "manifest", p.s.opts.MaxManifestSize)
		if err != nil {
			return desc, ocispec.Manifest{}, err
		}
		mt, err := documentMediaType(desc, b)
		if err != nil {
			return desc, ocispec.Manifest{}, err
		}
		p.docs = append(p.docs, document{digest: desc.Digest, data: b})
		if mt == ocispec.MediaTypeImageManifest || mt == mediaTypeDockerManifest {
			var m ocispec.Manifest
			if err := json.Unmarshal(b, &m); err != nil {
				return desc, m, fmt.Errorf("parse manifest %s: %v: %w", desc.Digest, err, errdefs.ErrInvalidArgument)
			}
			if m.SchemaVersion != 2 {
				return desc, m, fmt.Errorf("manifest %s: schema version %d: %w", desc.Digest, m.SchemaVersion, errdefs.ErrNotImplemented)
			}
			desc.MediaType = mt
			return desc, m, nil
		}
		if depth >= maxIndexDepth {
			return desc, ocispec.Manifest{}, fmt.Errorf("index %s: indexes nested deeper than %d: %w", desc.Digest, maxIndexDepth, errdefs.ErrInvalidArgument)
		}
		var idx ocispec.Index
		if err := json.Unmarshal(b, &idx); err != nil {
			return desc, ocispec.Manifest{}, fmt.Errorf("parse index %s: %v: %w", desc.Digest, err, errdefs.ErrInvalidArgument)
		}
		child, err := selectManifest(idx, p.s.platform)
		if err != nil {
			return desc, ocispec.Manifest{}, fmt.Errorf("index %s: %w", desc.Digest, err)
		}
		desc = child
	}
}

// selectManifest picks the entry of idx that best runs on platform; among
// equals, the first.
func selectManifest(idx ocispec.Index, platform ocispec.Platform) (ocispec.Descriptor, error) {
	best, bestScore := -1, 0
	for i, m := range idx.Manifests {
		if m.Platform == nil {
			continue
		}
		if sc := platformScore(platform, *m.Platform); sc > bestScore {
			best, bestScore = i, sc
		}
	}
	if best < 0 {
		p := platform.OS + "/" + platform.Architecture
		if platform.Variant != "" {
			p += "/" + platform.Variant
		}
		return ocispec.Descriptor{}, fmt.Errorf("no manifest for platform %s: %w", p, errdefs.ErrNotFound)
	}
	return idx.Manifests[best], nil
}

// fetchConfig fetches and checks the config m names.
func (p *puller) fetchConfig(ctx context.Context, m ocispec.Manifest) (ocispec.Image, error) {
	var cfg ocispec.Image
	switch m.Config.MediaType {
	case ocispec.MediaTypeImageConfig, mediaTypeDockerConfig:
	default:
		return cfg, fmt.Errorf("config media type %q is not a container image's: %w", m.Config.MediaType, errdefs.ErrNotImplemented)
	}
	b, err := p.fetchDocument(ctx, m.Config, "config", p.s.opts.MaxConfigSize)
	if err != nil {
		return cfg, err
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return cfg, fmt.Errorf("parse config %s: %v: %w", m.Config.Digest, err, errdefs.ErrInvalidArgument)
	}
	if cfg.RootFS.Type != "layers" {
		return cfg, fmt.Errorf("config %s: rootfs type %q is not \"layers\": %w", m.Config.Digest, cfg.RootFS.Type, errdefs.ErrInvalidArgument)
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return cfg, fmt.Errorf("config %s lists %d diff-ids for the manifest's %d layers: %w",
			m.Config.Digest, len(cfg.RootFS.DiffIDs), len(m.Layers), errdefs.ErrInvalidArgument)
	}
	for i, d := range cfg.RootFS.DiffIDs {
		if err := checkDigest("diff-id", d); err != nil {
			return cfg, fmt.Errorf("config %s: %w", m.Config.Digest, err)
		}
		l := m.Layers[i]
		if err := checkDigest("layer", l.Digest); err != nil {
			return cfg, err
		}
		if l.Size < 0 {
			return cfg, fmt.Errorf("layer %s: negative size %d: %w", l.Digest, l.Size, errdefs.ErrInvalidArgument)
		}
		comp, err := layerCompression(l.MediaType)
		if err != nil {
			return cfg, fmt.Errorf("layer %s: %w", l.Digest, err)
		}
		// An uncompressed layer is its own diff: verifying the blob's
		// digest verifies the diff-id.
		if comp == compressionNone && d != l.Digest {
			return cfg, fmt.Errorf("layer %s: diff-id mismatch: uncompressed, but the config says %s: %w", l.Digest, d, errdefs.ErrDataLoss)
		}
	}
	p.docs = append(p.docs, document{digest: m.Config.Digest, data: b})
	p.configData = b
	return cfg, nil
}

// stallError is the error of a fetch that made no progress for the
// timeout. It names what was pulled and needs no more context.
type stallError struct{ msg string }

func (e *stallError) Error() string { return e.msg }
func (e *stallError) Unwrap() error { return errdefs.ErrUnavailable }

// readErr adds context to an error reading a fetched body, unless it is a
// stall, which names what was fetched already.
func readErr(what string, d digest.Digest, err error) error {
	var se *stallError
	if errors.As(err, &se) {
		return se
	}
	return fmt.Errorf("read %s %s: %w", what, d, err)
}

// progressBody is a fetched body whose reads count as progress. If the
// fetch, then the reads of its body, make no progress for the timeout, the
// fetch's context is cancelled and the body closed, and reads fail with
// errStall.
type progressBody struct {
	timeout  time.Duration
	start    time.Time
	last     atomic.Int64 // last progress, in nanoseconds since start
	stalled  atomic.Bool
	errStall error
	cancel   context.CancelCauseFunc
	timer    *time.Timer
	rc       io.ReadCloser // set once by open, before any Read

	mu     sync.Mutex
	closed bool
}

// open fetches desc through the pull's Fetcher under the progress timeout.
func (p *puller) open(ctx context.Context, desc ocispec.Descriptor, what string) (*progressBody, error) {
	timeout := p.s.opts.ProgressTimeout
	ctx, cancel := context.WithCancelCause(ctx)
	b := &progressBody{
		timeout:  timeout,
		start:    time.Now(),
		cancel:   cancel,
		errStall: &stallError{msg: fmt.Sprintf("no progress for %s pulling %s %s: %v", timeout, what, desc.Digest, errdefs.ErrUnavailable)},
	}
	b.timer = time.AfterFunc(timeout, b.check)
	rc, err := p.fetcher.Fetch(ctx, desc)
	if err != nil {
		b.stop()
		if b.stalled.Load() {
			return nil, b.errStall
		}
		return nil, fmt.Errorf("fetch %s %s: %w", what, desc.Digest, err)
	}
	b.mu.Lock()
	stalled := b.closed
	b.rc = rc
	b.mu.Unlock()
	if stalled {
		rc.Close()
		return nil, b.errStall
	}
	b.last.Store(int64(time.Since(b.start)))
	return b, nil
}

func (b *progressBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if n > 0 {
		b.last.Store(int64(time.Since(b.start)))
	}
	if err != nil && b.stalled.Load() {
		return n, b.errStall
	}
	return n, err
}

// check runs when the timer fires: it re-arms the timer when there was
// progress since, and aborts the fetch otherwise.
func (b *progressBody) check() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	idle := time.Since(b.start) - time.Duration(b.last.Load())
	if idle < b.timeout {
		b.timer.Reset(b.timeout - idle)
		return
	}
	b.stalled.Store(true)
	b.cancel(b.errStall)
	b.closed = true
	if b.rc != nil {
		// Closing unblocks a Read stuck on the network.
		b.rc.Close()
	}
}

func (b *progressBody) stop() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.timer.Stop()
	b.cancel(nil)
}

func (b *progressBody) Close() error {
	b.mu.Lock()
	already := b.closed
	b.closed = true
	b.mu.Unlock()
	b.timer.Stop()
	var err error
	if !already {
		err = b.rc.Close()
	}
	b.cancel(nil)
	return err
}
