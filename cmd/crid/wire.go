package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crid-dev/crid/cgroupmgr"
	"github.com/crid-dev/crid/cni"
	"github.com/crid-dev/crid/container"
	"github.com/crid-dev/crid/container/spec"
	"github.com/crid-dev/crid/imagestore"
	"github.com/crid-dev/crid/imagestore/registry"
	"github.com/crid-dev/crid/internal/log"
	"github.com/crid-dev/crid/sandbox"
	"github.com/crid-dev/crid/server"
	"github.com/crid-dev/crid/snapshotter"
	"github.com/crid-dev/crid/snapshotter/native"
	"github.com/crid-dev/crid/snapshotter/overlay"
)

// Compile-time checks that the leaves satisfy the seams they are wired into.
var (
	_ imagestore.Resolver     = (*registry.Resolver)(nil)
	_ server.ImageStore       = (*imagestore.Store)(nil)
	_ snapshotter.Snapshotter = (*overlay.Snapshotter)(nil)
	_ snapshotter.Snapshotter = (*native.Snapshotter)(nil)
	_ server.Sandboxes        = (*sandbox.Manager)(nil)
	_ server.Containers       = (*container.Manager)(nil)
	_ server.ContainerStreams = (*container.Manager)(nil)
	_ server.PortForwarder    = (*sandbox.Manager)(nil)
)

// gracePeriod bounds how long in-flight RPCs may run after SIGTERM.
const gracePeriod = 10 * time.Second

