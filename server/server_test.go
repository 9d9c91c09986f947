package server

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
	"testing"

	"github.com/containerd/errdefs"
	digest "github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crid-dev/crid/cgroupmgr"
	"github.com/crid-dev/crid/container/spec"
	"github.com/crid-dev/crid/imagestore"
	"github.com/crid-dev/crid/imagestore/registry"
	"github.com/crid-dev/crid/snapshotter"
)

// fakeImages is an in-memory ImageStore: refs map to images.
type fakeImages struct {
	mu        sync.Mutex
	images    map[string]imagestore.Image // by ID
	refs      map[string]string           // ref → ID
	pullErr   error
	lastCreds *registry.Credentials
	panicOn   string
}

func newFakeImages() *fakeImages {
	return &fakeImages{images: map[string]imagestore.Image{}, refs: map[string]string{}}
}

func (f *fakeImages) add(img imagestore.Image, refs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.images[img.ID.String()] = img
	f.refs[img.ID.String()] = img.ID.String()
	for _, r := range refs {
		f.refs[r] = img.ID.String()
	}
}

func (f *fakeImages) Pull(_ context.Context, ref string, creds *registry.Credentials) (imagestore.Image, error) {
	f.mu.Lock()
	f.lastCreds = creds
	f.mu.Unlock()
	if ref == f.panicOn {
		panic("boom")
	}
	if f.pullErr != nil {
		return imagestore.Image{}, f.pullErr
	}
	return f.Get(context.Background(), ref)
}

func (f *fakeImages) Get(_ context.Context, ref string) (imagestore.Image, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id, ok := f.refs[ref]
	if !ok {
		return imagestore.Image{}, fmt.Errorf("image %q: %w", ref, errdefs.ErrNotFound)
	}
	return f.images[id], nil
}

