package storage

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"

	"github.com/crid-dev/crid/internal/atomicfile"
	"github.com/crid-dev/crid/internal/log"
	"github.com/crid-dev/crid/snapshotter"
)

const (
	metaVersion = "v1"
	metaFile    = "meta.json"
	commitFile  = "commit.json"
	// maxKeyLen keeps paths and overlay options short.
	maxKeyLen = 128
)

// Snapshot is one snapshot's metadata.
type Snapshot struct {
	Key     string
	Kind    snapshotter.Kind
	Parent  string
	Created time.Time
	Usage   snapshotter.Usage // committed snapshots only
	Link    string            // short link name under <root>/l, committed overlay snapshots only
}

// Info returns the snapshot as the Snapshotter interface describes it.
func (s Snapshot) Info() snapshotter.Info {
	return snapshotter.Info{Key: s.Key, Parent: s.Parent, Kind: s.Kind, Created: s.Created}
}

// meta is meta.json (and commit.json, which adds Name).
type meta struct {
	Version string     `json:"version"`
	Kind    string     `json:"kind"`
	Parent  string     `json:"parent,omitempty"`
	Created time.Time  `json:"created"`
	Usage   *usageJSON `json:"usage,omitempty"`
	Link    string     `json:"link,omitempty"`
	Name    string     `json:"name,omitempty"`
}

type usageJSON struct {
	Size   int64 `json:"size"`
	Inodes int64 `json:"inodes"`
}

// Store is the set of snapshots under one root.
type Store struct {
	root  string
	links bool

	mu sync.RWMutex
	// mu guards the fields below.
	snaps   map[string]*Snapshot
	pending map[string]string // keys being created → their parent
}

// Options configures Open.
type Options struct {
	// Links gives every committed snapshot a short symlink under <root>/l,
	// for overlay lowerdir options.
	Links bool
}