// serve builds every component, serves the CRI socket until ctx ends and
// then shuts down gracefully.
func serve(ctx context.Context, cfg Config, logger *slog.Logger) error {
	ctx = log.WithLogger(ctx, logger)
	if err := os.MkdirAll(cfg.Root, 0o700); err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.State, 0o711); err != nil {
		return err
	}
	// An existing directory keeps its mode otherwise: enforce it.
	if err := os.Chmod(cfg.Root, 0o700); err != nil {
		return err
	}
	if err := os.Chmod(cfg.State, 0o711); err != nil {
		return err
	}
	unlock, err := lockRoot(cfg.Root)
	if err != nil {
		return err
	}
	defer unlock()

	sn, err := newSnapshotter(ctx, cfg)
	if err != nil {
		return err
	}
	defer sn.Close()

	images, err := newImageStore(ctx, cfg, sn)
	if err != nil {
		return err
	}
	network, err := cni.New(cni.Options{ConfDir: cfg.CNI.ConfDir, BinDirs: cfg.CNI.BinDirs, CacheDir: cfg.CNI.CacheDir})
	if err != nil {
		return err
	}
	sandboxes, err := sandbox.New(ctx, sandbox.Options{
		StateDir:     filepath.Join(cfg.State, "sandboxes"),
		PauseCommand: pauseCommand(ctx, cfg.Runtime.PausePath),
		Network:      server.SandboxNetwork{CNI: network},
	})
	if err != nil {
		return fmt.Errorf("recover pod sandboxes: %w", err)
	}
	gcNetwork(ctx, network, sandboxes)
	defer func() {
		if err := sandboxes.Close(); err != nil {
			logger.Warn("release sandbox state dir mount", "error", err)
		}
	}()
	containers, handlers, err := newContainerManager(ctx, cfg)
	if err != nil {
		return err
	}
	defer containers.Close()

	// At start every snapshot must belong to a layer or a container (its
	// rootfs, or a view for one of its image volumes). While serving, only
	// layer snapshots are swept: a container's snapshots exist for a moment
	// before its record does.
	startInUse := images.CacheIDs()
	if n, err := server.SweepSnapshots(ctx, sn, func(info snapshotter.Info) bool {
		if startInUse[info.Key] {
			return true
		}
		owner := server.SnapshotOwner(info.Key)
		rec, err := containers.Get(owner)
		return err == nil && rec.ID == owner
	}); err != nil {
		logger.Warn("sweep orphan snapshots", "error", err)
	} else if n > 0 {
		logger.Info("removed orphan snapshots", "count", n)
	}
	sweep := func(ctx context.Context) {
		inUse := images.CacheIDs()
		owned := func(info snapshotter.Info) bool { return info.Kind != snapshotter.KindCommitted || inUse[info.Key] }
		if n, err := server.SweepSnapshots(ctx, sn, owned); err != nil {
			log.G(ctx).Warn("sweep orphan layer snapshots", "error", err)
		} else if n > 0 {
			log.G(ctx).Info("removed orphan layer snapshots", "count", n)
		}
	}

	imageSvc, err := server.NewImageService(server.ImageServiceDeps{
		Images:      images,
		Filesystems: fsUsage{sn},
	})
	if err != nil {
		return err
	}
	host, err := spec.ProbeHost()
	if err != nil {
		return fmt.Errorf("probe host for container specs: %w", err)
	}
	driver, err := cgroupmgr.ParseDriver(cfg.Runtime.CgroupDriver)
	if err != nil {
		return err
	}
	streams, err := server.NewStreamServer(server.StreamServerConfig{
		Addr: cfg.Streaming.Address, Containers: containers, Sandboxes: sandboxes,
	})
	if err != nil {
		return err
	}
	defer streams.Close() // after the gRPC server: ends every session
	go func() {
		if err := streams.Serve(); err != nil {
			logger.Error("streaming server stopped", "error", err)
		}
	}()
	logger.Info("streaming server listening", "address", streams.Addr())
	runtimeSvc, err := server.NewRuntimeService(server.RuntimeServiceDeps{
		Version:      version,
		Sandboxes:    sandboxes,
		Containers:   containers,
		Images:       images,
		Rootfs:       rootfs{sn},
		Specs:        spec.Generate,
		SpecHost:     host,
		Handlers:     handlers,
		CgroupDriver: driver,
		Stats:        cgroupmgr.NewReader(driver),
		SweepOrphans: sweep,
		Streams:      streams,
		Network:      network,
	})
	if err != nil {
		return err
	}

	lis, err := listenUnix(cfg.Listen)
	if err != nil {
		return err
	}
	gs := grpc.NewServer(
		grpc.ChainUnaryInterceptor(server.UnaryInterceptor(logger)),
		grpc.ChainStreamInterceptor(server.StreamInterceptor(logger)),
		grpc.MaxRecvMsgSize(16<<20),
		grpc.MaxSendMsgSize(16<<20),
	)
	runtime.RegisterRuntimeServiceServer(gs, runtimeSvc)
	runtime.RegisterImageServiceServer(gs, imageSvc)

	errc := make(chan error, 1)
	go func() { errc <- gs.Serve(lis) }()
	logger.Info("crid serving", "version", version, "listen", cfg.Listen, "root", cfg.Root,
		"state", cfg.State, "snapshotter", sn.Name())

	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	logger.Info("shutting down")
	done := make(chan struct{})
	go func() { gs.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(gracePeriod):
		logger.Warn("in-flight requests did not finish in time; closing them", "grace", gracePeriod)
		gs.Stop()
	}
	_ = os.Remove(cfg.Listen)
	return nil
}

// newSnapshotter opens the configured snapshotter; "auto" picks overlay when
// the root's filesystem supports it and the copy-based one otherwise.
func newSnapshotter(ctx context.Context, cfg Config) (snapshotter.Snapshotter, error) {
	base := filepath.Join(cfg.Root, "snapshotter")
	if err := os.MkdirAll(base, 0o700); err != nil {
		return nil, err
	}
	kind := cfg.Image.Snapshotter
	if kind == "auto" {
		kind = "overlay"
		if err := overlay.Supported(base); err != nil {
			log.G(ctx).Warn("overlay not supported on the root's filesystem; using the copy-based snapshotter",
				"root", cfg.Root, "error", err)
			kind = "native"
		}
	}
	switch kind {
	case "overlay":
		return overlay.New(filepath.Join(base, "overlay"))
	default:
		return native.New(filepath.Join(base, "native"))
	}
}

