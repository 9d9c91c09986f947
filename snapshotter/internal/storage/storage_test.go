package storage

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"

	"github.com/crid-dev/crid/snapshotter"
)

func open(t *testing.T, root string) *Store {
	t.Helper()
	s, err := Open(context.Background(), root, Options{Links: true})
	require.NoError(t, err)
	return s
}

// create makes a snapshot whose fs/ holds one file.
func create(t *testing.T, s *Store, key, parent string, kind snapshotter.Kind) error {
	t.Helper()
	_, err := s.Create(context.Background(), CreateRequest{Key: key, Parent: parent, Kind: kind},
		func(_ context.Context, dir string) (snapshotter.Usage, error) {
			if err := os.MkdirAll(filepath.Join(dir, "fs"), 0o755); err != nil {
				return snapshotter.Usage{}, err
			}
			return snapshotter.Usage{Size: 1, Inodes: 1}, os.WriteFile(filepath.Join(dir, "fs", key), []byte("x"), 0o644)
		})
	return err
}

func TestValidateKey(t *testing.T) {
	for _, tc := range []struct {
		key string
		ok  bool
	}{
		{"a", true},
		{"sha256-abc.1_x", true},
		{strings.Repeat("a", 128), true},
		{strings.Repeat("a", 129), false},
		{"", false},
		{".a", false},
		{"_a", false},
		{"a/b", false},
		{"..", false},
		{"a:b", false},
		{"a\x00", false},
	} {
		err := ValidateKey(tc.key)
		if tc.ok {
			require.NoError(t, err, tc.key)
		} else {
			require.ErrorIs(t, err, errdefs.ErrInvalidArgument, tc.key)
		}
	}
}

func TestCommitInterrupted(t *testing.T) {
	for _, tc := range []struct {
		desc    string
		renamed bool // the crash came after the directory rename
	}{
		{desc: "before the rename the active snapshot survives"},
		{desc: "after the rename the commit completes", renamed: true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			root := t.TempDir()
			s := open(t, root)
			require.NoError(t, create(t, s, "base", "", snapshotter.KindCommitted))
			require.NoError(t, create(t, s, "work", "base", snapshotter.KindActive))
			// Write the intent as Commit does, then "crash".
			done := Snapshot{Key: "done", Kind: snapshotter.KindCommitted, Parent: "base", Link: "LINKDONE"}
			require.NoError(t, writeMeta(filepath.Join(s.Dir("work"), commitFile), done, "done"))
			if tc.renamed {
				require.NoError(t, os.Rename(s.Dir("work"), s.Dir("done")))
			}

			s = open(t, root)
			_, err := os.Stat(filepath.Join(s.Dir("work"), commitFile))
			require.ErrorIs(t, err, os.ErrNotExist)
			if !tc.renamed {
				sn, err := s.Get("work")
				require.NoError(t, err)
				require.Equal(t, snapshotter.KindActive, sn.Kind)
				_, err = s.Get("done")
				require.ErrorIs(t, err, errdefs.ErrNotFound)
				return
			}
			sn, err := s.Get("done")
			require.NoError(t, err)
			require.Equal(t, snapshotter.KindCommitted, sn.Kind)
			require.Equal(t, "base", sn.Parent)
			_, err = s.Get("work")
			require.ErrorIs(t, err, errdefs.ErrNotFound)
			target, err := os.Readlink(s.LinkPath("LINKDONE"))
			require.NoError(t, err, "the missing link is recreated")
			require.Equal(t, "../snapshots/done/fs", target)
		})
	}
}

func TestCommit(t *testing.T) {
	root := t.TempDir()
	s := open(t, root)
	require.NoError(t, create(t, s, "a", "", snapshotter.KindActive))
	require.NoError(t, os.MkdirAll(s.Work("a"), 0o700))
	require.NoError(t, s.Commit(context.Background(), "b", "a"))
	sn, err := s.Get("b")
	require.NoError(t, err)
	require.Equal(t, snapshotter.Usage{Size: 1, Inodes: 1}, sn.Usage, "measured at commit")
	require.NotEmpty(t, sn.Link)
	require.NoDirExists(t, s.Work("b"))
	require.NoFileExists(t, filepath.Join(s.Dir("b"), commitFile))
	require.FileExists(t, filepath.Join(s.LinkPath(sn.Link), "a"), "the link reaches the committed files")
}

