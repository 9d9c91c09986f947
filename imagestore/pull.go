package imagestore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"os"
	"slices"
	"time"

	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/crid-dev/crid/imagestore/registry"
	"github.com/crid-dev/crid/internal/cleanup"
	"github.com/crid-dev/crid/internal/log"
)

// Pull fetches the image ref names for the store's platform, unless it is
// stored already, and records it under ref's tag and its repo digest.
// Concurrent pulls of the same reference with the same credentials share
// one operation, which is cancelled only when all their callers have gone.
func (s *Store) Pull(ctx context.Context, ref string, creds *registry.Credentials) (Image, error) {
	named, err := ParseRef(ref)
	if err != nil {
		return Image{}, err
	}
	return s.pulls.do(ctx, pullKey(named, creds), func(ctx context.Context) (Image, error) {
		return s.pull(ctx, named, creds)
	})
}

// pullKey identifies a pull by reference and credentials; the credentials
// are hashed so that the key does not carry secrets.
func pullKey(ref reference.Named, creds *registry.Credentials) string {
	h := sha256.New()
	if !creds.Empty() {
		for _, f := range []string{creds.Username, creds.Password, creds.Auth, creds.ServerAddress, creds.IdentityToken, creds.RegistryToken} {
			fmt.Fprintf(h, "%d:%s", len(f), f)
		}
	}
	return ref.String() + " " + hex.EncodeToString(h.Sum(nil))
}

// puller is the state of one pull. Its fields are set by the pull's
// goroutine; layerJob fields by the job's goroutine, read by the pull's
// after the jobs have ended.
type puller struct {
	s          *Store
	ref        reference.Named
	fetcher    registry.Fetcher
	docs       []document
	configData []byte
	// held are the existing layers this pull holds (layerRecord.holds).
	held []digest.Digest
	// jobs are the layers this pull creates, bottom first.
	jobs []*layerJob
}

func (s *Store) pull(ctx context.Context, ref reference.Named, creds *registry.Credentials) (img Image, err error) {
	start := time.Now()
	log.G(ctx).Debug("pulling image", "image", ref.String())
	defer func() {
		log.G(ctx).Debug("pull finished", "image", ref.String(), "id", img.ID, "duration", time.Since(start), "error", err)
	}()

	p := &puller{s: s, ref: ref}
	target, fetcher, err := s.opts.Resolver.Resolve(ctx, ref, creds)
	if err != nil {
		return Image{}, fmt.Errorf("resolve %s: %w", ref, err)
	}
	if fetcher == nil {
		return Image{}, fmt.Errorf("resolve %s: no fetcher: %w", ref, errdefs.ErrInternal)
	}
	if d, ok := ref.(reference.Digested); ok && target.Digest != d.Digest() {
		return Image{}, fmt.Errorf("resolve %s: registry answered %s: %w", ref, target.Digest, errdefs.ErrDataLoss)
	}
	p.fetcher = fetcher

	mdesc, m, err := p.fetchManifest(ctx, target)
	if err != nil {
		return Image{}, err
	}
	cfg, err := p.fetchConfig(ctx, m)
	if err != nil {
		return Image{}, err
	}
	chain := ChainIDs(cfg.RootFS.DiffIDs)

	cu := cleanup.New(ctx)
	defer cu.Run()
	// Registered before planning: planning takes chain locks and holds, and
	// the layer jobs create snapshots; abort undoes whatever of that exists.
	cu.Add("abort layers of "+ref.String(), p.abort)
	if err := p.plan(ctx, chain, m.Layers, cfg.RootFS.DiffIDs); err != nil {
		return Image{}, err
	}
	if err := p.pullLayers(ctx); err != nil {
		return Image{}, err
	}
	img, err = s.commit(ctx, p, commitArgs{target: target, manifest: mdesc, config: m.Config, image: cfg, chain: chain})
	if err != nil {
		return Image{}, err
	}
	cu.Release()
	return img, nil
}

// heldChains are the layers this pull holds: the existing ones it reuses
// and the ones it recorded.
func (p *puller) heldChains() []digest.Digest {
	out := slices.Clone(p.held)
	for _, j := range p.jobs {
		if j.recorded {
			out = append(out, j.chainID)
		}
	}
	return out
}