// Open loads the snapshots under root, creating the layout if needed, and
// cleans up what a crash left behind (see the package documentation).
func Open(ctx context.Context, root string, opts Options) (*Store, error) {
	s := &Store{root: root, links: opts.Links, snaps: map[string]*Snapshot{}, pending: map[string]string{}}
	dirs := []string{root, s.snapshotsDir(), s.tmpDir()}
	if s.links {
		dirs = append(dirs, s.linksDir())
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("create snapshotter directory: %w", err)
		}
	}
	if err := s.cleanTmp(ctx); err != nil {
		return nil, err
	}
	if err := s.load(ctx); err != nil {
		return nil, err
	}
	if s.links {
		if err := s.reconcileLinks(ctx); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Root is the store's root directory.
func (s *Store) Root() string { return s.root }

// TmpDir is where work in progress lives; Open empties it.
func (s *Store) TmpDir() string { return s.tmpDir() }

// Dir is the directory of snapshot key.
func (s *Store) Dir(key string) string { return filepath.Join(s.root, "snapshots", key) }

// FS is the directory holding snapshot key's own files.
func (s *Store) FS(key string) string { return filepath.Join(s.root, "snapshots", key, "fs") }

// Work is the overlay workdir of active snapshot key.
func (s *Store) Work(key string) string { return filepath.Join(s.root, "snapshots", key, "work") }

// LinkPath is the path of a short link.
func (s *Store) LinkPath(link string) string { return filepath.Join(s.root, "l", link) }

func (s *Store) snapshotsDir() string { return filepath.Join(s.root, "snapshots") }
func (s *Store) tmpDir() string       { return filepath.Join(s.root, "tmp") }
func (s *Store) linksDir() string     { return filepath.Join(s.root, "l") }

// ValidateKey checks that key can name a snapshot: 1 to 128 characters from
// [A-Za-z0-9_.-], starting with a letter or digit. Keys are directory names
// and appear in mount options, so nothing else is allowed.
func ValidateKey(key string) error {
	if key == "" || len(key) > maxKeyLen {
		return fmt.Errorf("snapshot key %q: length must be 1 to %d: %w", key, maxKeyLen, errdefs.ErrInvalidArgument)
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '_' && c != '.' && c != '-') {
			return fmt.Errorf("snapshot key %q: only [A-Za-z0-9_.-], starting with a letter or digit: %w", key, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// Get returns snapshot key.
func (s *Store) Get(key string) (Snapshot, error) {
	if err := ValidateKey(key); err != nil {
		return Snapshot{}, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	sn, ok := s.snaps[key]
	if !ok {
		return Snapshot{}, fmt.Errorf("snapshot %s: %w", key, errdefs.ErrNotFound)
	}
	return *sn, nil
}

// Chain returns snapshot key followed by its ancestors, nearest first. It
// fails if an ancestor is missing (ErrNotFound) or not committed
// (ErrFailedPrecondition), so no mount is ever built from part of a chain.
func (s *Store) Chain(key string) ([]Snapshot, error) {
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	sn, ok := s.snaps[key]
	if !ok {
		return nil, fmt.Errorf("snapshot %s: %w", key, errdefs.ErrNotFound)
	}
	chain := []Snapshot{*sn}
	for p := sn.Parent; p != ""; {
		if len(chain) > len(s.snaps) {
			return nil, fmt.Errorf("snapshot %s: parent chain has a cycle: %w", key, errdefs.ErrFailedPrecondition)
		}
		ps, ok := s.snaps[p]
		if !ok {
			return nil, fmt.Errorf("snapshot %s: ancestor %s: %w", key, p, errdefs.ErrNotFound)
		}
		if ps.Kind != snapshotter.KindCommitted {
			return nil, fmt.Errorf("snapshot %s: ancestor %s is %s, not committed: %w", key, p, ps.Kind, errdefs.ErrFailedPrecondition)
		}
		chain = append(chain, *ps)
		p = ps.Parent
	}
	return chain, nil
}

// Walk calls fn for every snapshot, in key order. fn runs without the lock
// held, so it may call back into the snapshotter.
func (s *Store) Walk(ctx context.Context, fn func(snapshotter.Info) error) error {
	s.mu.RLock()
	infos := make([]snapshotter.Info, 0, len(s.snaps))
	for _, sn := range s.snaps {
		infos = append(infos, sn.Info())
	}
	s.mu.RUnlock()
	slices.SortFunc(infos, func(a, b snapshotter.Info) int { return strings.Compare(a.Key, b.Key) })
	for _, info := range infos {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(info); err != nil {
			return err
		}
	}
	return nil
}

// Usage returns the recorded usage of a committed snapshot and measures
// that of any other.
func (s *Store) Usage(ctx context.Context, key string) (snapshotter.Usage, error) {
	sn, err := s.Get(key)
	if err != nil {
		return snapshotter.Usage{}, err
	}
	if sn.Kind == snapshotter.KindCommitted {
		return sn.Usage, nil
	}
	u, err := DiskUsage(ctx, s.FS(key))
	if errors.Is(err, fs.ErrNotExist) {
		// Removed while measured.
		return snapshotter.Usage{}, fmt.Errorf("snapshot %s: %w", key, errdefs.ErrNotFound)
	}
	if err != nil {
		return snapshotter.Usage{}, fmt.Errorf("measure snapshot %s: %w", key, err)
	}
	return u, nil
}

// CreateRequest describes a snapshot to Create.
type CreateRequest struct {
	Key    string
	Parent string
	Kind   snapshotter.Kind
	// ParentMustExist refuses a parent that is not (yet) a snapshot. A
	// parent that exists must be committed either way.
	ParentMustExist bool
}

// Create makes snapshot req.Key. fill populates a fresh staging directory
// (creating fs/ and, for overlay, work/) without the store's lock held, and
// returns the usage to record for a committed snapshot. The snapshot
// appears only once fill has succeeded; on any error nothing is left.
func (s *Store) Create(ctx context.Context, req CreateRequest, fill func(ctx context.Context, dir string) (snapshotter.Usage, error)) (Snapshot, error) {
	if err := ValidateKey(req.Key); err != nil {
		return Snapshot{}, err
	}
	if req.Parent != "" {
		if err := ValidateKey(req.Parent); err != nil {
			return Snapshot{}, err
		}
		if req.Parent == req.Key {
			return Snapshot{}, fmt.Errorf("snapshot %s: its own parent: %w", req.Key, errdefs.ErrInvalidArgument)
		}
	}
	if err := s.reserve(req); err != nil {
		return Snapshot{}, err
	}
	defer func() {
		s.mu.Lock()
		delete(s.pending, req.Key)
		s.mu.Unlock()
	}()

	dir, err := os.MkdirTemp(s.tmpDir(), "new-")
	if err != nil {
		return Snapshot{}, fmt.Errorf("snapshot %s: %w", req.Key, err)
	}
	published := false
	defer func() {
		if !published {
			s.removeLogged(ctx, dir)
		}
	}()
	usage, err := fill(ctx, dir)
	if err != nil {
		return Snapshot{}, fmt.Errorf("snapshot %s: %w", req.Key, err)
	}
	sn := Snapshot{Key: req.Key, Kind: req.Kind, Parent: req.Parent, Created: time.Now().UTC()}
	if req.Kind == snapshotter.KindCommitted {
		sn.Usage = usage
		if s.links {
			if sn.Link, err = s.newLink(req.Key); err != nil {
				return Snapshot{}, err
			}
			defer func() {
				if !published {
					s.removeLink(ctx, sn.Link)
				}
			}()
		}
	}
	if err := writeMeta(filepath.Join(dir, metaFile), sn, ""); err != nil {
		return Snapshot{}, fmt.Errorf("snapshot %s: %w", req.Key, err)
	}

	if err := s.publish(&sn, dir); err != nil {
		return Snapshot{}, err
	}
	published = true
	if err := atomicfile.SyncDir(s.snapshotsDir()); err != nil {
		log.G(ctx).Warn("sync snapshots directory", "snapshot", req.Key, "error", err)
	}
	return sn, nil
}

// publish renames the staged snapshot dir into place and indexes it.
func (s *Store) publish(sn *Snapshot, dir string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkCycleLocked(sn.Key, sn.Parent); err != nil {
		return err
	}
	if err := os.Rename(dir, s.Dir(sn.Key)); err != nil {
		return fmt.Errorf("snapshot %s: publish: %w", sn.Key, err)
	}
	s.snaps[sn.Key] = sn
	return nil
}

// reserve claims req.Key for a Create.
func (s *Store) reserve(req CreateRequest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.snaps[req.Key]; ok {
		return fmt.Errorf("snapshot %s: %w", req.Key, errdefs.ErrAlreadyExists)
	}
	if _, ok := s.pending[req.Key]; ok {
		return fmt.Errorf("snapshot %s: being created: %w", req.Key, errdefs.ErrAlreadyExists)
	}
	if req.Parent != "" {
		p, ok := s.snaps[req.Parent]
		switch {
		case !ok && req.ParentMustExist:
			return fmt.Errorf("parent snapshot %s: %w", req.Parent, errdefs.ErrNotFound)
		case ok && p.Kind != snapshotter.KindCommitted:
			return fmt.Errorf("parent snapshot %s is %s, not committed: %w", req.Parent, p.Kind, errdefs.ErrFailedPrecondition)
		}
	}
	s.pending[req.Key] = req.Parent
	return nil
}

// checkCycleLocked refuses a new snapshot key whose ancestors include key
// (possible only when parents may be created after their children).
//
// Precondition: s.mu held.
func (s *Store) checkCycleLocked(key, parent string) error {
	for p, n := parent, 0; p != "" && n <= len(s.snaps); n++ {
		if p == key {
			return fmt.Errorf("snapshot %s: would be its own ancestor: %w", key, errdefs.ErrInvalidArgument)
		}
		ps, ok := s.snaps[p]
		if !ok {
			return nil
		}
		p = ps.Parent
	}
	return nil
}

// Commit turns active snapshot key into committed snapshot name, recording
// the usage of its files.
func (s *Store) Commit(ctx context.Context, name, key string) error {
	if err := ValidateKey(name); err != nil {
		return err
	}
	sn, err := s.Get(key)
	if err != nil {
		return err
	}
	if sn.Kind != snapshotter.KindActive {
		return fmt.Errorf("snapshot %s is %s, not active: %w", key, sn.Kind, errdefs.ErrFailedPrecondition)
	}
	usage, err := DiskUsage(ctx, s.FS(key))
	if err != nil {
		return fmt.Errorf("measure snapshot %s: %w", key, err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.snaps[key]
	if !ok || cur.Kind != snapshotter.KindActive {
		return fmt.Errorf("snapshot %s: %w", key, errdefs.ErrNotFound)
	}
	if _, ok := s.snaps[name]; ok {
		return fmt.Errorf("snapshot %s: %w", name, errdefs.ErrAlreadyExists)
	}
	if _, ok := s.pending[name]; ok {
		return fmt.Errorf("snapshot %s: being created: %w", name, errdefs.ErrAlreadyExists)
	}
	done := Snapshot{Key: name, Kind: snapshotter.KindCommitted, Parent: cur.Parent, Created: time.Now().UTC(), Usage: usage}
	if s.links {
		if done.Link, err = s.newLink(name); err != nil {
			return err
		}
	}
	intent := filepath.Join(s.Dir(key), commitFile)
	err = writeMeta(intent, done, name)
	if err == nil {
		err = os.Rename(s.Dir(key), s.Dir(name))
	}
	if err != nil {
		_ = os.Remove(intent)
		if done.Link != "" {
			s.removeLink(ctx, done.Link)
		}
		return fmt.Errorf("commit snapshot %s as %s: %w", key, name, err)
	}
	// The rename was the commit point; Open finishes the rest after a crash.
	delete(s.snaps, key)
	s.snaps[name] = &done
	if err := os.Rename(filepath.Join(s.Dir(name), commitFile), filepath.Join(s.Dir(name), metaFile)); err != nil {
		log.G(ctx).Warn("finish commit; next start completes it", "snapshot", name, "error", err)
	}
	if err := atomicfile.SyncDir(s.snapshotsDir()); err != nil {
		log.G(ctx).Warn("sync snapshots directory", "snapshot", name, "error", err)
	}
	if err := os.RemoveAll(s.Work(name)); err != nil {
		log.G(ctx).Warn("remove workdir of committed snapshot", "snapshot", name, "error", err)
	}
	return nil
}

// Remove deletes snapshot key. A snapshot with children (including ones
// being created) is ErrFailedPrecondition.
func (s *Store) Remove(ctx context.Context, key string) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	trash, err := s.retire(ctx, key)
	if err != nil {
		return err
	}
	s.removeLogged(ctx, trash)
	return nil
}

// retire unpublishes key by renaming it into tmp/ and returns where it went.
func (s *Store) retire(ctx context.Context, key string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sn, ok := s.snaps[key]
	if !ok {
		return "", fmt.Errorf("snapshot %s: %w", key, errdefs.ErrNotFound)
	}
	for k, c := range s.snaps {
		if c.Parent == key {
			return "", fmt.Errorf("snapshot %s has child %s: %w", key, k, errdefs.ErrFailedPrecondition)
		}
	}
	for k, p := range s.pending {
		if p == key {
			return "", fmt.Errorf("snapshot %s has child %s being created: %w", key, k, errdefs.ErrFailedPrecondition)
		}
	}
	trash := filepath.Join(s.tmpDir(), "rm-"+key+"-"+randomID())
	if err := os.Rename(s.Dir(key), trash); err != nil {
		return "", fmt.Errorf("remove snapshot %s: %w", key, err)
	}
	delete(s.snaps, key)
	if sn.Link != "" {
		s.removeLink(ctx, sn.Link)
	}
	return trash, nil
}

// removeLogged deletes a directory no one can see any more; a failure is
// only logged, as Open retries it.
func (s *Store) removeLogged(ctx context.Context, dir string) {
	if err := os.RemoveAll(dir); err != nil {
		log.G(ctx).Warn("remove snapshot leftovers; next start retries", "dir", dir, "error", err)
	}
}

// newLink creates a short link to snapshot key's fs/ and returns its name.
func (s *Store) newLink(key string) (string, error) {
	for {
		link := randomID()
		err := os.Symlink(filepath.Join("..", "snapshots", key, "fs"), s.LinkPath(link))
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("snapshot %s: link: %w", key, err)
		}
		return link, nil
	}
}

func (s *Store) removeLink(ctx context.Context, link string) {
	if err := os.Remove(s.LinkPath(link)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		log.G(ctx).Warn("remove snapshot link; next start retries", "link", link, "error", err)
	}
}

// randomID returns 13 random base32 characters.
func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:])
}

// writeMeta writes sn as JSON to path atomically; name is set only in
// commit intents.
func writeMeta(path string, sn Snapshot, name string) error {
	m := meta{Version: metaVersion, Kind: sn.Kind.String(), Parent: sn.Parent, Created: sn.Created, Link: sn.Link, Name: name}
	if sn.Kind == snapshotter.KindCommitted {
		m.Usage = &usageJSON{Size: sn.Usage.Size, Inodes: sn.Usage.Inodes}
	}
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, b, 0o600)
}

// readMeta parses a meta.json or commit.json.
func readMeta(path, key string) (Snapshot, string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Snapshot{}, "", err
	}
	var m meta
	if err := json.Unmarshal(b, &m); err != nil {
		return Snapshot{}, "", err
	}
	if m.Version != metaVersion {
		return Snapshot{}, "", fmt.Errorf("unknown metadata version %q", m.Version)
	}
	sn := Snapshot{Key: key, Parent: m.Parent, Created: m.Created, Link: m.Link}
	switch m.Kind {
	case "active":
		sn.Kind = snapshotter.KindActive
	case "view":
		sn.Kind = snapshotter.KindView
	case "committed":
		sn.Kind = snapshotter.KindCommitted
	default:
		return Snapshot{}, "", fmt.Errorf("unknown kind %q", m.Kind)
	}
	if m.Usage != nil {
		sn.Usage = snapshotter.Usage{Size: m.Usage.Size, Inodes: m.Usage.Inodes}
	}
	if m.Parent != "" && ValidateKey(m.Parent) != nil {
		return Snapshot{}, "", fmt.Errorf("bad parent %q", m.Parent)
	}
	return sn, m.Name, nil
}