func TestOpenRepairs(t *testing.T) {
	root := t.TempDir()
	s := open(t, root)
	require.NoError(t, create(t, s, "base", "", snapshotter.KindCommitted))
	sn, err := s.Get("base")
	require.NoError(t, err)

	// A link to nothing, a missing link, a removal cut short, a committed
	// snapshot with a stale workdir, a snapshot of a future version.
	require.NoError(t, os.Symlink("../snapshots/gone/fs", s.LinkPath("DANGLING")))
	require.NoError(t, os.Remove(s.LinkPath(sn.Link)))
	require.NoError(t, os.MkdirAll(filepath.Join(root, "tmp", "rm-x-123", "fs", "deep"), 0o755))
	require.NoError(t, os.MkdirAll(s.Work("base"), 0o700))
	require.NoError(t, os.MkdirAll(s.FS("future"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(s.Dir("future"), metaFile), []byte(`{"version":"v9","kind":"committed"}`), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(root, "snapshots", "file"), nil, 0o600))

	s = open(t, root)
	require.NoFileExists(t, s.LinkPath("DANGLING"))
	require.FileExists(t, filepath.Join(s.LinkPath(sn.Link), "base"))
	ents, err := os.ReadDir(filepath.Join(root, "tmp"))
	require.NoError(t, err)
	require.Empty(t, ents)
	require.NoDirExists(t, s.Work("base"))
	require.DirExists(t, s.Dir("future"), "not understood, so left alone")
	require.FileExists(t, filepath.Join(root, "snapshots", "file"))
	_, err = s.Get("future")
	require.ErrorIs(t, err, errdefs.ErrNotFound)
}

func TestCycles(t *testing.T) {
	s := open(t, t.TempDir())
	require.NoError(t, create(t, s, "a", "b", snapshotter.KindCommitted))
	require.NoError(t, create(t, s, "c", "a", snapshotter.KindCommitted))
	err := create(t, s, "b", "c", snapshotter.KindCommitted)
	require.ErrorIs(t, err, errdefs.ErrInvalidArgument, "b → c → a → b")
	_, err = s.Get("b")
	require.ErrorIs(t, err, errdefs.ErrNotFound)

	// Metadata edited by hand into a cycle is refused, not followed forever.
	s.snaps["b"] = &Snapshot{Key: "b", Kind: snapshotter.KindCommitted, Parent: "c"}
	_, err = s.Chain("c")
	require.ErrorIs(t, err, errdefs.ErrFailedPrecondition)
}

func TestChainMissingAncestor(t *testing.T) {
	s := open(t, t.TempDir())
	require.NoError(t, create(t, s, "top", "mid", snapshotter.KindCommitted))
	_, err := s.Chain("top")
	require.ErrorIs(t, err, errdefs.ErrNotFound)
	require.NoError(t, create(t, s, "mid", "", snapshotter.KindCommitted))
	chain, err := s.Chain("top")
	require.NoError(t, err)
	require.Equal(t, "top", chain[0].Key)
	require.Equal(t, "mid", chain[1].Key)
}

func TestCreateFailureLeavesNothing(t *testing.T) {
	root := t.TempDir()
	s := open(t, root)
	_, err := s.Create(context.Background(), CreateRequest{Key: "k", Kind: snapshotter.KindCommitted},
		func(_ context.Context, dir string) (snapshotter.Usage, error) {
			require.NoError(t, os.MkdirAll(filepath.Join(dir, "fs"), 0o755))
			return snapshotter.Usage{}, os.ErrPermission
		})
	require.ErrorIs(t, err, os.ErrPermission)
	for _, d := range []string{"tmp", "l", "snapshots"} {
		ents, err := os.ReadDir(filepath.Join(root, d))
		require.NoError(t, err)
		require.Empty(t, ents, d)
	}
	require.NoError(t, create(t, s, "k", "", snapshotter.KindCommitted), "the key is free again")
}

func TestDiskUsage(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "d"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "d/a"), make([]byte, 100), 0o644))
	require.NoError(t, os.Link(filepath.Join(dir, "d/a"), filepath.Join(dir, "d/b")))
	require.NoError(t, os.Symlink("d/a", filepath.Join(dir, "s")))
	u, err := DiskUsage(context.Background(), dir)
	require.NoError(t, err)
	require.Equal(t, snapshotter.Usage{Size: 100, Inodes: 3}, u, "d, a (once), s")
}