func (f *fakeImages) List(context.Context) []imagestore.Image {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []imagestore.Image
	for _, img := range f.images {
		out = append(out, img)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (f *fakeImages) Remove(_ context.Context, ref string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	id, ok := f.refs[ref]
	if !ok {
		return fmt.Errorf("image %q: %w", ref, errdefs.ErrNotFound)
	}
	delete(f.images, id)
	for r, v := range f.refs {
		if v == id {
			delete(f.refs, r)
		}
	}
	return nil
}

type fakeFS struct{ images, containers snapshotter.FsUsage }

func (f fakeFS) Usage(context.Context) (snapshotter.FsUsage, snapshotter.FsUsage, error) {
	return f.images, f.containers, nil
}

func testImage(n byte, user string) imagestore.Image {
	id := digest.FromBytes([]byte{n})
	img := imagestore.Image{
		ID:          id,
		RepoTags:    []string{fmt.Sprintf("docker.io/library/img%d:latest", n)},
		RepoDigests: []string{fmt.Sprintf("docker.io/library/img%d@%s", n, digest.FromBytes([]byte{n, n}))},
		Size:        1000 + int64(n),
		Layers: []imagestore.Layer{{
			ChainID: digest.FromBytes([]byte{n, 1}), DiffID: digest.FromBytes([]byte{n, 1}), Size: 1000 + int64(n), CacheID: "c1",
		}},
	}
	img.Config.Config.User = user
	img.Config.OS = "linux"
	return img
}

// testRuntimeDeps are a RuntimeService's dependencies, all fakes; tests
// replace the ones they look at.
func testRuntimeDeps(images ImageStore) RuntimeServiceDeps {
	return RuntimeServiceDeps{
		Version: "test", Sandboxes: newFakeSandboxes(), Containers: newFakeContainers(), Images: images,
		Rootfs: fakeRootfs{}, Specs: spec.Generate, Handlers: []RuntimeHandler{{Name: "runc"}},
		CgroupDriver: cgroupmgr.Cgroupfs, Stats: fakeStats{},
	}
}

// serve serves what register registers over an in-memory gRPC connection,
// through the real interceptors, until the test ends.
func serve(t *testing.T, register func(*grpc.Server)) *grpc.ClientConn {
	t.Helper()
	logger := slog.New(slog.DiscardHandler)
	gs := grpc.NewServer(grpc.UnaryInterceptor(UnaryInterceptor(logger)), grpc.StreamInterceptor(StreamInterceptor(logger)))
	register(gs)
	lis := bufconn.Listen(1 << 20)
	go func() { _ = gs.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close(); gs.Stop() })
	return conn
}

// serveRuntime serves a RuntimeService over deps.
func serveRuntime(t *testing.T, deps RuntimeServiceDeps) runtime.RuntimeServiceClient {
	t.Helper()
	rs, err := NewRuntimeService(deps)
	require.NoError(t, err)
	return runtime.NewRuntimeServiceClient(serve(t, func(gs *grpc.Server) { runtime.RegisterRuntimeServiceServer(gs, rs) }))
}

// startServer serves the services over an in-memory gRPC connection, through
// the real interceptors.
func startServer(t *testing.T, images ImageStore, fs FilesystemUsage) (runtime.ImageServiceClient, runtime.RuntimeServiceClient) {
	t.Helper()
	is, err := NewImageService(ImageServiceDeps{Images: images, Filesystems: fs})
	require.NoError(t, err)
	rs, err := NewRuntimeService(testRuntimeDeps(images))
	require.NoError(t, err)
	conn := serve(t, func(gs *grpc.Server) {
		runtime.RegisterImageServiceServer(gs, is)
		runtime.RegisterRuntimeServiceServer(gs, rs)
	})
	return runtime.NewImageServiceClient(conn), runtime.NewRuntimeServiceClient(conn)
}

func TestImageRPCs(t *testing.T) {
	ctx := context.Background()
	store := newFakeImages()
	a, b := testImage(1, "1000:1000"), testImage(2, "nginx")
	store.add(a, "docker.io/library/img1:latest")
	store.add(b, "docker.io/library/img2:latest")
	ic, _ := startServer(t, store, fakeFS{})

	t.Run("pull returns the image ID and passes the credentials", func(t *testing.T) {
		resp, err := ic.PullImage(ctx, &runtime.PullImageRequest{
			Image: &runtime.ImageSpec{Image: "docker.io/library/img1:latest"},
			Auth:  &runtime.AuthConfig{Username: "u", Password: "p", ServerAddress: "docker.io"},
		})
		require.NoError(t, err)
		require.Equal(t, a.ID.String(), resp.GetImageRef())
		require.Equal(t, &registry.Credentials{Username: "u", Password: "p", ServerAddress: "docker.io"}, store.lastCreds)
	})
	t.Run("empty auth is anonymous", func(t *testing.T) {
		_, err := ic.PullImage(ctx, &runtime.PullImageRequest{
			Image: &runtime.ImageSpec{Image: "docker.io/library/img1:latest"}, Auth: &runtime.AuthConfig{},
		})
		require.NoError(t, err)
		require.Nil(t, store.lastCreds)
	})
	t.Run("list all and by filter", func(t *testing.T) {
		resp, err := ic.ListImages(ctx, &runtime.ListImagesRequest{})
		require.NoError(t, err)
		require.Len(t, resp.GetImages(), 2)
		resp, err = ic.ListImages(ctx, &runtime.ListImagesRequest{Filter: &runtime.ImageFilter{
			Image: &runtime.ImageSpec{Image: "docker.io/library/img2:latest"}}})
		require.NoError(t, err)
		require.Len(t, resp.GetImages(), 1)
		require.Equal(t, b.ID.String(), resp.GetImages()[0].GetId())
		resp, err = ic.ListImages(ctx, &runtime.ListImagesRequest{Filter: &runtime.ImageFilter{
			Image: &runtime.ImageSpec{Image: "nope"}}})
		require.NoError(t, err)
		require.Empty(t, resp.GetImages())
	})
	t.Run("stream images", func(t *testing.T) {
		stream, err := ic.StreamImages(ctx, &runtime.StreamImagesRequest{})
		require.NoError(t, err)
		var got []string
		for {
			msg, err := stream.Recv()
			if err != nil {
				break
			}
			for _, img := range msg.GetImages() {
				got = append(got, img.GetId())
			}
		}
		require.ElementsMatch(t, []string{a.ID.String(), b.ID.String()}, got)
	})
	t.Run("status converts the image and its user", func(t *testing.T) {
		resp, err := ic.ImageStatus(ctx, &runtime.ImageStatusRequest{Image: &runtime.ImageSpec{Image: "docker.io/library/img1:latest"}, Verbose: true})
		require.NoError(t, err)
		img := resp.GetImage()
		require.Equal(t, a.ID.String(), img.GetId())
		require.Equal(t, a.RepoTags, img.GetRepoTags())
		require.Equal(t, a.RepoDigests, img.GetRepoDigests())
		require.EqualValues(t, a.Size, img.GetSize())
		require.EqualValues(t, 1000, img.GetUid().GetValue())
		require.Empty(t, img.GetUsername())
		var info imageInfo
		require.NoError(t, json.Unmarshal([]byte(resp.GetInfo()["info"]), &info))
		require.Equal(t, a.Layers[0].ChainID.String(), info.ChainID)
		require.Equal(t, a.Layers[0].DiffID.String(), info.Layers[0].DiffID)

		resp, err = ic.ImageStatus(ctx, &runtime.ImageStatusRequest{Image: &runtime.ImageSpec{Image: "docker.io/library/img2:latest"}})
		require.NoError(t, err)
		require.Nil(t, resp.GetImage().GetUid())
		require.Equal(t, "nginx", resp.GetImage().GetUsername())
		require.Empty(t, resp.GetInfo())
	})
	t.Run("status of a missing image is no image, not an error", func(t *testing.T) {
		resp, err := ic.ImageStatus(ctx, &runtime.ImageStatusRequest{Image: &runtime.ImageSpec{Image: "missing"}})
		require.NoError(t, err)
		require.Nil(t, resp.GetImage())
	})
	t.Run("remove is idempotent", func(t *testing.T) {
		_, err := ic.RemoveImage(ctx, &runtime.RemoveImageRequest{Image: &runtime.ImageSpec{Image: "docker.io/library/img2:latest"}})
		require.NoError(t, err)
		_, err = ic.RemoveImage(ctx, &runtime.RemoveImageRequest{Image: &runtime.ImageSpec{Image: "docker.io/library/img2:latest"}})
		require.NoError(t, err)
		resp, err := ic.ImageStatus(ctx, &runtime.ImageStatusRequest{Image: &runtime.ImageSpec{Image: b.ID.String()}})
		require.NoError(t, err)
		require.Nil(t, resp.GetImage())
	})
}

func TestErrorsMapToCodes(t *testing.T) {
	ctx := context.Background()
	store := newFakeImages()
	store.panicOn = "panic"
	ic, rc := startServer(t, store, fakeFS{})

	for _, tc := range []struct {
		desc string
		call func() error
		want codes.Code
	}{
		{"pull without image", func() error {
			_, err := ic.PullImage(ctx, &runtime.PullImageRequest{})
			return err
		}, codes.InvalidArgument},
		{"status without image", func() error {
			_, err := ic.ImageStatus(ctx, &runtime.ImageStatusRequest{})
			return err
		}, codes.InvalidArgument},
		{"remove without image", func() error {
			_, err := ic.RemoveImage(ctx, &runtime.RemoveImageRequest{})
			return err
		}, codes.InvalidArgument},
		{"pull of a missing image", func() error {
			store.pullErr = fmt.Errorf("manifest unknown: %w", errdefs.ErrNotFound)
			defer func() { store.pullErr = nil }()
			_, err := ic.PullImage(ctx, &runtime.PullImageRequest{Image: &runtime.ImageSpec{Image: "x"}})
			return err
		}, codes.NotFound},
		{"pull unauthenticated", func() error {
			store.pullErr = fmt.Errorf("token: %w", errdefs.ErrUnauthenticated)
			defer func() { store.pullErr = nil }()
			_, err := ic.PullImage(ctx, &runtime.PullImageRequest{Image: &runtime.ImageSpec{Image: "x"}})
			return err
		}, codes.Unauthenticated},
		{"digest mismatch", func() error {
			store.pullErr = fmt.Errorf("layer: %w", errdefs.ErrDataLoss)
			defer func() { store.pullErr = nil }()
			_, err := ic.PullImage(ctx, &runtime.PullImageRequest{Image: &runtime.ImageSpec{Image: "x"}})
			return err
		}, codes.DataLoss},
		{"panic becomes Internal", func() error {
			_, err := ic.PullImage(ctx, &runtime.PullImageRequest{Image: &runtime.ImageSpec{Image: "panic"}})
			return err
		}, codes.Internal},
		{"streaming RPCs not built yet", func() error {
			_, err := rc.Exec(ctx, &runtime.ExecRequest{})
			return err
		}, codes.Unimplemented},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			err := tc.call()
			require.Error(t, err)
			require.Equal(t, tc.want, status.Code(err), err.Error())
		})
	}
}

