package archive

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/crid-dev/crid/internal/testutil"
	"github.com/crid-dev/crid/snapshotter/internal/tartest"
)

// benchLayer is a 200 MiB layer of about 3000 files in 60 directories: 30
// files of 5 MiB and the rest between 1 and 32 KiB, the mix of a typical
// application image.
func benchLayer(tb testing.TB) ([]byte, int64) {
	rng := rand.New(rand.NewPCG(1, 2))
	blob := make([]byte, 5<<20)
	for i := range blob {
		blob[i] = byte(rng.Uint32())
	}
	var entries []tartest.Entry
	var total int64
	for d := range 60 {
		dir := "usr/lib/pkg" + strconv.Itoa(d) + "/"
		entries = append(entries, tartest.Dir(dir, 0o755))
		for f := range 50 {
			size := 1<<10 + rng.IntN(31<<10)
			if (d*50+f)%100 == 0 {
				size = 5 << 20
			}
			entries = append(entries, tartest.Entry{
				Header: tartest.File(dir+"f"+strconv.Itoa(f), "", 0o644).Header,
				Data:   blob[:size],
			})
			total += int64(size)
		}
	}
	b, err := tartest.Tar(entries...)
	require.NoError(tb, err)
	return b, total
}

func BenchmarkApply(b *testing.B) {
	testutil.RequiresRoot(b)
	layer, total := benchLayer(b)
	base := b.TempDir()
	b.SetBytes(total)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		root := filepath.Join(base, strconv.Itoa(i))
		b.StopTimer()
		require.NoError(b, os.Mkdir(root, 0o755))
		b.StartTimer()
		if _, err := Apply(context.Background(), root, bytes.NewReader(layer), OverlayWhiteouts); err != nil {
			b.Fatal(err)
		}
		// Layers are kept until the end, as a pull keeps them: removing
		// one between runs makes the next run wait for ext4's discards.
	}
	b.ReportMetric(float64(total)*float64(b.N)/(1<<20)/b.Elapsed().Seconds(), "MiB/s")
}