// newContainerManager recovers the containers and configures the runtime
// handlers whose binaries exist; the default handler is listed first.
func newContainerManager(ctx context.Context, cfg Config) (*container.Manager, []server.RuntimeHandler, error) {
	driver, err := cgroupmgr.ParseDriver(cfg.Runtime.CgroupDriver)
	if err != nil {
		return nil, nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, nil, fmt.Errorf("find crid's own binary (ExecSync's helper): %w", err)
	}
	runtimes := map[string]container.Runtime{}
	var handlers []server.RuntimeHandler
	names := make([]string, 0, len(cfg.Runtime.Handlers))
	for name := range cfg.Runtime.Handlers {
		names = append(names, name)
	}
	sort.Slice(names, func(i, j int) bool {
		// The default first, then by name.
		if (names[i] == cfg.Runtime.DefaultRuntime) != (names[j] == cfg.Runtime.DefaultRuntime) {
			return names[i] == cfg.Runtime.DefaultRuntime
		}
		return names[i] < names[j]
	})
	for _, name := range names {
		h := cfg.Runtime.Handlers[name]
		path, err := exec.LookPath(h.Path)
		if err != nil {
			if name == cfg.Runtime.DefaultRuntime {
				return nil, nil, fmt.Errorf("default runtime handler %s: %w", name, err)
			}
			log.G(ctx).Warn("runtime handler left out: binary missing", "handler", name, "path", h.Path)
			continue
		}
		root := h.Root
		if root == "" {
			root = filepath.Join(cfg.State, "runtime", name)
		}
		rt := container.Runtime{Name: name, Path: path, Root: root, ConmonPath: cfg.Runtime.Conmon, Type: "oci",
			// The systemd driver's "slice:crid:<id>" paths mean nothing to
			// the runtime's cgroupfs manager.
			SystemdCgroup: driver == cgroupmgr.Systemd,
			ExecWait:      []string{self, "exec-wait"}}
		runtimes[name] = rt
		handlers = append(handlers, probeHandler(ctx, rt))
	}
	m, err := container.New(ctx, container.Options{
		StateDir:       filepath.Join(cfg.State, "containers"),
		Runtimes:       runtimes,
		DefaultRuntime: cfg.Runtime.DefaultRuntime,
		OOM:            cgroupmgr.NewReader(driver),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("recover containers: %w", err)
	}
	return m, handlers, nil
}

// newImageStore opens the image store of snapshotter sn, pulling through a
// registry resolver configured from cfg.
func newImageStore(ctx context.Context, cfg Config, sn snapshotter.Snapshotter) (*imagestore.Store, error) {
	resolver, err := registry.NewResolver(registry.Options{
		ConfigPath: cfg.Image.RegistryConfigPath,
		UserAgent:  "crid/" + version,
	})
	if err != nil {
		return nil, fmt.Errorf("registry configuration: %w", err)
	}
	pinned := append([]string{cfg.Image.SandboxImage}, cfg.Image.PinnedImages...)
	images, err := imagestore.New(ctx, imagestore.Options{
		Root:                   filepath.Join(cfg.Root, "image", sn.Name()),
		Resolver:               resolver,
		Unpacker:               layerUnpacker{sn},
		MaxConcurrentDownloads: cfg.Image.MaxConcurrentDownloads,
		ProgressTimeout:        time.Duration(cfg.Image.PullProgressTimeout),
		MaxLayerSize:           cfg.Image.MaxLayerSize,
		PinnedImages:           pinned,
		GzipCommand:            gzipCommand(ctx, cfg.Image.GzipDecompressor),
	})
	if err != nil {
		return nil, fmt.Errorf("open image store: %w", err)
	}
	return images, nil
}

// pauseCommand finds the pause program: the configured path, else
// crid-pause beside this binary (a build tree, tests), else crid itself
// re-executed as 'crid pause', which works but costs ~18 MiB per pod.
func pauseCommand(ctx context.Context, configured string) []string {
	candidates := []string{configured}
	if self, err := os.Executable(); err == nil {
		candidates = append(candidates, filepath.Join(filepath.Dir(self), "crid-pause"))
	}
	for _, p := range candidates {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return []string{p}
		}
	}
	log.G(ctx).Warn("crid-pause not found; pods sharing a PID namespace use crid itself as their pause process",
		"looked", candidates)
	return []string{"/proc/self/exe", "pause"}
}

