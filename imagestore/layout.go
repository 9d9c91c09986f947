package imagestore

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"

	"github.com/crid-dev/crid/internal/atomicfile"
)

// formatVersion is the on-disk format this code reads and writes.
const formatVersion = 1

// Names inside the root (see doc.go).
const (
	versionFile     = "VERSION"
	reposFile       = "repositories.json"
	metadataFile    = "metadata.json"
	diffFile        = "diff"
	parentFile      = "parent"
	sizeFile        = "size"
	cacheIDFile     = "cache-id"
	atomicTmpPrefix = ".tmp-" // atomicfile's temp files
)

func (s *Store) tmpDir() string { return filepath.Join(s.root, "tmp") }

func (s *Store) blobPath(d digest.Digest) string {
	return filepath.Join(s.root, "blobs", d.Algorithm().String(), d.Encoded())
}

func (s *Store) contentPath(id digest.Digest) string {
	return filepath.Join(s.root, "imagedb", "content", id.Algorithm().String(), id.Encoded())
}

func (s *Store) metadataDir(id digest.Digest) string {
	return filepath.Join(s.root, "imagedb", "metadata", id.Algorithm().String(), id.Encoded())
}

func (s *Store) layerDir(chainID digest.Digest) string {
	return filepath.Join(s.root, "layerdb", chainID.Algorithm().String(), chainID.Encoded())
}

func (s *Store) diffIDPath(blob digest.Digest) string {
	return filepath.Join(s.root, "distribution", "diffid-by-digest", blob.Algorithm().String(), blob.Encoded())
}

// init creates the layout, checks VERSION and empties tmp/.
func (s *Store) init() error {
	if err := os.MkdirAll(s.root, 0o700); err != nil {
		return fmt.Errorf("imagestore: create root: %w", err)
	}
	vpath := filepath.Join(s.root, versionFile)
	b, err := os.ReadFile(vpath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := atomicfile.WriteFile(vpath, []byte(strconv.Itoa(formatVersion)), 0o600); err != nil {
			return fmt.Errorf("imagestore: write %s: %w", versionFile, err)
		}
	case err != nil:
		return fmt.Errorf("imagestore: read %s: %w", versionFile, err)
	default:
		v, perr := strconv.Atoi(strings.TrimSpace(string(b)))
		if perr != nil || v < 1 {
			return fmt.Errorf("imagestore: %s holds unknown format version %q: %w", vpath, strings.TrimSpace(string(b)), errdefs.ErrFailedPrecondition)
		}
		if v > formatVersion {
			return fmt.Errorf("imagestore: %s is format version %d, newer than the %d this crid supports; use a newer crid or move the directory away: %w",
				s.root, v, formatVersion, errdefs.ErrFailedPrecondition)
		}
	}
	if err := os.RemoveAll(s.tmpDir()); err != nil {
		return fmt.Errorf("imagestore: empty tmp: %w", err)
	}
	for _, d := range []string{
		"tmp",
		filepath.Join("blobs", "sha256"),
		filepath.Join("imagedb", "content", "sha256"),
		filepath.Join("imagedb", "metadata", "sha256"),
		filepath.Join("layerdb", "sha256"),
		filepath.Join("distribution", "diffid-by-digest", "sha256"),
	} {
		if err := os.MkdirAll(filepath.Join(s.root, d), 0o700); err != nil {
			return fmt.Errorf("imagestore: create %s: %w", d, err)
		}
	}
	return nil
}

// newCacheID returns 64 random hex characters.
func newCacheID() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate cache-id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