// abort undoes a failed pull's layer work: it removes the snapshots it
// created but did not record (recorded layers stay, a retry reuses them),
// forgets their cache-ids, releases its chain locks and its holds.
func (p *puller) abort(ctx context.Context) error {
	s := p.s
	var errs []error
	for i := len(p.jobs) - 1; i >= 0; i-- {
		j := p.jobs[i]
		if j.unpacked && !j.recorded {
			if err := s.opts.Unpacker.Remove(ctx, j.cacheID); err != nil {
				errs = append(errs, fmt.Errorf("remove snapshot %s of layer %s: %w", j.cacheID, j.chainID, err))
			}
		}
	}
	s.mu.Lock()
	for _, j := range p.jobs {
		if !j.recorded {
			delete(s.inflight, j.cacheID)
		}
	}
	s.releaseHoldsLocked(p.heldChains())
	s.mu.Unlock()
	for _, j := range p.jobs {
		if j.locked {
			s.chains.unlock(j.chainID)
			j.locked = false
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("abort pull: %v", errs)
	}
	return nil
}

// holdLayer holds the layer chainID for a pull when it exists.
func (s *Store) holdLayer(chainID digest.Digest) (Layer, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.layers[chainID]
	if !ok {
		return Layer{}, false
	}
	l.holds++
	return l.Layer, true
}

// releaseHoldsLocked drops a pull's holds. It frees nothing: a layer left
// without users by a failed pull stays for a retry until the next Remove or
// restart.
// Precondition: s.mu held.
func (s *Store) releaseHoldsLocked(chains []digest.Digest) {
	for _, c := range chains {
		if l, ok := s.layers[c]; ok && l.holds > 0 {
			l.holds--
		}
	}
}

type commitArgs struct {
	target   ocispec.Descriptor // what the reference resolved to
	manifest ocispec.Descriptor // the platform's image manifest
	config   ocispec.Descriptor
	image    ocispec.Image
	chain    []digest.Digest
}

// commit records a pulled image whose layers are all in layerdb: blobs,
// imagedb content and metadata, then repositories.json. It turns the pull's
// holds into the image's references.
func (s *Store) commit(ctx context.Context, p *puller, a commitArgs) (Image, error) {
	id := a.config.Digest
	tag := repoTag(p.ref)
	rdigest := repoDigest(p.ref, a.target.Digest)

	s.mu.Lock()
	defer s.mu.Unlock()
	rec, exists := s.images[id]
	var meta imageMeta
	if exists {
		meta = rec.meta
		meta.RepoDigests = slices.Clone(meta.RepoDigests)
		meta.Blobs = slices.Clone(meta.Blobs)
	}
	meta.ManifestDigest = a.manifest.Digest
	meta.Pulled = time.Now().UTC()
	if !slices.Contains(meta.RepoDigests, rdigest) {
		meta.RepoDigests = append(meta.RepoDigests, rdigest)
		slices.Sort(meta.RepoDigests)
	}
	for _, d := range p.docs {
		if !slices.Contains(meta.Blobs, d.digest) {
			meta.Blobs = append(meta.Blobs, d.digest)
		}
	}

	cu := cleanup.New(ctx)
	defer cu.Run() // runs before the deferred Unlock: s.mu is held
	if err := s.writeImageLocked(cu, p, id, rec, meta); err != nil {
		return Image{}, err
	}
	oldRefs := s.refs
	s.refs = maps.Clone(oldRefs)
	if tag != "" {
		s.refs[tag] = id
	}
	s.refs[rdigest] = id
	if err := s.writeReposLocked(); err != nil {
		s.refs = oldRefs
		return Image{}, err
	}
	cu.Release()

	if !exists {
		rec = &imageRecord{id: id, config: a.image, chain: a.chain}
		s.images[id] = rec
		for _, c := range a.chain {
			s.layers[c].refs++
		}
	}
	rec.meta = meta
	s.releaseHoldsLocked(p.heldChains())
	p.held, p.jobs = nil, nil
	return s.imageLocked(rec), nil
}

// writeImageLocked writes the blobs of a pull, the config of image id when
// it is new (rec is nil) and its metadata, registering their undoing on cu.
// Precondition: s.mu held.
func (s *Store) writeImageLocked(cu *cleanup.Cleanup, p *puller, id digest.Digest, rec *imageRecord, meta imageMeta) error {
	for _, d := range p.docs {
		path := s.blobPath(d.digest)
		if _, err := os.Stat(path); err == nil {
			continue
		}
		if err := s.installFile(path, d.data); err != nil {
			return fmt.Errorf("write blob %s: %w", d.digest, err)
		}
		cu.Add("remove blob "+d.digest.String(), func(context.Context) error { return os.Remove(path) })
	}
	if rec == nil {
		if err := s.installFile(s.contentPath(id), p.configData); err != nil {
			return fmt.Errorf("write image %s: %w", id, err)
		}
		cu.Add("remove image config "+id.String(), func(context.Context) error { return os.Remove(s.contentPath(id)) })
	}
	if err := s.writeMeta(id, meta); err != nil {
		return fmt.Errorf("write metadata of image %s: %w", id, err)
	}
	if rec != nil {
		old := rec.meta
		cu.Add("restore metadata of image "+id.String(), func(context.Context) error { return s.writeMeta(id, old) })
	} else {
		cu.Add("remove metadata of image "+id.String(), func(context.Context) error { return os.RemoveAll(s.metadataDir(id)) })
	}
	return nil
}
