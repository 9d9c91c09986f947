package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	securejoin "github.com/cyphar/filepath-securejoin"
	"google.golang.org/protobuf/proto"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crid-dev/crid/container/spec"
	"github.com/crid-dev/crid/imagestore"
	"github.com/crid-dev/crid/internal/log"
	"github.com/crid-dev/crid/internal/mount"
)

// Image volumes (CRI Mount.image, KEP-4639): kubelet pulls the image and
// asks for it to be mounted read-only at a path of the container, whole or
// one of its directories (Mount.image_sub_path).
//
// Each one is a read-only snapshot view of the image's top layer, keyed
// imageVolumeKey(container ID, i), so that the startup sweep knows its
// owner (SnapshotOwner). The container manager mounts view i in the
// container's bundle (volumes/<i>) and unmounts it on removal; the spec
// binds it, or the sub path resolved inside it, into the container
// read-only, nosuid and nodev. The views are released when the container
// is removed (container_remove.go) or its creation fails, and as a view
// sits on the image's layers, removing the image while the container
// lives leaves them to the orphan sweep, as for the container's own image.

// imageVolume is one image volume of a container being created.
type imageVolume struct {
	mount   int // its index in ContainerConfig.mounts
	image   imagestore.Image
	subPath string // clean and relative; "" for the image's root
}

// imageVolumeInfix separates the container ID from the volume's index in
// the key of an image volume's snapshot view.
const imageVolumeInfix = "-iv"

// imageVolumeKey is the snapshot key of the view of a container's i-th
// image volume.
func imageVolumeKey(containerID string, i int) string {
	return containerID + imageVolumeInfix + strconv.Itoa(i)
}

// SnapshotOwner is the ID of the container that a snapshot named key
// would belong to: key itself for a root filesystem, the container's ID
// for the view of one of its image volumes. Whether that container exists
// is for the caller to check (image layers are not containers').
func SnapshotOwner(key string) string {
	i := strings.LastIndex(key, imageVolumeInfix)
	if i <= 0 {
		return key
	}
	if _, err := strconv.ParseUint(key[i+len(imageVolumeInfix):], 10, 32); err != nil {
		return key
	}
	return key[:i]
}

// resolveImageVolumes checks the request's image volumes and finds their
// images, which kubelet has pulled: they must be read-only, have no host
// path, and any sub path must be relative and stay below the image root.
func (s *RuntimeService) resolveImageVolumes(ctx context.Context, mounts []*runtime.Mount) ([]imageVolume, error) {
	var vols []imageVolume
	for i, m := range mounts {
		dst := m.GetContainerPath()
		if m.GetImage() == nil {
			if m.GetImageSubPath() != "" {
				return nil, fmt.Errorf("mount %s: an image sub path without an image: %w", dst, errdefs.ErrInvalidArgument)
			}
			continue
		}
		ref := m.GetImage().GetImage()
		switch {
		case ref == "":
			return nil, fmt.Errorf("image volume %s: no image: %w", dst, errdefs.ErrInvalidArgument)
		case m.GetHostPath() != "":
			return nil, fmt.Errorf("image volume %s: has a host path too: %w", dst, errdefs.ErrInvalidArgument)
		case !m.GetReadonly():
			return nil, fmt.Errorf("image volume %s: must be read-only: %w", dst, errdefs.ErrInvalidArgument)
		}
		sub, err := cleanSubPath(m.GetImageSubPath())
		if err != nil {
			return nil, fmt.Errorf("image volume %s: %w", dst, err)
		}
		img, err := s.images.Get(ctx, ref)
		if err != nil {
			return nil, fmt.Errorf("image %q of volume %s: %w", ref, dst, err)
		}
		vols = append(vols, imageVolume{mount: i, image: img, subPath: sub})
	}
	return vols, nil
}

