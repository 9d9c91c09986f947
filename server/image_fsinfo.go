package server

import (
	"context"
	"fmt"
	"time"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crid-dev/crid/snapshotter"
)

// ImageFsInfo reports the bytes and inodes used by image layers and, apart,
// by container root filesystems.
func (s *ImageService) ImageFsInfo(ctx context.Context, _ *runtime.ImageFsInfoRequest) (*runtime.ImageFsInfoResponse, error) {
	images, containers, err := s.fs.Usage(ctx)
	if err != nil {
		return nil, fmt.Errorf("measure image filesystem: %w", err)
	}
	now := time.Now().UnixNano()
	return &runtime.ImageFsInfoResponse{
		ImageFilesystems:     []*runtime.FilesystemUsage{toCRIFsUsage(images, now)},
		ContainerFilesystems: []*runtime.FilesystemUsage{toCRIFsUsage(containers, now)},
	}, nil
}

func toCRIFsUsage(u snapshotter.FsUsage, now int64) *runtime.FilesystemUsage {
	return &runtime.FilesystemUsage{
		Timestamp:  now,
		FsId:       &runtime.FilesystemIdentifier{Mountpoint: u.Mountpoint},
		UsedBytes:  &runtime.UInt64Value{Value: uint64(max(u.Size, 0))},
		InodesUsed: &runtime.UInt64Value{Value: uint64(max(u.Inodes, 0))},
	}
}
