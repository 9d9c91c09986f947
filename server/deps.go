package server

import (
	"context"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/crid-dev/crid/cgroupmgr"
	"github.com/crid-dev/crid/container"
	"github.com/crid-dev/crid/container/spec"
	"github.com/crid-dev/crid/imagestore"
	"github.com/crid-dev/crid/imagestore/registry"
	"github.com/crid-dev/crid/sandbox"
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

// Sandboxes is what the RuntimeService needs of sandbox.Manager.
type Sandboxes interface {
	Run(ctx context.Context, cfg sandbox.Config) (*sandbox.Sandbox, error)
	Stop(ctx context.Context, id string) error
	Remove(ctx context.Context, id string) error
	Get(id string) (*sandbox.Sandbox, error)
	List(f sandbox.Filter) []*sandbox.Sandbox
	// WithReady runs fn while the sandbox is Ready and cannot start stopping.
	WithReady(ctx context.Context, id string, fn func(context.Context, *sandbox.Sandbox) error) error
	// NetworkStats is the counters of a Ready sandbox's network interfaces,
	// loopback left out; nil for a host-network pod.
	NetworkStats(ctx context.Context, id string) ([]sandbox.InterfaceStats, error)
}

// Containers is what the RuntimeService needs of container.Manager.
type Containers interface {
	Create(ctx context.Context, cfg container.CreateConfig) (container.Record, error)
	Start(ctx context.Context, id string) error
	Stop(ctx context.Context, id string, timeout time.Duration, sig syscall.Signal) error
	Remove(ctx context.Context, id string) error
	Get(id string) (container.Record, error)
	List(f container.Filter) []container.Record
	ExecSync(ctx context.Context, id string, cmd []string, timeout time.Duration) (stdout, stderr []byte, exitCode int, err error)
	ReopenLog(ctx context.Context, id string) error
	UpdateResources(ctx context.Context, id string, r *specs.LinuxResources) error
}

// Rootfs prepares and releases containers' writable root filesystems on top
// of an image's top layer, and read-only views of images for image volumes
// (the snapshotter).
type Rootfs interface {
	Prepare(ctx context.Context, key, parent string) ([]snapshotter.Mount, error)
	View(ctx context.Context, key, parent string) ([]snapshotter.Mount, error)
	Remove(ctx context.Context, key string) error
	// Usage is the disk use of a container's writable layer; Root is the
	// filesystem it lives on, and Capacity that filesystem's size.
	Usage(ctx context.Context, key string) (snapshotter.Usage, error)
	Root() string
	Capacity(ctx context.Context) (snapshotter.Capacity, error)
}

// CgroupStats reads a container's cgroup statistics (cgroupmgr.Reader):
// Stats for ContainerStats, Metrics, in more detail, for
// ListPodSandboxMetrics.
type CgroupStats interface {
	Stats(cgroupsPath string) (cgroupmgr.Stats, error)
	Metrics(cgroupsPath string) (cgroupmgr.Metrics, error)
}

// SpecGenerator builds a container's OCI spec (container/spec.Generate).
type SpecGenerator func(in spec.Input) (*specs.Spec, error)
