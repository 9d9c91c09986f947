package overlay

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/crid-dev/crid/snapshotter"
	"github.com/crid-dev/crid/snapshotter/archive"
	"github.com/crid-dev/crid/snapshotter/internal/storage"
)

// Snapshotter is the overlay snapshotter. It is safe for concurrent use.
type Snapshotter struct {
	store    *storage.Store
	indexOff bool // the kernel knows overlay's index= option
}

var _ snapshotter.Snapshotter = (*Snapshotter)(nil)

// New opens (or creates) an overlay snapshotter in root, after checking
// that overlay mounts work there.
func New(root string) (*Snapshotter, error) {
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	if strings.ContainsAny(root, ",:") {
		return nil, fmt.Errorf("overlay root %q: ',' and ':' would break mount options: %w", root, errdefs.ErrInvalidArgument)
	}
	ctx := context.Background()
	store, err := storage.Open(ctx, root, storage.Options{Links: true})
	if err != nil {
		return nil, err
	}
	if err := Supported(store.TmpDir()); err != nil {
		return nil, err
	}
	_, err = os.Stat("/sys/module/overlay/parameters/index")
	return &Snapshotter{store: store, indexOff: err == nil}, nil
}

// Supported reports whether overlay mounts (two lowers, an upper and a
// workdir) work on the filesystem of root, which must exist. It mounts and
// unmounts a tiny overlay in a temporary directory under root.
func Supported(root string) error {
	dir, err := os.MkdirTemp(root, ".overlay-check-")
	if err != nil {
		return fmt.Errorf("check overlay support: %w", err)
	}
	defer os.RemoveAll(dir)
	for _, d := range []string{"lower1", "lower2", "upper", "work", "merged"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			return fmt.Errorf("check overlay support: %w", err)
		}
	}
	merged := filepath.Join(dir, "merged")
	opts := fmt.Sprintf("lowerdir=%s:%s,upperdir=%s,workdir=%s",
		filepath.Join(dir, "lower2"), filepath.Join(dir, "lower1"), filepath.Join(dir, "upper"), filepath.Join(dir, "work"))
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		return fmt.Errorf("overlay mount on the filesystem of %s: %w: %w", root, err, errdefs.ErrNotImplemented)
	}
	if err := unix.Unmount(merged, unix.MNT_DETACH); err != nil {
		return fmt.Errorf("unmount overlay check in %s: %w", dir, err)
	}
	return nil
}

// Name implements snapshotter.Snapshotter.
func (s *Snapshotter) Name() string { return "overlay" }

// Root implements snapshotter.Snapshotter.
func (s *Snapshotter) Root() string { return s.store.Root() }

// ParallelUnpack is true: a layer is unpacked into its own directory.
func (s *Snapshotter) ParallelUnpack() bool { return true }

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
	chain, err := s.store.Chain(key)
	if err != nil {
		return nil, err
	}
	return s.mounts(chain), nil
}

// Prepare implements snapshotter.Snapshotter.
func (s *Snapshotter) Prepare(ctx context.Context, key, parent string) ([]snapshotter.Mount, error) {
	return s.create(ctx, key, parent, snapshotter.KindActive)
}

// View implements snapshotter.Snapshotter.
func (s *Snapshotter) View(ctx context.Context, key, parent string) ([]snapshotter.Mount, error) {
	return s.create(ctx, key, parent, snapshotter.KindView)
}

func (s *Snapshotter) create(ctx context.Context, key, parent string, kind snapshotter.Kind) ([]snapshotter.Mount, error) {
	if parent != "" {
		// Refuse before creating anything if an ancestor is missing (layers
		// may be unpacked out of order). Once the parent has a child, it and
		// so its own ancestors cannot be removed.
		if _, err := s.store.Chain(parent); err != nil {
			return nil, err
		}
	}
	req := storage.CreateRequest{Key: key, Parent: parent, Kind: kind, ParentMustExist: true}
	_, err := s.store.Create(ctx, req, func(_ context.Context, dir string) (snapshotter.Usage, error) {
		fs := filepath.Join(dir, "fs")
		if err := os.Mkdir(fs, 0o755); err != nil {
			return snapshotter.Usage{}, err
		}
		if kind != snapshotter.KindActive {
			return snapshotter.Usage{}, nil
		}
		if parent != "" {
			// The upper's root is the merged root: give it the image's.
			if err := copyRootAttrs(s.store.FS(parent), fs); err != nil {
				return snapshotter.Usage{}, err
			}
		}
		return snapshotter.Usage{}, os.Mkdir(filepath.Join(dir, "work"), 0o700)
	})
	if err != nil {
		return nil, err
	}
	return s.Mounts(ctx, key)
}

