package imagestore

import (
	"context"
	"os"
	"slices"

	"github.com/opencontainers/go-digest"

	"github.com/crid-dev/crid/internal/cleanup"
	"github.com/crid-dev/crid/internal/log"
)

// Remove deletes the image ref names (as Get resolves it) with all its tags
// and digests, as CRI's RemoveImage does, then frees the layers no other
// image uses (and those failed pulls left that no pull holds): their layerdb
// entries and their snapshots, top layer first.
// An unknown image returns an error wrapping errdefs.ErrNotFound.
func (s *Store) Remove(ctx context.Context, ref string) error {
	s.mu.Lock()
	rec, err := s.lookupLocked(ref)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	freed, err := s.removeImageLocked(ctx, rec)
	s.mu.Unlock()
	if err != nil {
		return err
	}
	s.freeLayers(ctx, freed)
	return nil
}

// freedLayer is a layer whose layerdb entry was moved to tmp/ and whose
// snapshot is still to be removed.
type freedLayer struct {
	chainID digest.Digest
	moved   string // under tmp/
	cacheID string
}

// removeImageLocked forgets rec and moves the layers it alone used out of
// layerdb. The metadata goes first: an image without it is dropped by
// recovery, so a crash part way leaves nothing half-visible.
// Precondition: s.mu held.
func (s *Store) removeImageLocked(ctx context.Context, rec *imageRecord) ([]freedLayer, error) {
	moved, err := s.discard(s.metadataDir(rec.id))
	if err != nil {
		return nil, err
	}
	if err := os.RemoveAll(moved); err != nil {
		log.G(ctx).Warn("removing image metadata failed", "id", rec.id, "error", err)
	}
	if err := os.Remove(s.contentPath(rec.id)); err != nil {
		log.G(ctx).Warn("removing image config failed", "id", rec.id, "error", err)
	}
	delete(s.images, rec.id)
	for ref, id := range s.refs {
		if id == rec.id {
			delete(s.refs, ref)
		}
	}
	if err := s.writeReposLocked(); err != nil {
		// Recovery drops references to images without metadata.
		log.G(ctx).Warn("rewriting repositories after image removal failed", "id", rec.id, "error", err)
	}
	s.removeBlobsLocked(ctx, rec.meta.Blobs)
	for _, c := range rec.chain {
		if l, ok := s.layers[c]; ok {
			l.refs--
		}
	}
	// The image's layers no other image uses, and any layer a failed pull
	// left that no pull holds: kubelet removes images to free disk.
	candidates := slices.Clone(rec.chain)
	for c, l := range s.layers {
		if l.refs <= 0 && l.holds <= 0 {
			candidates = append(candidates, c)
		}
	}
	return s.unlinkUnusedLocked(ctx, candidates), nil
}

// removeBlobsLocked removes blobs no remaining image lists.
// Precondition: s.mu held.
func (s *Store) removeBlobsLocked(ctx context.Context, blobs []digest.Digest) {
	for _, b := range blobs {
		used := false
		for _, other := range s.images {
			if slices.Contains(other.meta.Blobs, b) {
				used = true
				break
			}
		}
		if used {
			continue
		}
		if err := os.Remove(s.blobPath(b)); err != nil && !os.IsNotExist(err) {
			log.G(ctx).Warn("removing blob failed", "blob", b, "error", err)
		}
	}
}

// unlinkUnusedLocked moves out of layerdb the layers of candidates that no
// image and no pull uses, together with their unused descendants (layers a
// failed pull left), top down. It returns them for freeLayers.
// Precondition: s.mu held.
func (s *Store) unlinkUnusedLocked(ctx context.Context, candidates []digest.Digest) []freedLayer {
	unused := func(l *layerRecord) bool { return l.refs <= 0 && l.holds <= 0 }
	set := make(map[digest.Digest]bool)
	for _, c := range candidates {
		if l, ok := s.layers[c]; ok && unused(l) {
			set[c] = true
		}
	}
	// Add unused descendants until nothing changes.
	for grew := len(set) > 0; grew; {
		grew = false
		for c, l := range s.layers {
			if !set[c] && set[l.Parent] && unused(l) {
				set[c] = true
				grew = true
			}
		}
	}
	order := make([]digest.Digest, 0, len(set))
	for c := range set {
		order = append(order, c)
	}
	depth := func(c digest.Digest) int { return s.depthLocked(c) }
	slices.SortFunc(order, func(a, b digest.Digest) int { return depth(b) - depth(a) })

	var out []freedLayer
	for _, c := range order {
		l := s.layers[c]
		moved, err := s.discard(s.layerDir(c))
		if err != nil {
			// Keep it and everything below it: recovery retries at start.
			log.G(ctx).Warn("removing layer failed", "chainid", c, "error", err)
			break
		}
		delete(s.layers, c)
		out = append(out, freedLayer{chainID: c, moved: moved, cacheID: l.CacheID})
	}
	return out
}

// depthLocked is the number of layers below c in layerdb.
// Precondition: s.mu held.
func (s *Store) depthLocked(c digest.Digest) int {
	n := 0
	for l, ok := s.layers[c]; ok && l.Parent != "" && n <= len(s.layers); l, ok = s.layers[l.Parent] {
		n++
	}
	return n
}

// freeLayers deletes what unlinkUnusedLocked moved out, in its order. A
// snapshot that cannot be removed is logged and left to the daemon's sweep
// of cache-ids no layer owns.
func (s *Store) freeLayers(ctx context.Context, freed []freedLayer) {
	if len(freed) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanup.Timeout)
	defer cancel()
	for _, f := range freed {
		if err := os.RemoveAll(f.moved); err != nil {
			log.G(ctx).Warn("removing layer entry failed", "chainid", f.chainID, "error", err)
		}
		if err := s.opts.Unpacker.Remove(ctx, f.cacheID); err != nil {
			log.G(ctx).Warn("removing layer snapshot failed", "chainid", f.chainID, "cacheid", f.cacheID, "error", err)
		}
	}
}
