package overlay

import (
	"os"

	"testing"

	"github.com/stretchr/testify/require"

	"github.com/crid-dev/crid/internal/testutil"
	"github.com/crid-dev/crid/snapshotter"
	"github.com/crid-dev/crid/snapshotter/testsuite"
)

func TestSuite(t *testing.T) {
	testsuite.Run(t, func(t *testing.T, root string) snapshotter.Snapshotter {
		s, err := New(root)
		require.NoError(t, err)
		return s
	})
}

func TestSupported(t *testing.T) {
	testutil.RequiresRoot(t)
	dir := t.TempDir()
	require.NoError(t, Supported(dir))
	require.Empty(t, mustReadDir(t, dir), "the check cleans up after itself")
}

func mustReadDir(t *testing.T, dir string) []os.DirEntry {
	t.Helper()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	return ents
}