func TestRuntimeInfoAndFsInfo(t *testing.T) {
	ctx := context.Background()
	fs := fakeFS{
		images:     snapshotter.FsUsage{Mountpoint: "/var/lib/crid/snapshotter/overlay", Usage: snapshotter.Usage{Size: 4096, Inodes: 7}},
		containers: snapshotter.FsUsage{Mountpoint: "/var/lib/crid/snapshotter/overlay", Usage: snapshotter.Usage{Size: 10, Inodes: 2}},
	}
	ic, rc := startServer(t, newFakeImages(), fs)

	v, err := rc.Version(ctx, &runtime.VersionRequest{})
	require.NoError(t, err)
	require.Equal(t, "crid", v.GetRuntimeName())
	require.Equal(t, "test", v.GetRuntimeVersion())
	require.Equal(t, "v1", v.GetRuntimeApiVersion())

	st, err := rc.Status(ctx, &runtime.StatusRequest{})
	require.NoError(t, err)
	require.Len(t, st.GetStatus().GetConditions(), 2)
	for _, c := range st.GetStatus().GetConditions() {
		switch c.GetType() {
		case runtime.RuntimeReady:
			require.True(t, c.GetStatus())
		case runtime.NetworkReady:
			require.False(t, c.GetStatus(), "no pod network given: the network must not claim readiness")
			require.NotEmpty(t, c.GetReason())
		}
	}
	require.Equal(t, "runc", st.GetRuntimeHandlers()[0].GetName())

	rcfg, err := rc.RuntimeConfig(ctx, &runtime.RuntimeConfigRequest{})
	require.NoError(t, err)
	require.Equal(t, runtime.CgroupDriver_CGROUPFS, rcfg.GetLinux().GetCgroupDriver())

	fi, err := ic.ImageFsInfo(ctx, &runtime.ImageFsInfoRequest{})
	require.NoError(t, err)
	require.Len(t, fi.GetImageFilesystems(), 1)
	require.Len(t, fi.GetContainerFilesystems(), 1)
	im := fi.GetImageFilesystems()[0]
	require.Equal(t, "/var/lib/crid/snapshotter/overlay", im.GetFsId().GetMountpoint())
	require.EqualValues(t, 4096, im.GetUsedBytes().GetValue())
	require.EqualValues(t, 7, im.GetInodesUsed().GetValue())
	require.Positive(t, im.GetTimestamp())
	require.EqualValues(t, 10, fi.GetContainerFilesystems()[0].GetUsedBytes().GetValue())
}

func TestImageUser(t *testing.T) {
	for _, tc := range []struct {
		desc, user string
		uid        int64
		hasUID     bool
		name       string
	}{
		{"empty", "", 0, false, ""},
		{"root uid", "0", 0, true, ""},
		{"uid and gid", "1000:1000", 1000, true, ""},
		{"name", "www-data", 0, false, "www-data"},
		{"name and group", "nginx:nginx", 0, false, "nginx"},
		{"max int32", "2147483647", 2147483647, true, ""},
		{"over int32 never wraps", "4294967296", 0, false, ""},
		{"huge number", "99999999999999999999999", 0, false, ""},
		{"negative", "-1", 0, false, ""},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			uid, name := imageUser(tc.user)
			if tc.hasUID {
				require.NotNil(t, uid)
				require.Equal(t, tc.uid, *uid)
			} else {
				require.Nil(t, uid)
			}
			require.Equal(t, tc.name, name)
		})
	}
}
