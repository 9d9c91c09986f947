package imagestore

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/crid-dev/crid/internal/log"
)

// recoverState loads the layout into memory, repairing as it goes:
//   - a layer whose files are incomplete or inconsistent is dropped, and so
//     is every layer above it;
//   - an image whose config, metadata or layers are missing is dropped;
//   - a reference to a missing image is dropped; a repo digest the
//     metadata knows but repositories.json lost is put back;
//   - layers no image uses (left by a failed or interrupted pull), blobs no
//     image lists and stale diff-id records are deleted.
//
// Only an unreadable directory fails it; each bad entry is logged.
func (s *Store) recoverState(ctx context.Context) error {
	if err := s.loadLayers(ctx); err != nil {
		return err
	}
	if err := s.loadImages(ctx); err != nil {
		return err
	}
	s.loadRefs(ctx)
	var unused []digest.Digest
	for c, l := range s.layers {
		if l.refs == 0 {
			unused = append(unused, c)
		}
	}
	if len(unused) > 0 {
		log.G(ctx).Debug("removing layers no image uses", "count", len(unused))
		s.mu.Lock()
		freed := s.unlinkUnusedLocked(ctx, unused)
		s.mu.Unlock()
		s.freeLayers(ctx, freed)
	}
	s.sweepFiles(ctx)
	return nil
}

// hexEntries lists the names in dir that are 64 hex characters, and
// deletes the others.
func (s *Store) hexEntries(ctx context.Context, dir string) ([]digest.Digest, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("imagestore: read %s: %w", dir, err)
	}
	var out []digest.Digest
	for _, e := range entries {
		d := digest.NewDigestFromEncoded(digest.SHA256, e.Name())
		if d.Validate() != nil {
			log.G(ctx).Warn("imagestore: removing unexpected entry", "path", filepath.Join(dir, e.Name()))
			if err := s.removeEntry(filepath.Join(dir, e.Name())); err != nil {
				log.G(ctx).Warn("imagestore: removing unexpected entry failed", "path", filepath.Join(dir, e.Name()), "error", err)
			}
			continue
		}
		out = append(out, d)
	}
	return out, nil
}

func (s *Store) loadLayers(ctx context.Context) error {
	chains, err := s.hexEntries(ctx, filepath.Join(s.root, "layerdb", "sha256"))
	if err != nil {
		return err
	}
	loaded := make(map[digest.Digest]Layer, len(chains))
	type dropped struct {
		chainID digest.Digest
		cacheID string
		why     string
	}
	var drop []dropped
	for _, c := range chains {
		l, err := s.readLayer(c)
		if err != nil {
			cacheID := ""
			if isCacheID(l.CacheID) {
				cacheID = l.CacheID
			}
			drop = append(drop, dropped{c, cacheID, err.Error()})
			continue
		}
		loaded[c] = l
	}
	// A layer stands if its parent does. Walk down from each layer; the
	// verified chain-ids make cycles impossible, the bound makes sure.
	ok := make(map[digest.Digest]bool, len(loaded))
	var stands func(c digest.Digest, depth int) bool
	stands = func(c digest.Digest, depth int) bool {
		if v, seen := ok[c]; seen {
			return v
		}
		l, exists := loaded[c]
		v := exists && depth <= len(loaded) && (l.Parent == "" || stands(l.Parent, depth+1))
		ok[c] = v
		return v
	}
	for c, l := range loaded {
		if stands(c, 0) {
			s.layers[c] = &layerRecord{Layer: l}
			continue
		}
		drop = append(drop, dropped{c, l.CacheID, "parent " + l.Parent.String() + " is missing"})
	}
	depth := func(c digest.Digest) int {
		n := 0
		for l, ok := loaded[c]; ok && l.Parent != "" && n <= len(loaded); l, ok = loaded[l.Parent] {
			n++
		}
		return n
	}
	slices.SortFunc(drop, func(a, b dropped) int { return depth(b.chainID) - depth(a.chainID) })
	for _, d := range drop {
		log.G(ctx).Warn("imagestore: dropping broken layer", "chainid", d.chainID, "reason", d.why)
		if err := s.removeEntry(s.layerDir(d.chainID)); err != nil {
			log.G(ctx).Warn("imagestore: removing broken layer failed", "chainid", d.chainID, "error", err)
		}
		if d.cacheID != "" {
			if err := s.opts.Unpacker.Remove(ctx, d.cacheID); err != nil {
				log.G(ctx).Warn("imagestore: removing snapshot of broken layer failed", "chainid", d.chainID, "cacheid", d.cacheID, "error", err)
			}
		}
	}
	return nil
}

