package atomicfile

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestWriteFileReplacesWholeAndLeavesNoTemp(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.json")
	require.NoError(t, WriteFile(p, []byte("old"), 0o600))
	require.NoError(t, WriteFile(p, []byte("new content"), 0o640))
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	require.Equal(t, "new content", string(b))
	fi, err := os.Stat(p)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o640), fi.Mode().Perm())
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, ents, 1, "no temporary file left behind")
}

func TestWriteFileIntoMissingDirFails(t *testing.T) {
	require.Error(t, WriteFile(filepath.Join(t.TempDir(), "missing", "f"), []byte("x"), 0o600))
}
