package server

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/containerd/errdefs"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ImageStatus returns the image, or a response with no image when it is not
// present (the CRI contract: not an error). With verbose it adds the layer
// chain (chain-ids, diff-ids, sizes) and the image config under "info".
func (s *ImageService) ImageStatus(ctx context.Context, r *runtime.ImageStatusRequest) (*runtime.ImageStatusResponse, error) {
	ref := r.GetImage().GetImage()
	if ref == "" {
		return nil, fmt.Errorf("image reference is required: %w", errdefs.ErrInvalidArgument)
	}
	img, err := s.images.Get(ctx, ref)
	if errdefs.IsNotFound(err) {
		return &runtime.ImageStatusResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	resp := &runtime.ImageStatusResponse{Image: toCRIImage(img)}
	if r.GetVerbose() {
		info, err := json.Marshal(verboseImageInfo(img))
		if err != nil {
			return nil, fmt.Errorf("encode image info: %w", err)
		}
		resp.Info = map[string]string{"info": string(info)}
	}
	return resp, nil
}
