package imagebuild

import (
	"context"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"sync"
)

// genChunk is the unit in which generated content is produced; it is part
// of the output format (text words are cut at chunk boundaries).
const genChunk = 1 << 20

// dictBits sets the text dictionary to 2^dictBits words; with words picked
// uniformly this gives a gzip ratio of about 3.5× (2^12 words: 2.3×).
const dictBits = 8

var dictionary = sync.OnceValue(func() [][]byte {
	rng := rand.New(rand.NewChaCha8([32]byte{'c', 'r', 'i', 'd', '-', 'd', 'i', 'c', 't'}))
	words := make([][]byte, 1<<dictBits)
	for i := range words {
		w := make([]byte, 2+rng.IntN(9))
		for j := range w {
			w[j] = 'a' + byte(rng.IntN(26))
		}
		words[i] = w
	}
	return words
})

// writeGenerated writes g.Size bytes of content derived from g.Seed.
func writeGenerated(ctx context.Context, w io.Writer, g Generated) error {
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], g.Seed)
	if g.Text {
		seed[8] = 't'
	}
	rng := rand.NewChaCha8(seed)
	buf := make([]byte, genChunk)
	for remaining := g.Size; remaining > 0; {
		if err := ctx.Err(); err != nil {
			return err
		}
		chunk := buf[:min(int64(len(buf)), remaining)]
		if g.Text {
			fillText(rng, chunk)
		} else {
			_, _ = rng.Read(chunk) // ChaCha8.Read never fails
		}
		if _, err := w.Write(chunk); err != nil {
			return err
		}
		remaining -= int64(len(chunk))
	}
	return nil
}

// fillText fills b with words from the dictionary separated by spaces, with
// a newline after about one word in sixteen.
func fillText(rng *rand.ChaCha8, b []byte) {
	words := dictionary()
	const mask = 1<<dictBits - 1
	for i := 0; i < len(b); {
		r := rng.Uint64()
		// 4 words of dictBits bits, then 4 bits per word for the separators.
		for k := 0; k < 4 && i < len(b); k++ {
			i += copy(b[i:], words[(r>>(k*dictBits))&mask])
			if i < len(b) {
				if (r>>(48+4*k))&0xf == 0 {
					b[i] = '\n'
				} else {
					b[i] = ' '
				}
				i++
			}
		}
	}
}
