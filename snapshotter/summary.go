package snapshotter

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// FsUsage is the disk use of a group of snapshots.
type FsUsage struct {
	Mountpoint string // directory the snapshots live under
	Usage
}

// Summarize adds up the usage of sn's snapshots: committed ones (image
// layers) and the others (container root filesystems) separately. Committed
// usage is recorded at commit time, so this costs one metadata read per layer
// plus a walk of each container's writable layer.
func Summarize(ctx context.Context, sn Snapshotter) (images, containers FsUsage, err error) {
	images.Mountpoint, containers.Mountpoint = sn.Root(), sn.Root()
	err = sn.Walk(ctx, func(info Info) error {
		u, err := sn.Usage(ctx, info.Key)
		if errdefs.IsNotFound(err) {
			return nil // removed while we walked
		}
		if err != nil {
			return fmt.Errorf("usage of snapshot %s: %w", info.Key, err)
		}
		dst := &containers.Usage
		if info.Kind == KindCommitted {
			dst = &images.Usage
		}
		dst.Size += u.Size
		dst.Inodes += u.Inodes
		return nil
	})
	return images, containers, err
}

// Capacity is the size of a filesystem.
type Capacity struct {
	Bytes, AvailableBytes uint64 // available: to unprivileged users
	Inodes, InodesFree    uint64
}

// Statfs measures the filesystem dir is on (the snapshotter's Root, for the
// limit of every container's writable layer).
func Statfs(dir string) (Capacity, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return Capacity{}, fmt.Errorf("statfs %s: %w", dir, err)
	}
	bs := uint64(st.Bsize) //nolint:gosec // a block size is positive
	return Capacity{
		Bytes: st.Blocks * bs, AvailableBytes: st.Bavail * bs,
		Inodes: st.Files, InodesFree: st.Ffree,
	}, nil
}
