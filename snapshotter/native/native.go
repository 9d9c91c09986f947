package native

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/crid-dev/crid/snapshotter"
	"github.com/crid-dev/crid/snapshotter/archive"
	"github.com/crid-dev/crid/snapshotter/internal/storage"
)

// Snapshotter is the native snapshotter. It is safe for concurrent use.
type Snapshotter struct {
	store *storage.Store
}

var _ snapshotter.Snapshotter = (*Snapshotter)(nil)

// New opens (or creates) a native snapshotter in root.
func New(root string) (*Snapshotter, error) {
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	store, err := storage.Open(context.Background(), root, storage.Options{})
	if err != nil {
		return nil, err
	}
	return &Snapshotter{store: store}, nil
}

// Name implements snapshotter.Snapshotter.
func (s *Snapshotter) Name() string { return "native" }

// Root implements snapshotter.Snapshotter.
func (s *Snapshotter) Root() string { return s.store.Root() }

// ParallelUnpack is false: Unpack copies the parent's files first.
func (s *Snapshotter) ParallelUnpack() bool { return false }

// Stat implements snapshotter.Snapshotter.
func (s *Snapshotter) Stat(_ context.Context, key string) (snapshotter.Info, error) {
	sn, err := s.store.Get(key)
	return sn.Info(), err
}

// Usage implements snapshotter.Snapshotter.
func (s *Snapshotter) Usage(ctx context.Context, key string) (snapshotter.Usage, error) {
	return s.store.Usage(ctx, key)
}

// Walk implements snapshotter.Snapshotter.
func (s *Snapshotter) Walk(ctx context.Context, fn func(snapshotter.Info) error) error {
	return s.store.Walk(ctx, fn)
}

// Mounts implements snapshotter.Snapshotter.
func (s *Snapshotter) Mounts(_ context.Context, key string) ([]snapshotter.Mount, error) {
	sn, err := s.store.Get(key)
	if err != nil {
		return nil, err
	}
	switch {
	case sn.Kind == snapshotter.KindActive:
		return bind(s.store.FS(key), "rw"), nil
	case sn.Kind == snapshotter.KindView && sn.Parent != "":
		if _, err := s.store.Get(sn.Parent); err != nil {
			return nil, fmt.Errorf("snapshot %s: %w", key, err)
		}
		return bind(s.store.FS(sn.Parent), "ro"), nil
	}
	return bind(s.store.FS(key), "ro"), nil
}

// Prepare implements snapshotter.Snapshotter: it copies parent's files.
func (s *Snapshotter) Prepare(ctx context.Context, key, parent string) ([]snapshotter.Mount, error) {
	req := storage.CreateRequest{Key: key, Parent: parent, Kind: snapshotter.KindActive, ParentMustExist: true}
	if _, err := s.store.Create(ctx, req, func(ctx context.Context, dir string) (snapshotter.Usage, error) {
		return snapshotter.Usage{}, s.copyParent(ctx, dir, parent)
	}); err != nil {
		return nil, err
	}
	return s.Mounts(ctx, key)
}

// View implements snapshotter.Snapshotter: a read-only bind of parent.
func (s *Snapshotter) View(ctx context.Context, key, parent string) ([]snapshotter.Mount, error) {
	req := storage.CreateRequest{Key: key, Parent: parent, Kind: snapshotter.KindView, ParentMustExist: true}
	if _, err := s.store.Create(ctx, req, func(_ context.Context, dir string) (snapshotter.Usage, error) {
		return snapshotter.Usage{}, os.Mkdir(filepath.Join(dir, "fs"), 0o755)
	}); err != nil {
		return nil, err
	}
	return s.Mounts(ctx, key)
}

// Commit implements snapshotter.Snapshotter.
func (s *Snapshotter) Commit(ctx context.Context, name, key string) error {
	return s.store.Commit(ctx, name, key)
}

// Unpack implements snapshotter.Snapshotter: it copies parent's files and
// applies the layer to the copy. The parent must exist.
func (s *Snapshotter) Unpack(ctx context.Context, key, parent string, r io.Reader) (snapshotter.Usage, error) {
	req := storage.CreateRequest{Key: key, Parent: parent, Kind: snapshotter.KindCommitted, ParentMustExist: true}
	sn, err := s.store.Create(ctx, req, func(ctx context.Context, dir string) (snapshotter.Usage, error) {
		if err := s.copyParent(ctx, dir, parent); err != nil {
			return snapshotter.Usage{}, err
		}
		return archive.Apply(ctx, filepath.Join(dir, "fs"), r, archive.NativeWhiteouts)
	})
	if err != nil {
		return snapshotter.Usage{}, err
	}
	return sn.Usage, nil
}

// copyParent makes dir/fs a copy of parent's files (empty for no parent).
func (s *Snapshotter) copyParent(ctx context.Context, dir, parent string) error {
	fs := filepath.Join(dir, "fs")
	if err := os.Mkdir(fs, 0o755); err != nil {
		return err
	}
	if parent == "" {
		return nil
	}
	if err := copyTree(ctx, s.store.FS(parent), fs); err != nil {
		return fmt.Errorf("copy parent %s: %w", parent, err)
	}
	return nil
}

// Remove implements snapshotter.Snapshotter.
func (s *Snapshotter) Remove(ctx context.Context, key string) error {
	return s.store.Remove(ctx, key)
}

// Close implements snapshotter.Snapshotter. There is nothing to release.
func (s *Snapshotter) Close() error { return nil }

func bind(dir, mode string) []snapshotter.Mount {
	return []snapshotter.Mount{{Type: "bind", Source: dir, Options: []string{"rbind", mode}}}
}
