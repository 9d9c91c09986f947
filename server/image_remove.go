package server

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crid-dev/crid/internal/log"
)

// RemoveImage removes the image the reference names, with all its tags.
// Removing an image that is not there succeeds.
func (s *ImageService) RemoveImage(ctx context.Context, r *runtime.RemoveImageRequest) (*runtime.RemoveImageResponse, error) {
	ref := r.GetImage().GetImage()
	if ref == "" {
		return nil, fmt.Errorf("image reference is required: %w", errdefs.ErrInvalidArgument)
	}
	ctx = log.With(ctx, "image", ref)
	err := s.images.Remove(ctx, ref)
	if errdefs.IsNotFound(err) {
		return &runtime.RemoveImageResponse{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("remove image %q: %w", ref, err)
	}
	log.G(ctx).Info("image removed")
	return &runtime.RemoveImageResponse{}, nil
}