// cleanSubPath checks an image sub path: relative, without ".." elements
// or NUL bytes. It returns it cleaned, "" for the image's root.
func cleanSubPath(p string) (string, error) {
	switch {
	case p == "":
		return "", nil
	case strings.ContainsRune(p, 0) || filepath.IsAbs(p):
		return "", fmt.Errorf("sub path %q must be a relative path: %w", p, errdefs.ErrInvalidArgument)
	case slices.Contains(strings.Split(p, "/"), ".."):
		return "", fmt.Errorf("sub path %q must not contain \"..\": %w", p, errdefs.ErrInvalidArgument)
	}
	if p = filepath.Clean(p); p == "." {
		return "", nil
	}
	return p, nil
}

// topLayer is the snapshot key of an image's top layer: the parent of a
// container's root filesystem and of the image's volume views.
func topLayer(img imagestore.Image) string {
	if n := len(img.Layers); n > 0 {
		return img.Layers[n-1].CacheID
	}
	return ""
}

// prepareImageVolumes creates the read-only views of container id's image
// volumes. The release it returns removes them; it runs when the creation
// fails, and removeContainer does the same from the record.
func (s *RuntimeService) prepareImageVolumes(ctx context.Context, id string, vols []imageVolume) ([][]mount.Mount, func(context.Context) error, error) {
	keys := make([]string, 0, len(vols))
	release := func(ctx context.Context) error { return s.removeViews(ctx, keys) }
	out := make([][]mount.Mount, 0, len(vols))
	for i, v := range vols {
		key := imageVolumeKey(id, i)
		keys = append(keys, key) // a failed View may still have made it
		ms, err := s.rootfs.View(ctx, key, topLayer(v.image))
		if err != nil {
			if rerr := release(context.WithoutCancel(ctx)); rerr != nil {
				log.G(ctx).Warn("release image volume views of failed container", "containerid", id, "error", rerr)
			}
			return nil, nil, fmt.Errorf("view of image %s for volume %d: %w", v.image.ID, i, err)
		}
		out = append(out, ms)
	}
	return out, release, nil
}

// removeViews removes snapshot views; one that is gone already is fine.
func (s *RuntimeService) removeViews(ctx context.Context, keys []string) error {
	var errs []error
	for _, k := range keys {
		if err := s.rootfs.Remove(ctx, k); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("remove image volume view %s: %w", k, err))
		}
	}
	return errors.Join(errs...)
}

// setImageVolumeSources points the spec's image volume mounts (in the
// order of the request's mounts) at the directories the views are mounted
// on, or at their sub paths. A sub path is resolved inside the image, as
// if the view were "/": an image's symlink cannot lead out of it. The
// view is read-only, so what is resolved here stays what runc mounts.
func setImageVolumeSources(mounts []spec.Mount, vols []imageVolume, dirs []string) error {
	if len(dirs) != len(vols) {
		return fmt.Errorf("%d image volumes but %d mounted", len(vols), len(dirs))
	}
	for i, v := range vols {
		src := dirs[i]
		if v.subPath != "" {
			p, err := securejoin.SecureJoin(dirs[i], v.subPath)
			if err != nil {
				return fmt.Errorf("image volume %s: resolve sub path %q: %v: %w", mounts[v.mount].ContainerPath, v.subPath, err, errdefs.ErrInvalidArgument)
			}
			if _, err := os.Lstat(p); err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return fmt.Errorf("image volume %s: sub path %q does not exist in image %s: %w",
						mounts[v.mount].ContainerPath, v.subPath, v.image.ID, errdefs.ErrInvalidArgument)
				}
				return fmt.Errorf("image volume %s: sub path %q: %w", mounts[v.mount].ContainerPath, v.subPath, err)
			}
			src = p
		}
		mounts[v.mount].HostPath = src
	}
	return nil
}

// statusMounts is the CRI mounts as ContainerStatus reports them: an image
// volume's image carries image_ref, the ID of the image it was made from
// (what PullImage returned).
func statusMounts(mounts []*runtime.Mount, vols []imageVolume) []*runtime.Mount {
	if len(vols) == 0 {
		return mounts
	}
	out := slices.Clone(mounts)
	for _, v := range vols {
		m := proto.Clone(out[v.mount]).(*runtime.Mount)
		m.Image.ImageRef = v.image.ID.String()
		out[v.mount] = m
	}
	return out
}
