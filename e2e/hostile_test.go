//go:build e2e

package e2e

import (
	"archive/tar"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crid-dev/crid/internal/testutil/imagebuild"
	"github.com/crid-dev/crid/internal/testutil/registry"
)

// TestHostileImagesThroughTheDaemon pulls crafted images through crid: each
// pull fails with a clear error, nothing outside crid's root is touched, and
// the store is left clean. (The full breakout corpus runs against the
// unpacker itself in snapshotter/archive.)
func TestHostileImagesThroughTheDaemon(t *testing.T) {
	reg := registry.Start(t)
	d := startDaemon(t)
	ctx := context.Background()
	b, err := imagebuild.NewBuilder(t.TempDir())
	require.NoError(t, err)
	p, err := imagebuild.NewPusher(reg.Addr())
	require.NoError(t, err)

	// The sentinel directory sits right next to the daemon's root: an escape
	// of the snapshot by any ".." depth would land in or near it.
	sentinel := filepath.Join(d.dir, "outside")
	require.NoError(t, os.MkdirAll(sentinel, 0o755))

	file := func(name, body string) imagebuild.Entry {
		return imagebuild.Raw(tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))}, []byte(body))
	}
	hostile := map[string][]imagebuild.Entry{
		"dotdot":          {file("../../../../../../../../"+sentinel[1:]+"/pwned", "x")},
		"absolute":        {file(sentinel+"/pwned", "x")},
		"symlink-escape":  {imagebuild.Raw(tar.Header{Name: "link", Typeflag: tar.TypeSymlink, Linkname: sentinel, Mode: 0o777}, nil), file("link/pwned", "x")},
		"hardlink-escape": {imagebuild.Raw(tar.Header{Name: "passwd", Typeflag: tar.TypeLink, Linkname: "../../../../../../../etc/passwd", Mode: 0o644}, nil)},
		"block-device":    {imagebuild.Raw(tar.Header{Name: "sda", Typeflag: tar.TypeBlock, Devmajor: 8, Devminor: 0, Mode: 0o600}, nil)},
	}
	for name, entries := range hostile {
		t.Run(name, func(t *testing.T) {
			img, err := b.Build(ctx, imagebuild.Image{Layers: []imagebuild.Layer{{Entries: entries, Verbatim: true}}})
			require.NoError(t, err)
			require.NoError(t, p.PushImage(ctx, "hostile/"+name, "latest", img))

			_, err = d.images().PullImage(ctx, &runtime.PullImageRequest{Image: &runtime.ImageSpec{Image: reg.Addr() + "/hostile/" + name + ":latest"}})
			if err == nil {
				// Contained rather than refused: the file must then be inside a snapshot.
				t.Logf("%s: pulled (contained)", name)
				_, snaps := d.storeDirs()
				found := false
				require.NoError(t, filepath.WalkDir(snaps, func(p string, e os.DirEntry, err error) error {
					found = found || (err == nil && e.Name() == "pwned")
					return err
				}))
				require.True(t, found, "the contained file is inside the snapshotter's root")
			} else {
				require.NotEqual(t, codes.Unknown, status.Code(err), "a refused layer is a classified error: %v", err)
				requireCleanStore(t, d)
			}
			ents, err := os.ReadDir(sentinel)
			require.NoError(t, err)
			require.Empty(t, ents, "something was written outside the snapshot")
			passwd, err := os.ReadFile("/etc/passwd")
			require.NoError(t, err)
			require.Contains(t, string(passwd), "root:")
		})
	}
}
