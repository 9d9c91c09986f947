package snapshotter

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestStatfs(t *testing.T) {
	c, err := Statfs(t.TempDir())
	require.NoError(t, err)
	require.Positive(t, c.Bytes)
	require.LessOrEqual(t, c.AvailableBytes, c.Bytes)
	require.LessOrEqual(t, c.InodesFree, c.Inodes)

	_, err = Statfs(filepath.Join(t.TempDir(), "missing"))
	require.Error(t, err)
}
