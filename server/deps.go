package server

import (
	"context"

	"github.com/crid-dev/crid/imagestore"
	"github.com/crid-dev/crid/imagestore/registry"
	"github.com/crid-dev/crid/snapshotter"
)

// ImageStore is what the ImageService needs of imagestore.Store.
type ImageStore interface {
	Pull(ctx context.Context, ref string, creds *registry.Credentials) (imagestore.Image, error)
	Get(ctx context.Context, ref string) (imagestore.Image, error)
	List(ctx context.Context) []imagestore.Image
	Remove(ctx context.Context, ref string) error
}

// FilesystemUsage reports the disk use of image layers and of container root
// filesystems.
type FilesystemUsage interface {
	Usage(ctx context.Context) (images, containers snapshotter.FsUsage, err error)
}
