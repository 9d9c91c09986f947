package mount

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/crid-dev/crid/internal/testutil"
)

func TestUnescape(t *testing.T) {
	require.Equal(t, "/a b/c\\d", unescape(`/a\040b/c\134d`))
	require.Equal(t, "/plain", unescape("/plain"))
	require.Equal(t, `/bad\9`, unescape(`/bad\9`))
}

func TestMountsSeesABindMountWithASpace(t *testing.T) {
	testutil.RequiresRoot(t)
	src := filepath.Join(t.TempDir(), "src dir")
	dst := filepath.Join(t.TempDir(), "dst dir")
	require.NoError(t, os.MkdirAll(filepath.Join(src, "sub"), 0o755))
	require.NoError(t, os.MkdirAll(dst, 0o755))
	require.NoError(t, unix.Mount(filepath.Join(src, "sub"), dst, "", unix.MS_BIND, ""))
	t.Cleanup(func() { _ = unix.Unmount(dst, unix.MNT_DETACH) })

	ms, err := Mounts(func(m Info) bool { return m.Under(filepath.Dir(dst)) })
	require.NoError(t, err)
	require.Len(t, ms, 1)
	require.Equal(t, dst, ms[0].Mountpoint)
	require.NotEqual(t, "/", ms[0].Root, "a bind of a subdirectory has that directory as its root")
	require.False(t, Info{Mountpoint: "/ab"}.Under("/a"), "a sibling with a common prefix is not under")
}
