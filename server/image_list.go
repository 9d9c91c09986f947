package server

import (
	"context"

	"github.com/containerd/errdefs"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crid-dev/crid/imagestore"
)

// ListImages lists the images, or only the one the filter names.
func (s *ImageService) ListImages(ctx context.Context, r *runtime.ListImagesRequest) (*runtime.ListImagesResponse, error) {
	imgs, err := s.listImages(ctx, r.GetFilter())
	if err != nil {
		return nil, err
	}
	return &runtime.ListImagesResponse{Images: toCRIImages(imgs)}, nil
}

// streamImagesBatch bounds one StreamImages message well below gRPC's 16 MiB
// default limit.
const streamImagesBatch = 500

// StreamImages sends the images in batches of at least one image each.
func (s *ImageService) StreamImages(r *runtime.StreamImagesRequest, stream runtime.ImageService_StreamImagesServer) error {
	imgs, err := s.listImages(stream.Context(), r.GetFilter())
	if err != nil {
		return err
	}
	for len(imgs) > 0 {
		n := min(len(imgs), streamImagesBatch)
		if err := stream.Send(&runtime.StreamImagesResponse{Images: toCRIImages(imgs[:n])}); err != nil {
			return err
		}
		imgs = imgs[n:]
	}
	return nil
}

// listImages applies the CRI filter: an image reference (ID, tag or digest)
// selects that image alone; no filter selects all.
func (s *ImageService) listImages(ctx context.Context, f *runtime.ImageFilter) ([]imagestore.Image, error) {
	ref := f.GetImage().GetImage()
	if ref == "" {
		return s.images.List(ctx), nil
	}
	img, err := s.images.Get(ctx, ref)
	if errdefs.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return []imagestore.Image{img}, nil
}
