package server

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crid-dev/crid/internal/log"
)

// PullImage pulls an image with the credentials the request carries and
// returns its ID, which is what every other RPC accepts as image_ref.
func (s *ImageService) PullImage(ctx context.Context, r *runtime.PullImageRequest) (*runtime.PullImageResponse, error) {
	ref := r.GetImage().GetImage()
	if ref == "" {
		return nil, fmt.Errorf("image reference is required: %w", errdefs.ErrInvalidArgument)
	}
	ctx = log.With(ctx, "image", ref)
	img, err := s.images.Pull(ctx, ref, credentialsFromCRI(r.GetAuth()))
	if err != nil {
		return nil, fmt.Errorf("pull image %q: %w", ref, err)
	}
	log.G(ctx).Info("image pulled", "imageid", img.ID.String(), "size", img.Size)
	return &runtime.PullImageResponse{ImageRef: img.ID.String()}, nil
}