// copyRootAttrs gives dst the owner and mode of src.
func copyRootAttrs(src, dst string) error {
	fi, err := os.Stat(src)
	if err != nil {
		return err
	}
	st := fi.Sys().(*syscall.Stat_t)
	if err := os.Lchown(dst, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	return unix.Chmod(dst, st.Mode&0o7777)
}

// Commit implements snapshotter.Snapshotter.
func (s *Snapshotter) Commit(ctx context.Context, name, key string) error {
	return s.store.Commit(ctx, name, key)
}

// Unpack implements snapshotter.Snapshotter. The parent need not exist yet.
func (s *Snapshotter) Unpack(ctx context.Context, key, parent string, r io.Reader) (snapshotter.Usage, error) {
	req := storage.CreateRequest{Key: key, Parent: parent, Kind: snapshotter.KindCommitted}
	sn, err := s.store.Create(ctx, req, func(ctx context.Context, dir string) (snapshotter.Usage, error) {
		fs := filepath.Join(dir, "fs")
		if err := os.Mkdir(fs, 0o755); err != nil {
			return snapshotter.Usage{}, err
		}
		return archive.Apply(ctx, fs, r, archive.OverlayWhiteouts)
	})
	if err != nil {
		return snapshotter.Usage{}, err
	}
	return sn.Usage, nil
}

// Remove implements snapshotter.Snapshotter.
func (s *Snapshotter) Remove(ctx context.Context, key string) error {
	return s.store.Remove(ctx, key)
}

// Close implements snapshotter.Snapshotter. There is nothing to release.
func (s *Snapshotter) Close() error { return nil }

// mounts assembles chain[0]'s filesystem (chain is nearest first).
func (s *Snapshotter) mounts(chain []storage.Snapshot) []snapshotter.Mount {
	top := chain[0]
	layers := chain[1:]
	switch top.Kind {
	case snapshotter.KindActive:
		if len(layers) == 0 {
			return []snapshotter.Mount{bind(s.store.FS(top.Key), "rw")}
		}
		var opts []string
		if s.indexOff {
			opts = append(opts, "index=off")
		}
		opts = append(opts,
			"lowerdir="+s.lowerdirs(layers),
			"upperdir="+s.store.FS(top.Key),
			"workdir="+s.store.Work(top.Key))
		return []snapshotter.Mount{{Type: "overlay", Source: "overlay", Options: opts}}
	case snapshotter.KindCommitted:
		layers = chain
	}
	switch len(layers) {
	case 0: // a view of nothing: its own empty directory
		return []snapshotter.Mount{bind(s.store.FS(top.Key), "ro")}
	case 1: // overlay needs two lowers without an upper
		return []snapshotter.Mount{bind(s.store.FS(layers[0].Key), "ro")}
	}
	return []snapshotter.Mount{{Type: "overlay", Source: "overlay", Options: []string{"ro", "lowerdir=" + s.lowerdirs(layers)}}}
}

func (s *Snapshotter) lowerdirs(layers []storage.Snapshot) string {
	dirs := make([]string, len(layers))
	for i, l := range layers {
		if l.Link != "" {
			dirs[i] = s.store.LinkPath(l.Link)
		} else {
			dirs[i] = s.store.FS(l.Key)
		}
	}
	return strings.Join(dirs, ":")
}

func bind(dir, mode string) snapshotter.Mount {
	return snapshotter.Mount{Type: "bind", Source: dir, Options: []string{"rbind", mode}}
}
