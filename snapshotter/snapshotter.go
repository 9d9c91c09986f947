package snapshotter

import (
	"context"
	"io"
	"time"

	"github.com/crid-dev/crid/internal/mount"
)

// Kind is the state of a snapshot.
//
//	Prepare ──► Active ──Commit──► Committed ◄── Unpack
//	View    ──► View (read-only, never committed)
//
// Committed snapshots are immutable and may be parents. Active and View
// snapshots are leaves (a container's rootfs, an image volume).
type Kind int

const (
	KindUnknown Kind = iota
	KindView
	KindActive
	KindCommitted
)

func (k Kind) String() string {
	switch k {
	case KindView:
		return "view"
	case KindActive:
		return "active"
	case KindCommitted:
		return "committed"
	}
	return "unknown"
}

// Mount is one mount(2) call; internal/mount performs it.
type Mount = mount.Mount

// Info describes one snapshot. Key is the snapshot's name (an image layer's
// cache-id, a container ID, or a name the server derives from one); Parent
// is the key of a committed snapshot or "".
type Info struct {
	Key     string
	Parent  string
	Kind    Kind
	Created time.Time
}

// Usage is the disk use of the snapshot's own files (not its parents').
type Usage struct {
	Size   int64 // bytes
	Inodes int64
}

// Snapshotter stores layered filesystems. Vocabulary:
//   - key: the name of a snapshot, unique in the snapshotter.
//   - parent: the key of a committed snapshot the new one sits on; "" for none.
//
// Errors wrap errdefs classes: ErrNotFound for an unknown key,
// ErrAlreadyExists for a key in use, ErrFailedPrecondition for removing a
// snapshot that still has children, ErrInvalidArgument for a bad key.
type Snapshotter interface {
	// Name is "overlay" or "native".
	Name() string
	// Root is the directory holding the snapshots (for filesystem stats).
	Root() string
	Stat(ctx context.Context, key string) (Info, error)
	// Usage of a committed snapshot is recorded when it is committed; that
	// of an active one is measured.
	Usage(ctx context.Context, key string) (Usage, error)
	// Mounts returns the mounts that assemble key's filesystem.
	Mounts(ctx context.Context, key string) ([]Mount, error)
	// Prepare creates a writable snapshot on top of parent.
	Prepare(ctx context.Context, key, parent string) ([]Mount, error)
	// View creates a read-only snapshot of parent.
	View(ctx context.Context, key, parent string) ([]Mount, error)
	// Commit turns active snapshot key into committed snapshot name.
	Commit(ctx context.Context, name, key string) error
	// Unpack creates committed snapshot key on top of parent from an
	// uncompressed layer tar stream (OCI/Docker layer format, AUFS-style
	// whiteouts). The tar is hostile: nothing outside the snapshot is
	// touched. It reads r to EOF on success. A failed Unpack leaves nothing.
	// When ParallelUnpack is true the parent need not exist yet (it must
	// exist before the snapshot is mounted).
	Unpack(ctx context.Context, key, parent string, r io.Reader) (Usage, error)
	// ParallelUnpack reports whether Unpack may run before the parent's own
	// Unpack has finished (true for overlay, whose layers are independent
	// directories; false for native, which copies the parent first).
	ParallelUnpack() bool
	// Remove deletes a snapshot; removing an unknown key is ErrNotFound.
	Remove(ctx context.Context, key string) error
	Walk(ctx context.Context, fn func(Info) error) error
	Close() error
}