// cleanTmp removes everything a crash left in tmp/.
func (s *Store) cleanTmp(ctx context.Context) error {
	ents, err := os.ReadDir(s.tmpDir())
	if err != nil {
		return fmt.Errorf("read %s: %w", s.tmpDir(), err)
	}
	for _, e := range ents {
		p := filepath.Join(s.tmpDir(), e.Name())
		log.G(ctx).Info("removing leftover of an interrupted snapshot operation", "path", p)
		s.removeLogged(ctx, p)
	}
	return nil
}

// load reads every snapshot's metadata, finishing or dropping interrupted
// commits.
func (s *Store) load(ctx context.Context) error {
	ents, err := os.ReadDir(s.snapshotsDir())
	if err != nil {
		return fmt.Errorf("read %s: %w", s.snapshotsDir(), err)
	}
	for _, e := range ents {
		key := e.Name()
		p := filepath.Join(s.snapshotsDir(), key)
		if !e.IsDir() || ValidateKey(key) != nil {
			log.G(ctx).Warn("unknown entry in snapshots directory; left alone", "path", p)
			continue
		}
		s.recoverCommit(ctx, key)
		sn, _, err := readMeta(filepath.Join(p, metaFile), key)
		if err != nil {
			log.G(ctx).Warn("directory in snapshots is not a snapshot; left alone", "path", p, "error", err)
			continue
		}
		if sn.Kind == snapshotter.KindCommitted {
			if _, err := os.Lstat(s.Work(key)); err == nil {
				s.removeLogged(ctx, s.Work(key))
			}
		}
		s.snaps[key] = &sn
	}
	return nil
}

