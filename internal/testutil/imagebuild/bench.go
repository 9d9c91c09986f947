package imagebuild

import (
	"fmt"
	"strconv"
)

// benchFileSize caps the size of one bench file.
const benchFileSize = 8 << 20

// Bench is an image of layers layers holding about totalMiB MiB of files in
// all, split evenly, in files of at most 8 MiB under /bench/<layer>/. With
// compressible, the files are lines of pseudo-random words (gzip ratio about
// 3.5); otherwise they are pseudo-random bytes. The content is seeded, so the
// image is reproducible. The image has no shell; prepend [BusyboxLayer] to
// run containers from it.
func Bench(totalMiB, layers int, compressible bool) (Image, error) {
	if totalMiB <= 0 || layers <= 0 {
		return Image{}, fmt.Errorf("bench image: need positive size and layer count, got %d MiB in %d layers", totalMiB, layers)
	}
	kind := "random"
	if compressible {
		kind = "text"
	}
	total := int64(totalMiB) << 20
	img := Image{
		Config: Config{Labels: map[string]string{
			"dev.crid.test.bench": fmt.Sprintf("%dMiB/%d/%s", totalMiB, layers, kind),
		}},
	}
	for i := range layers {
		size := total / int64(layers)
		if i == layers-1 {
			size = total - size*int64(layers-1)
		}
		var entries []Entry
		for j := 0; size > 0; j++ {
			n := min(size, benchFileSize)
			name := "bench/" + strconv.Itoa(i) + "/" + kind + "-" + strconv.Itoa(j)
			entries = append(entries, RandomFile(name, n, uint64(i)<<32|uint64(j), compressible))
			size -= n
		}
		img.Layers = append(img.Layers, Layer{Entries: entries})
	}
	return img, nil
}
