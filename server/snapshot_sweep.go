package server

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"

	"github.com/crid-dev/crid/internal/log"
	"github.com/crid-dev/crid/snapshotter"
)

// SnapshotWalker is what the startup sweep needs of the snapshotter.
type SnapshotWalker interface {
	Walk(ctx context.Context, fn func(snapshotter.Info) error) error
	Remove(ctx context.Context, key string) error
}

// SweepSnapshots removes every snapshot that nothing owns: not an image
// layer's cache-id, not a container's root filesystem. A crash between
// unpacking a layer and recording it, or between removing a record and its
// snapshot, leaves such orphans; without the sweep they would fill the disk.
// Children are removed before their parents. It returns how many it removed.
func SweepSnapshots(ctx context.Context, sn SnapshotWalker, owned func(snapshotter.Info) bool) (int, error) {
	children := map[string]int{}
	var orphans []snapshotter.Info
	if err := sn.Walk(ctx, func(info snapshotter.Info) error {
		if info.Parent != "" {
			children[info.Parent]++
		}
		if !owned(info) {
			orphans = append(orphans, info)
		}
		return nil
	}); err != nil {
		return 0, fmt.Errorf("walk snapshots: %w", err)
	}
	removed := 0
	for progress := true; progress && len(orphans) > 0; {
		progress = false
		rest := orphans[:0]
		for _, o := range orphans {
			if children[o.Key] > 0 {
				rest = append(rest, o)
				continue
			}
			if err := sn.Remove(ctx, o.Key); err != nil && !errdefs.IsNotFound(err) {
				log.G(ctx).Warn("remove orphan snapshot", "snapshot", o.Key, "error", err)
				continue
			}
			removed++
			progress = true
			if o.Parent != "" {
				children[o.Parent]--
			}
		}
		orphans = rest
	}
	for _, o := range orphans {
		log.G(ctx).Warn("orphan snapshot kept: an owned snapshot sits on it", "snapshot", o.Key)
	}
	return removed, nil
}
