package server

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crid-dev/crid/container"
	"github.com/crid-dev/crid/imagestore"
	"github.com/crid-dev/crid/internal/log"
	"github.com/crid-dev/crid/internal/mount"
	"github.com/crid-dev/crid/sandbox"
)

// CreateContainer creates a container in a ready pod sandbox from a pulled
// image: a writable snapshot on the image's top layer, read-only views of
// the images it mounts as volumes, the OCI spec, and the container under
// its monitor. A retry with the same name and attempt returns the
// container created before.
func (s *RuntimeService) CreateContainer(ctx context.Context, r *runtime.CreateContainerRequest) (*runtime.CreateContainerResponse, error) {
	cfg := r.GetConfig()
	switch {
	case r.GetPodSandboxId() == "":
		return nil, fmt.Errorf("pod sandbox id is required: %w", errdefs.ErrInvalidArgument)
	case cfg.GetMetadata().GetName() == "":
		return nil, fmt.Errorf("container config needs metadata with a name: %w", errdefs.ErrInvalidArgument)
	case cfg.GetImage().GetImage() == "":
		return nil, fmt.Errorf("container config needs an image: %w", errdefs.ErrInvalidArgument)
	}
	img, err := s.images.Get(ctx, cfg.GetImage().GetImage())
	if err != nil {
		return nil, fmt.Errorf("image %q of container %s: %w", cfg.GetImage().GetImage(), cfg.GetMetadata().GetName(), err)
	}
	vols, err := s.resolveImageVolumes(ctx, cfg.GetMounts())
	if err != nil {
		return nil, fmt.Errorf("container %s: %w", cfg.GetMetadata().GetName(), err)
	}
	var rec container.Record
	err = s.sandboxes.WithReady(ctx, r.GetPodSandboxId(), func(ctx context.Context, sb *sandbox.Sandbox) error {
		ctx = log.With(ctx, "podsandboxid", sb.ID, "container", cfg.GetMetadata().GetName())
		var err error
		rec, err = s.containers.Create(ctx, s.containerCreateConfig(containerRequest{sb: sb, cfg: cfg, img: img, volumes: vols}))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("create container %s: %w", cfg.GetMetadata().GetName(), err)
	}
	log.G(ctx).Info("container created", "containerid", rec.ID, "podsandboxid", rec.SandboxID)
	return &runtime.CreateContainerResponse{ContainerId: rec.ID}, nil
}

// containerRequest is what CreateContainer resolved of a request: the
// sandbox, the config, its image and its image volumes.
type containerRequest struct {
	sb      *sandbox.Sandbox
	cfg     *runtime.ContainerConfig
	img     imagestore.Image
	volumes []imageVolume
}

// containerCreateConfig is the container manager's view of the request:
// the rootfs comes from a snapshot named after the container on the image's
// top layer, the image volumes from views of their images, and the spec is
// generated once those are mounted.
func (s *RuntimeService) containerCreateConfig(req containerRequest) container.CreateConfig {
	sb, cfg, img := req.sb, req.cfg, req.img
	parent := topLayer(img)
	logPath := ""
	if sb.Config.LogDirectory != "" && cfg.GetLogPath() != "" {
		logPath = filepath.Join(sb.Config.LogDirectory, cfg.GetLogPath())
	}
	cc := container.CreateConfig{
		SandboxID: sb.ID,
		Name:      cfg.GetMetadata().GetName(),
		Attempt:   cfg.GetMetadata().GetAttempt(),
		PrepareRootfs: func(ctx context.Context, id string) ([]mount.Mount, func(context.Context) error, error) {
			ms, err := s.rootfs.Prepare(ctx, id, parent)
			if err != nil {
				return nil, nil, err
			}
			return ms, func(ctx context.Context) error { return s.rootfs.Remove(ctx, id) }, nil
		},
		SpecFunc: func(ctx context.Context, id, rootfs string, volumes []string) (*specs.Spec, []byte, error) {
			return s.generateSpec(ctx, id, rootfs, volumes, req)
		},
		LogPath:     logPath,
		Stdin:       cfg.GetStdin(),
		StdinOnce:   cfg.GetStdinOnce(),
		TTY:         cfg.GetTty(),
		Runtime:     sb.Config.RuntimeHandler,
		Labels:      cfg.GetLabels(),
		Annotations: cfg.GetAnnotations(),
		Image:       container.Image{Ref: cfg.GetImage().GetImage(), ID: img.ID.String()},
	}
	if len(req.volumes) > 0 {
		cc.PrepareVolumes = func(ctx context.Context, id string) ([][]mount.Mount, func(context.Context) error, error) {
			return s.prepareImageVolumes(ctx, id, req.volumes)
		}
	}
	return cc
}

// generateSpec converts the request to the spec generator's input and
// returns the spec and the server's extra record data. volumes are where
// the image volumes' views are mounted, in the order of req.volumes.
func (s *RuntimeService) generateSpec(ctx context.Context, id, rootfs string, volumes []string, req containerRequest) (*specs.Spec, []byte, error) {
	sb, cfg, img := req.sb, req.cfg, req.img
	cgroupsPath, err := s.cgroups.ContainerPath(sb.Config.CgroupParent, id)
	if err != nil {
		return nil, nil, err
	}
	in, err := s.specInput(id, rootfs, cgroupsPath, sb, cfg, img)
	if err != nil {
		return nil, nil, err
	}
	if err := setImageVolumeSources(in.Mounts, req.volumes, volumes); err != nil {
		return nil, nil, err
	}
	in.Logger = log.G(ctx)
	sp, err := s.specs(in)
	if err != nil {
		return nil, nil, err
	}
	extra := containerExtra{
		Mounts:     statusMounts(cfg.GetMounts(), req.volumes),
		StopSignal: stopSignal(img.Config.Config.StopSignal),
	}
	for i := range req.volumes {
		extra.ImageVolumes = append(extra.ImageVolumes, imageVolumeKey(id, i))
	}
	if sp.Process != nil {
		extra.UID, extra.GID = int64(sp.Process.User.UID), int64(sp.Process.User.GID)
		for _, g := range sp.Process.User.AdditionalGids {
			extra.Groups = append(extra.Groups, int64(g))
		}
	}
	return sp, extra.encode(), nil
}
