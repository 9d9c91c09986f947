package server

import (
	"context"
	"fmt"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"

	"github.com/crid-dev/crid/snapshotter"
)

type fakeSnaps struct {
	infos   map[string]snapshotter.Info
	removed []string
}

func (f *fakeSnaps) Walk(_ context.Context, fn func(snapshotter.Info) error) error {
	for _, i := range f.infos {
		if err := fn(i); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeSnaps) Remove(_ context.Context, key string) error {
	for _, i := range f.infos {
		if i.Parent == key {
			return fmt.Errorf("snapshot %s has children: %w", key, errdefs.ErrFailedPrecondition)
		}
	}
	delete(f.infos, key)
	f.removed = append(f.removed, key)
	return nil
}

func TestSweepSnapshotsRemovesOrphansChildrenFirst(t *testing.T) {
	// owned chain: a <- b; orphan chain: x <- y <- z; orphan w sits under owned v.
	sn := &fakeSnaps{infos: map[string]snapshotter.Info{}}
	for _, s := range [][2]string{{"a", ""}, {"b", "a"}, {"x", ""}, {"y", "x"}, {"z", "y"}, {"w", ""}, {"v", "w"}} {
		sn.infos[s[0]] = snapshotter.Info{Key: s[0], Parent: s[1], Kind: snapshotter.KindCommitted}
	}
	owned := map[string]bool{"a": true, "b": true, "v": true}
	n, err := SweepSnapshots(context.Background(), sn, func(i snapshotter.Info) bool { return owned[i.Key] })
	require.NoError(t, err)
	require.Equal(t, 3, n)
	require.Equal(t, []string{"z", "y", "x"}, sn.removed)
	require.Contains(t, sn.infos, "w", "a snapshot an owned one sits on is kept")
	require.Contains(t, sn.infos, "a")
	require.Contains(t, sn.infos, "b")
}
