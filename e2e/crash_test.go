//go:build e2e

package e2e

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// storeDirs are the directories of the overlay-backed image store of d.
func (d *daemon) storeDirs() (imageRoot, snapshotRoot string) {
	return filepath.Join(d.root, "image", "overlay"), filepath.Join(d.root, "snapshotter", "overlay")
}

func countEntries(t testing.TB, dir string) int {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return 0
	}
	require.NoError(t, err)
	return len(ents)
}

// requireCleanStore checks that d's store holds no staging leftovers and
// exactly one snapshot per recorded layer.
func requireCleanStore(t testing.TB, d *daemon) {
	t.Helper()
	img, snap := d.storeDirs()
	require.Zero(t, countEntries(t, filepath.Join(img, "tmp")), "image store staging dir not empty")
	require.Zero(t, countEntries(t, filepath.Join(snap, "tmp")), "snapshotter staging dir not empty")
	layers := countEntries(t, filepath.Join(img, "layerdb", "sha256"))
	snaps := countEntries(t, filepath.Join(snap, "snapshots"))
	require.Equal(t, layers, snaps, "every snapshot belongs to exactly one recorded layer")
}

// TestKillDuringPull kills crid with SIGKILL at several moments of a 200 MiB
// pull; each time the restarted daemon must start cleanly, report the image
// either whole or absent, hold nothing half-made, and pull it again.
func TestKillDuringPull(t *testing.T) {
	reg, pushed := pushSet(t, []string{"bench"})
	d := startDaemon(t)
	ref := reg.Addr() + "/crid-test/bench-random:latest"
	want := imageID(pushed["crid-test/bench-random:latest"])

	for _, delay := range []time.Duration{20 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond,
		500 * time.Millisecond, 900 * time.Millisecond} {
		t.Run(delay.String(), func(t *testing.T) {
			pullErr := make(chan error, 1)
			client := d.images()
			go func() {
				_, err := client.PullImage(context.Background(), &runtime.PullImageRequest{Image: &runtime.ImageSpec{Image: ref}})
				pullErr <- err
			}()
			time.Sleep(delay)
			d.kill9(t)
			<-pullErr
			d.start(t)

			st := imgStatus(t, d, ref)
			if st.GetImage() != nil {
				require.Equal(t, want, st.GetImage().GetId(), "an image that is listed is whole")
			}
			requireCleanStore(t, d)

			resp, err := d.images().PullImage(context.Background(), &runtime.PullImageRequest{Image: &runtime.ImageSpec{Image: ref}})
			require.NoError(t, err, "pull after the crash\n%s", d.Logs())
			require.Equal(t, want, resp.GetImageRef())
			requireCleanStore(t, d)

			_, err = d.images().RemoveImage(context.Background(), &runtime.RemoveImageRequest{Image: &runtime.ImageSpec{Image: ref}})
			require.NoError(t, err)
			img, snap := d.storeDirs()
			require.Zero(t, countEntries(t, filepath.Join(img, "layerdb", "sha256")), "layers left after rmi")
			require.Zero(t, countEntries(t, filepath.Join(snap, "snapshots")), "snapshots left after rmi")
		})
	}
}