func isCacheID(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

// writeSynced writes data to a new file at path and fsyncs it.
func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// installFile writes data to a file staged in tmp/ and renames it to path,
// so that path holds either nothing or all of data.
func (s *Store) installFile(path string, data []byte) error {
	f, err := os.CreateTemp(s.tmpDir(), "file-")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return atomicfile.SyncDir(filepath.Dir(path))
}

// discard moves path into tmp/ (one rename, so it disappears from the
// layout at once) and returns the new name for a later os.RemoveAll ("" when
// path did not exist).
func (s *Store) discard(path string) (string, error) {
	dst, err := os.MkdirTemp(s.tmpDir(), "rm-")
	if err != nil {
		return "", err
	}
	moved := filepath.Join(dst, filepath.Base(path))
	if err := os.Rename(path, moved); err != nil {
		_ = os.Remove(dst)
		if errors.Is(err, fs.ErrNotExist) {
			return "", nil
		}
		return "", err
	}
	return dst, nil
}

// removeEntry deletes path (a file or directory) through discard.
func (s *Store) removeEntry(path string) error {
	moved, err := s.discard(path)
	if err != nil {
		return err
	}
	return os.RemoveAll(moved)
}

// stageLayer writes l's layerdb entry, fsynced, into a new directory under
// tmp/ and returns it; the caller renames it into layerdb.
func (s *Store) stageLayer(l Layer) (string, error) {
	dir, err := os.MkdirTemp(s.tmpDir(), "layer-")
	if err != nil {
		return "", err
	}
	files := []struct{ name, data string }{
		{diffFile, l.DiffID.String()},
		{sizeFile, strconv.FormatInt(l.Size, 10)},
		{cacheIDFile, l.CacheID},
	}
	if l.Parent != "" {
		files = append(files, struct{ name, data string }{parentFile, l.Parent.String()})
	}
	for _, f := range files {
		if err := writeSynced(filepath.Join(dir, f.name), []byte(f.data)); err != nil {
			_ = os.RemoveAll(dir)
			return "", err
		}
	}
	if err := atomicfile.SyncDir(dir); err != nil {
		_ = os.RemoveAll(dir)
		return "", err
	}
	return dir, nil
}

// readLayer reads and checks the layerdb entry of chainID.
func (s *Store) readLayer(chainID digest.Digest) (Layer, error) {
	dir := s.layerDir(chainID)
	read := func(name string) (string, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		return string(b), err
	}
	l := Layer{ChainID: chainID}
	diff, err := read(diffFile)
	if err != nil {
		return l, err
	}
	if l.DiffID, err = digest.Parse(diff); err != nil {
		return l, fmt.Errorf("diff: %w", err)
	}
	size, err := read(sizeFile)
	if err != nil {
		return l, err
	}
	if l.Size, err = strconv.ParseInt(size, 10, 64); err != nil || l.Size < 0 {
		return l, fmt.Errorf("size %q is not a size", size)
	}
	if l.CacheID, err = read(cacheIDFile); err != nil {
		return l, err
	}
	if !isCacheID(l.CacheID) {
		return l, fmt.Errorf("cache-id %q is not 64 hex characters", l.CacheID)
	}
	parent, err := read(parentFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return l, err
	default:
		if l.Parent, err = digest.Parse(parent); err != nil {
			return l, fmt.Errorf("parent: %w", err)
		}
	}
	var want digest.Digest
	if l.Parent == "" {
		want = l.DiffID
	} else {
		want = ChainIDs([]digest.Digest{l.Parent, l.DiffID})[1]
	}
	if want != chainID {
		return l, fmt.Errorf("chain-id of diff %s on parent %q is %s, not %s", l.DiffID, l.Parent, want, chainID)
	}
	return l, nil
}

// ChainIDs returns the chain-id of each layer of a stack whose diff-ids
// are diffIDs (bottom first): chain-id(L1) = diff-id(L1) and
// chain-id(Ln) = sha256(chain-id(Ln-1) + " " + diff-id(Ln)).
func ChainIDs(diffIDs []digest.Digest) []digest.Digest {
	out := make([]digest.Digest, len(diffIDs))
	for i, d := range diffIDs {
		if i == 0 {
			out[i] = d
			continue
		}
		out[i] = digest.FromString(out[i-1].String() + " " + d.String())
	}
	return out
}

// imageMeta is imagedb/metadata/sha256/<id>/metadata.json.
type imageMeta struct {
	Version int `json:"version"`
	// ManifestDigest is the platform manifest last pulled.
	ManifestDigest digest.Digest `json:"manifestDigest"`
	// RepoDigests are the "name@digest" references of the image. A digest
	// always names the same image, so they are kept here too and put back
	// into repositories.json if a crash lost them from there.
	RepoDigests []string `json:"repoDigests"`
	// Blobs are the files in blobs/ that belong to the image: indexes,
	// manifests and the config.
	Blobs  []digest.Digest `json:"blobs"`
	Pulled time.Time       `json:"pulled"`
}

func (s *Store) writeMeta(id digest.Digest, m imageMeta) error {
	m.Version = formatVersion
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(s.metadataDir(id), 0o700); err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(s.metadataDir(id), metadataFile), b, 0o600)
}

func (s *Store) readMeta(id digest.Digest) (imageMeta, error) {
	var m imageMeta
	b, err := os.ReadFile(filepath.Join(s.metadataDir(id), metadataFile))
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, err
	}
	if m.Version != formatVersion {
		return m, fmt.Errorf("metadata version %d is not %d", m.Version, formatVersion)
	}
	return m, nil
}

// repositories is repositories.json, in Docker's shape.
type repositories struct {
	Repositories map[string]map[string]digest.Digest `json:"Repositories"`
}

// writeReposLocked rewrites repositories.json from s.refs.
// Precondition: s.mu held.
func (s *Store) writeReposLocked() error {
	r := repositories{Repositories: make(map[string]map[string]digest.Digest)}
	for ref, id := range s.refs {
		named, err := reference.ParseNormalizedNamed(ref)
		if err != nil {
			continue // never stored: refs only holds parsed references
		}
		name := named.Name()
		if r.Repositories[name] == nil {
			r.Repositories[name] = make(map[string]digest.Digest)
		}
		r.Repositories[name][ref] = id
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(s.root, reposFile), b, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", reposFile, err)
	}
	return nil
}

func (s *Store) readRepos() (repositories, error) {
	var r repositories
	b, err := os.ReadFile(filepath.Join(s.root, reposFile))
	if errors.Is(err, fs.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return r, err
	}
	return r, json.Unmarshal(b, &r)
}
