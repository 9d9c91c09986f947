package imagestore

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/assert"
)

func TestChainIDs(t *testing.T) {
	a := digest.Digest("sha256:" + hexA)
	b := digest.Digest("sha256:" + hexB)
	c := digest.Digest("sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc")

	// By hand: sha256 of the two digests joined by one space.
	sum := sha256.Sum256([]byte("sha256:" + hexA + " sha256:" + hexB))
	byHand := digest.Digest("sha256:" + hex.EncodeToString(sum[:]))

	for _, tc := range []struct {
		desc string
		in   []digest.Digest
		want []digest.Digest
	}{
		{"empty", nil, []digest.Digest{}},
		{"one layer: chain-id is the diff-id", []digest.Digest{a}, []digest.Digest{a}},
		{"two layers, computed by hand", []digest.Digest{a, b}, []digest.Digest{a, byHand}},
		// Vectors from `printf '%s %s' … | sha256sum`.
		{"three layers", []digest.Digest{a, b, c}, []digest.Digest{
			a,
			"sha256:ccd722928bd92476ba1745586fed6e45a102504185ad88cd89e01ff116fd146c",
			"sha256:c1377126441fb2f5ec2c21ae2a60255331d639e830f0ee1b40a36e52d4c40588",
		}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			assert.Equal(t, tc.want, ChainIDs(tc.in))
		})
	}
}