// gzipCommand resolves image.gzip_decompressor to the command line of an
// external inflater, or nil for the built-in one.
func gzipCommand(ctx context.Context, setting string) []string {
	switch setting {
	case "builtin":
		return nil
	case "auto":
		p, err := exec.LookPath("igzip")
		if err != nil {
			log.G(ctx).Info("igzip not found; gzip layers are inflated in-process (install ISA-L's igzip for faster pulls)")
			return nil
		}
		return []string{p, "-d", "-c"}
	default:
		return []string{setting, "-d", "-c"}
	}
}

// layerUnpacker adapts the snapshotter to imagestore's LayerUnpacker.
type layerUnpacker struct{ sn snapshotter.Snapshotter }

func (u layerUnpacker) Unpack(ctx context.Context, key, parent string, r io.Reader) (int64, error) {
	usage, err := u.sn.Unpack(ctx, key, parent, r)
	return usage.Size, err
}

func (u layerUnpacker) ParallelUnpack() bool { return u.sn.ParallelUnpack() }

func (u layerUnpacker) Remove(ctx context.Context, key string) error { return u.sn.Remove(ctx, key) }

// fsUsage adapts the snapshotter to server.FilesystemUsage.
type fsUsage struct{ sn snapshotter.Snapshotter }

func (f fsUsage) Usage(ctx context.Context) (images, containers snapshotter.FsUsage, err error) {
	return snapshotter.Summarize(ctx, f.sn)
}

// rootfs adapts the snapshotter to server.Rootfs: it adds the capacity of
// the filesystem the snapshots live on.
type rootfs struct{ snapshotter.Snapshotter }

func (r rootfs) Capacity(context.Context) (snapshotter.Capacity, error) {
	return snapshotter.Statfs(r.Root())
}

// lockRoot takes an exclusive lock on the root directory so two daemons can
// never share one store.
func lockRoot(root string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(root, "crid.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("root %s is in use by another crid", root)
		}
		return nil, fmt.Errorf("lock root %s: %w", root, err)
	}
	return func() { f.Close() }, nil
}

// listenUnix listens on path with mode 0600. A socket file left by a crashed
// daemon is replaced; one that a live daemon answers on is not.
func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o711); err != nil {
		return nil, err
	}
	if _, err := os.Lstat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("another process is serving %s", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
		}
	}
	old := syscall.Umask(0o177)
	lis, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		lis.Close()
		return nil, err
	}
	return lis, nil
}

// gcNetwork detaches, before any request is served, every pod network
// attachment whose sandbox crid does not know: what a crash between CNI
// ADD and recording the sandbox, or in the middle of a Stop, left behind.
// Failures are logged; the next start tries again.
func gcNetwork(ctx context.Context, network *cni.Manager, sandboxes *sandbox.Manager) {
	live := map[string]bool{}
	for _, sb := range sandboxes.List(sandbox.Filter{}) {
		live[sb.ID] = true
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	gone, err := network.GC(ctx, live)
	if len(gone) > 0 {
		log.G(ctx).Info("detached pod network attachments of unknown sandboxes", "count", len(gone), "podsandboxids", gone)
	}
	if err != nil {
		log.G(ctx).Warn("pod network garbage collection", "error", err)
	}
}

// probeHandler asks the OCI runtime what it supports (`features`, runc >=
// 1.1): recursive read-only mounts need the "rro" mount option (runc >=
// 1.2 on Linux >= 5.12). A runtime without `features` supports nothing
// optional.
func probeHandler(ctx context.Context, rt container.Runtime) server.RuntimeHandler {
	h := server.RuntimeHandler{Name: rt.Name}
	f, err := rt.Features(ctx)
	if err != nil {
		log.G(ctx).Info("runtime handler has no features command: optional features off", "handler", rt.Name, "path", rt.Path, "error", err)
		return h
	}
	h.RecursiveReadOnlyMounts = slices.Contains(f.MountOptions, "rro")
	log.G(ctx).Info("runtime handler", "handler", rt.Name, "path", rt.Path, "ociVersionMax", f.OCIVersionMax,
		"recursiveReadOnlyMounts", h.RecursiveReadOnlyMounts)
	return h
}
