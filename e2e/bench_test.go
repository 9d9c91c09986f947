//go:build e2e

package e2e

import (
	"context"
	"os"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// BenchmarkColdPull pulls a 5-layer, 200 MiB image from the local registry
// through a running crid, cold: the image is removed and the page cache
// dropped before each pull. MB/s is the uncompressed image size over the
// pull's wall time (the figure containerd's 533–576 ms for 202 MiB is
// compared with).
func BenchmarkColdPull(b *testing.B) {
	reg, pushed := pushSet(b, []string{"bench"})
	for _, name := range []string{"bench-compressible", "bench-random"} {
		b.Run(name, func(b *testing.B) {
			d := startDaemon(b)
			ref := reg.Addr() + "/crid-test/" + name + ":latest"
			var size int64
			for _, l := range pushed["crid-test/"+name+":latest"].Image.Layers {
				size += l.UncompressedSize
			}
			b.SetBytes(size)
			ctx := context.Background()
			for range b.N {
				b.StopTimer()
				_, err := d.images().RemoveImage(ctx, &runtime.RemoveImageRequest{Image: &runtime.ImageSpec{Image: ref}})
				require.NoError(b, err)
				syscall.Sync()
				require.NoError(b, os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0o200))
				b.StartTimer()
				_, err = d.images().PullImage(ctx, &runtime.PullImageRequest{Image: &runtime.ImageSpec{Image: ref}})
				require.NoError(b, err)
			}
		})
	}
}