func (s *Store) loadImages(ctx context.Context) error {
	ids, err := s.hexEntries(ctx, filepath.Join(s.root, "imagedb", "content", "sha256"))
	if err != nil {
		return err
	}
	for _, id := range ids {
		rec, err := s.readImage(id)
		if err != nil {
			log.G(ctx).Warn("imagestore: dropping broken image", "id", id, "reason", err)
			for _, p := range []string{s.metadataDir(id), s.contentPath(id)} {
				if err := s.removeEntry(p); err != nil {
					log.G(ctx).Warn("imagestore: removing broken image failed", "path", p, "error", err)
				}
			}
			continue
		}
		s.images[id] = rec
		for _, c := range rec.chain {
			s.layers[c].refs++
		}
	}
	// Metadata without a config is what a crash leaves in the middle of a
	// removal.
	metas, err := s.hexEntries(ctx, filepath.Join(s.root, "imagedb", "metadata", "sha256"))
	if err != nil {
		return err
	}
	for _, id := range metas {
		if _, ok := s.images[id]; !ok {
			if err := s.removeEntry(s.metadataDir(id)); err != nil {
				log.G(ctx).Warn("imagestore: removing stray image metadata failed", "id", id, "error", err)
			}
		}
	}
	return nil
}

// readImage reads and checks the image id: its config must hash to id and
// its metadata and every layer must be present.
func (s *Store) readImage(id digest.Digest) (*imageRecord, error) {
	b, err := os.ReadFile(s.contentPath(id))
	if err != nil {
		return nil, err
	}
	if got := digest.FromBytes(b); got != id {
		return nil, fmt.Errorf("config hashes to %s", got)
	}
	var cfg ocispec.Image
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("parse config: %w", err)
	}
	for _, d := range cfg.RootFS.DiffIDs {
		if err := checkDigest("diff-id", d); err != nil {
			return nil, err
		}
	}
	meta, err := s.readMeta(id)
	if err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	chain := ChainIDs(cfg.RootFS.DiffIDs)
	for _, c := range chain {
		if _, ok := s.layers[c]; !ok {
			return nil, fmt.Errorf("layer %s is missing", c)
		}
	}
	return &imageRecord{id: id, config: cfg, chain: chain, meta: meta}, nil
}

// loadRefs reads repositories.json, keeping the references to images that
// exist and adding the repo digests of their metadata.
func (s *Store) loadRefs(ctx context.Context) {
	repos, err := s.readRepos()
	changed := false
	if err != nil {
		log.G(ctx).Warn("imagestore: repositories.json is unreadable; rebuilding it from image metadata", "error", err)
		changed = true
	}
	for name, refs := range repos.Repositories {
		for ref, id := range refs {
			named, perr := ParseRef(ref)
			switch {
			case perr != nil || lookupKey(named) != ref || named.Name() != name:
				log.G(ctx).Warn("imagestore: dropping malformed reference", "ref", ref)
			case s.images[id] == nil:
				log.G(ctx).Warn("imagestore: dropping reference to a missing image", "ref", ref, "id", id)
			default:
				s.refs[ref] = id
				continue
			}
			changed = true
		}
	}
	for id, rec := range s.images {
		for _, rd := range rec.meta.RepoDigests {
			if _, ok := s.refs[rd]; !ok {
				if named, err := ParseRef(rd); err == nil && lookupKey(named) == rd {
					s.refs[rd] = id
					changed = true
				}
			}
		}
	}
	if changed {
		s.mu.Lock()
		err := s.writeReposLocked()
		s.mu.Unlock()
		if err != nil {
			log.G(ctx).Warn("imagestore: rewriting repositories.json failed", "error", err)
		}
	}
}

// sweepFiles deletes blobs no image lists, diff-id records of layers that
// are gone and the temp files of interrupted atomic writes.
func (s *Store) sweepFiles(ctx context.Context) {
	listed := make(map[digest.Digest]bool)
	for _, rec := range s.images {
		for _, b := range rec.meta.Blobs {
			listed[b] = true
		}
	}
	if blobs, err := s.hexEntries(ctx, filepath.Join(s.root, "blobs", "sha256")); err == nil {
		for _, b := range blobs {
			if !listed[b] {
				log.G(ctx).Debug("imagestore: removing unused blob", "blob", b)
				if err := os.Remove(s.blobPath(b)); err != nil {
					log.G(ctx).Warn("imagestore: removing unused blob failed", "blob", b, "error", err)
				}
			}
		}
	}
	diffs := make(map[digest.Digest]bool)
	for _, l := range s.layers {
		diffs[l.DiffID] = true
	}
	if blobs, err := s.hexEntries(ctx, filepath.Join(s.root, "distribution", "diffid-by-digest", "sha256")); err == nil {
		for _, b := range blobs {
			data, err := os.ReadFile(s.diffIDPath(b))
			if err == nil && diffs[digest.Digest(data)] {
				continue
			}
			if err := os.Remove(s.diffIDPath(b)); err != nil {
				log.G(ctx).Warn("imagestore: removing stale diff-id record failed", "blob", b, "error", err)
			}
		}
	}
	temps, _ := filepath.Glob(filepath.Join(s.root, atomicTmpPrefix+"*"))
	metaTemps, _ := filepath.Glob(filepath.Join(s.root, "imagedb", "metadata", "sha256", "*", atomicTmpPrefix+"*"))
	for _, t := range append(temps, metaTemps...) {
		if err := os.Remove(t); err != nil {
			log.G(ctx).Warn("imagestore: removing temp file failed", "path", t, "error", err)
		}
	}
}