// recoverCommit finishes (or drops) a Commit interrupted by a crash.
func (s *Store) recoverCommit(ctx context.Context, key string) {
	intent := filepath.Join(s.Dir(key), commitFile)
	_, name, err := readMeta(intent, key)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err == nil && name == key {
		err = os.Rename(intent, filepath.Join(s.Dir(key), metaFile))
		log.G(ctx).Info("finished interrupted commit", "snapshot", key, "error", err)
		return
	}
	// The directory was never renamed: the commit did not happen.
	log.G(ctx).Info("dropping interrupted commit", "snapshot", key)
	if err := os.Remove(intent); err != nil {
		log.G(ctx).Warn("remove commit intent", "snapshot", key, "error", err)
	}
}

// reconcileLinks makes <root>/l hold exactly one link per committed
// snapshot.
func (s *Store) reconcileLinks(ctx context.Context) error {
	ents, err := os.ReadDir(s.linksDir())
	if err != nil {
		return fmt.Errorf("read %s: %w", s.linksDir(), err)
	}
	want := map[string]string{} // link → key
	for key, sn := range s.snaps {
		if sn.Link != "" {
			want[sn.Link] = key
		}
	}
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join(s.linksDir(), e.Name()))
		if key, ok := want[e.Name()]; ok && err == nil && target == filepath.Join("..", "snapshots", key, "fs") {
			delete(want, e.Name())
			continue
		}
		s.removeLink(ctx, e.Name())
	}
	for link, key := range want {
		if err := os.Symlink(filepath.Join("..", "snapshots", key, "fs"), s.LinkPath(link)); err != nil {
			return fmt.Errorf("recreate link of snapshot %s: %w", key, err)
		}
	}
	return nil
}

// DiskUsage measures the files under dir: the bytes of regular files and
// the number of inodes (dir itself excluded; hard links counted once), the
// same quantities archive.Apply reports.
func DiskUsage(ctx context.Context, dir string) (snapshotter.Usage, error) {
	var u snapshotter.Usage
	seen := map[uint64]struct{}{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if ok && st.Nlink > 1 && !fi.IsDir() {
			if _, dup := seen[st.Ino]; dup {
				return nil
			}
			seen[st.Ino] = struct{}{}
		}
		u.Inodes++
		if fi.Mode().IsRegular() {
			u.Size += fi.Size()
		}
		return nil
	})
	return u, err
}
