package imagestore

import (
	"context"
	"io"

	"github.com/distribution/reference"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/crid-dev/crid/imagestore/registry"
)

// Resolver finds images in registries. *registry.Resolver implements it.
type Resolver interface {
	// Resolve returns the descriptor of the manifest or index that ref (a
	// normalized, tagged and/or digested name) points to, and a Fetcher for
	// the repository, authenticated with creds (nil for anonymous).
	Resolve(ctx context.Context, ref reference.Named, creds *registry.Credentials) (ocispec.Descriptor, registry.Fetcher, error)
}

// LayerUnpacker holds the files of layers. The snapshotter implements it; a
// layer's cache-id is the snapshot key.
type LayerUnpacker interface {
	// Unpack creates committed snapshot key on top of parent ("" for the
	// first layer) from an uncompressed tar stream and returns its size in
	// bytes. A failed Unpack leaves nothing behind.
	Unpack(ctx context.Context, key, parent string, tar io.Reader) (size int64, err error)
	// ParallelUnpack reports whether a layer may be unpacked before its
	// parent has been.
	ParallelUnpack() bool
	// Remove deletes the snapshot key.
	Remove(ctx context.Context, key string) error
}
