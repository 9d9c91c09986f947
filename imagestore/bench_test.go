package imagestore

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// discardUnpacker reads every tar stream to its end and keeps nothing.
type discardUnpacker struct{ parallel bool }

func (u discardUnpacker) ParallelUnpack() bool { return u.parallel }

func (discardUnpacker) Unpack(ctx context.Context, key, parent string, r io.Reader) (int64, error) {
	tr := tar.NewReader(r)
	var size int64
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return size, nil
		}
		if err != nil {
			return 0, err
		}
		n, err := io.Copy(io.Discard, tr)
		if err != nil {
			return 0, err
		}
		size += n
		_ = hdr
	}
}

func (discardUnpacker) Remove(ctx context.Context, key string) error { return nil }

const (
	benchLayers     = 5
	benchLayerBytes = 40 << 20 // 5 × 40 MiB = 200 MiB uncompressed
	benchFileBytes  = 8 << 20
)

// benchData fills p with text-like data (gzip ratio about 3:1) or random
// bytes.
func benchData(r *rand.Rand, p []byte, compressible bool) {
	if !compressible {
		for i := 0; i+8 <= len(p); i += 8 {
			v := r.Uint64()
			for j := 0; j < 8; j++ {
				p[i+j] = byte(v >> (8 * j))
			}
		}
		return
	}
	words := make([]string, 4096)
	for i := range words {
		w := make([]byte, 3+r.IntN(8))
		for j := range w {
			w[j] = byte('a' + r.IntN(26))
		}
		words[i] = string(w)
	}
	for i := 0; i < len(p); {
		w := words[r.IntN(len(words))]
		i += copy(p[i:], w)
		if i < len(p) {
			p[i] = ' '
			i++
		}
	}
}

type benchImage struct {
	reg   *fakeRegistry
	bytes int64 // uncompressed
	blobs int64 // compressed
}

var (
	benchMu     sync.Mutex
	benchImages = map[string]*benchImage{}
)

// benchImageFor builds (once per process) a 5-layer image of ~200 MiB.
func benchImageFor(b *testing.B, mediaType string, compressible bool) *benchImage {
	key := fmt.Sprintf("%s/%v", mediaType, compressible)
	benchMu.Lock()
	defer benchMu.Unlock()
	if img, ok := benchImages[key]; ok {
		return img
	}
	r := rand.New(rand.NewPCG(7, 11))
	img := &benchImage{reg: newFakeRegistry()}
	spec := imageSpec{}
	for i := 0; i < benchLayers; i++ {
		fs := map[string]string{}
		for j := 0; j < benchLayerBytes/benchFileBytes; j++ {
			p := make([]byte, benchFileBytes)
			benchData(r, p, compressible)
			fs[fmt.Sprintf("layer%d/file%d", i, j)] = string(p)
			img.bytes += int64(len(p))
		}
		spec.layers = append(spec.layers, layerSpec{files: fs, mediaType: mediaType})
	}
	f := img.reg.push(b, "bench", spec)
	for _, l := range f.layers {
		img.blobs += l.Size
	}
	benchImages[key] = img
	return img
}

// BenchmarkPull measures a whole pull from an in-memory registry into an
// unpacker that reads every byte: the cost of the pipeline itself
// (digests, decompression, tar reading, layerdb writes).
func BenchmarkPull(b *testing.B) {
	for _, bc := range []struct {
		name         string
		mediaType    string
		compressible bool
		parallel     bool
	}{
		{"gzip/compressible", ocispec.MediaTypeImageLayerGzip, true, true},
		{"gzip/incompressible", ocispec.MediaTypeImageLayerGzip, false, true},
		{"gzip/compressible/sequential", ocispec.MediaTypeImageLayerGzip, true, false},
		{"zstd/compressible", ocispec.MediaTypeImageLayerZstd, true, true},
		{"uncompressed", ocispec.MediaTypeImageLayer, false, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			img := benchImageFor(b, bc.mediaType, bc.compressible)
			ctx := context.Background()
			s, err := New(ctx, Options{
				Root: b.TempDir(), Resolver: img.reg, Unpacker: discardUnpacker{parallel: bc.parallel},
				Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"},
			})
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(img.bytes)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := s.Pull(ctx, "bench", nil); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := s.Remove(ctx, "bench"); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(img.bytes)*float64(b.N)/b.Elapsed().Seconds()/(1<<20), "MiB/s")
			b.ReportMetric(float64(img.blobs)/float64(img.bytes), "ratio")
		})
	}
}
