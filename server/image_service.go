package server

import (
	"errors"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ImageService implements the CRI ImageService.
type ImageService struct {
	runtime.UnimplementedImageServiceServer

	images ImageStore
	fs     FilesystemUsage
}

// ImageServiceDeps are the ImageService's dependencies; all are required.
type ImageServiceDeps struct {
	Images      ImageStore
	Filesystems FilesystemUsage
}

// NewImageService returns an ImageService over deps.
func NewImageService(deps ImageServiceDeps) (*ImageService, error) {
	if deps.Images == nil || deps.Filesystems == nil {
		return nil, errors.New("server: image service needs an image store and filesystem usage")
	}
	return &ImageService{images: deps.Images, fs: deps.Filesystems}, nil
}
