package server

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/require"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crid-dev/crid/cgroupmgr"
	"github.com/crid-dev/crid/container/spec"
	"github.com/crid-dev/crid/imagestore"
	"github.com/crid-dev/crid/internal/log"
	"github.com/crid-dev/crid/sandbox"
	"github.com/crid-dev/crid/snapshotter"
)

// viewRootfs makes views of images whose files are directories: the view
// of a layer is a read-only bind of its directory. It records the views
// that exist.
type viewRootfs struct {
	fakeRootfs
	layers map[string]string // cache-id → directory

	mu    sync.Mutex
	views map[string]string // key → parent
}

func (f *viewRootfs) View(_ context.Context, key, parent string) ([]snapshotter.Mount, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	dir, ok := f.layers[parent]
	if !ok {
		return nil, fmt.Errorf("snapshot %s: %w", parent, errdefs.ErrNotFound)
	}
	if _, ok := f.views[key]; ok {
		return nil, fmt.Errorf("snapshot %s: %w", key, errdefs.ErrAlreadyExists)
	}
	f.views[key] = parent
	return []snapshotter.Mount{{Type: "bind", Source: dir, Options: []string{"rbind", "ro"}}}, nil
}

func (f *viewRootfs) Remove(_ context.Context, key string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.views[key]; !ok {
		return fmt.Errorf("snapshot %s: %w", key, errdefs.ErrNotFound)
	}
	delete(f.views, key)
	return nil
}

func (f *viewRootfs) viewKeys() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for k := range f.views {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// volumeTest is a RuntimeService with a ready sandbox, the container image
// "app" and the volume image "vol", whose files are:
//
//	bin/tool, etc/passwd, abs -> /etc, up -> ../../.., file
type volumeTest struct {
	rs        *RuntimeService
	ctrs      *checkpointContainers
	rootfs    *viewRootfs
	images    *fakeImages
	sandboxID string
	volImage  imagestore.Image
	volDir    string
	sweeps    int
}

func newVolumeTest(t *testing.T) *volumeTest {
	t.Helper()
	volDir := t.TempDir()
	for name, content := range map[string]string{"bin/tool": "#!/bin/sh\n", "etc/passwd": "root:x:0:0::/:/bin/sh\n", "file": "f\n"} {
		require.NoError(t, os.MkdirAll(filepath.Join(volDir, filepath.Dir(name)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(volDir, name), []byte(content), 0o755))
	}
	require.NoError(t, os.Symlink("/etc", filepath.Join(volDir, "abs")))
	require.NoError(t, os.Symlink("../../..", filepath.Join(volDir, "up")))

	vt := &volumeTest{images: newFakeImages(), volDir: volDir}
	vt.images.add(testImage(1, ""), "app")
	vt.volImage = testImage(2, "")
	vt.volImage.Layers[0].CacheID = "vol-top"
	vt.images.add(vt.volImage, "vol")
	vt.rootfs = &viewRootfs{layers: map[string]string{"vol-top": volDir}, views: map[string]string{}}
	vt.ctrs = &checkpointContainers{rootfs: t.TempDir(), recs: map[string][]byte{}, specs: map[string]*specs.Spec{}}
	sbs := newFakeSandboxes()
	rs, err := NewRuntimeService(RuntimeServiceDeps{
		Version: "test", Sandboxes: sbs, Containers: vt.ctrs, Images: vt.images,
		Rootfs: vt.rootfs, Specs: spec.Generate, Handlers: []RuntimeHandler{{Name: "runc"}},
		CgroupDriver: cgroupmgr.Cgroupfs, Stats: fakeStats{},
		SweepOrphans: func(context.Context) { vt.sweeps++ },
	})
	require.NoError(t, err)
	vt.rs = rs
	sb, err := sbs.Run(context.Background(), sandbox.Config{Metadata: sandbox.Metadata{Name: "p", Namespace: "ns", UID: "u"}})
	require.NoError(t, err)
	vt.sandboxID = sb.ID
	stored := sbs.items[sb.ID]
	stored.NetNSPath, stored.IPCNSPath, stored.UTSNSPath, stored.PIDNSPath = "/run/netns/p", "/run/ipcns/p", "/run/utsns/p", "/proc/42/ns/pid"
	return vt
}

func (vt *volumeTest) create(ctx context.Context, name string, mounts ...*runtime.Mount) (string, error) {
	resp, err := vt.rs.CreateContainer(ctx, &runtime.CreateContainerRequest{
		PodSandboxId: vt.sandboxID,
		Config: &runtime.ContainerConfig{
			Metadata: &runtime.ContainerMetadata{Name: name},
			Image:    &runtime.ImageSpec{Image: "app"},
			Command:  []string{"sleep", "infinity"},
			Mounts:   mounts,
		},
	})
	return resp.GetContainerId(), err
}

func imageMount(dst, ref, subPath string) *runtime.Mount {
	return &runtime.Mount{ContainerPath: dst, Readonly: true, ImageSubPath: subPath,
		Image: &runtime.ImageSpec{Image: ref, UserSpecifiedImage: "registry.test/vol:1"}}
}

func testCtx() context.Context {
	return log.WithLogger(context.Background(), slog.New(slog.DiscardHandler))
}

// TestImageVolumeMounts: each image volume is a view of its image, bound
// read-only, nosuid and nodev but executable, whole or at a sub path
// resolved inside the image; ContainerStatus reports the image's ID as
// image_ref from the record's checkpoint; removal releases the views.
func TestImageVolumeMounts(t *testing.T) {
	ctx := testCtx()
	vt := newVolumeTest(t)
	id, err := vt.create(ctx, "c",
		imageMount("/vol", "vol", ""),
		&runtime.Mount{ContainerPath: "/host", HostPath: t.TempDir()},
		imageMount("/etc-from-image", vt.volImage.ID.String(), "./etc/"),
		imageMount("/abs", "vol", "abs"),
		imageMount("/up", "vol", "up/bin"),
		imageMount("/file", "vol", "file"),
	)
	require.NoError(t, err)
	require.Equal(t, []string{id + "-iv0", id + "-iv1", id + "-iv2", id + "-iv3", id + "-iv4"}, vt.rootfs.viewKeys())

	sp := vt.ctrs.specs[id]
	for dst, src := range map[string]string{
		"/vol":            vt.volDir,
		"/etc-from-image": filepath.Join(vt.volDir, "etc"),
		"/abs":            filepath.Join(vt.volDir, "etc"), // abs -> /etc stays in the image
		"/up":             filepath.Join(vt.volDir, "bin"), // so does ../../..
		"/file":           filepath.Join(vt.volDir, "file"),
	} {
		m := mountByDest(t, sp, dst)
		require.Equal(t, src, m.Source, dst)
		require.Equal(t, []string{"rbind", "rprivate", "ro", "nosuid", "nodev"}, m.Options, dst)
	}
	require.Equal(t, []string{"rbind", "rprivate", "rw"}, mountByDest(t, sp, "/host").Options)

	st, err := vt.rs.ContainerStatus(ctx, &runtime.ContainerStatusRequest{ContainerId: id})
	require.NoError(t, err)
	mounts := st.GetStatus().GetMounts()
	require.Len(t, mounts, 6)
	for _, m := range mounts {
		if m.GetContainerPath() == "/host" {
			require.Nil(t, m.GetImage())
			continue
		}
		require.Equal(t, vt.volImage.ID.String(), m.GetImage().GetImageRef(), m.GetContainerPath())
		require.Equal(t, "registry.test/vol:1", m.GetImage().GetUserSpecifiedImage())
		require.True(t, m.GetReadonly())
	}
	require.Equal(t, "./etc/", mounts[2].GetImageSubPath(), "the request's sub path, as asked")

	_, err = vt.rs.RemoveContainer(ctx, &runtime.RemoveContainerRequest{ContainerId: id})
	require.NoError(t, err)
	require.Empty(t, vt.rootfs.viewKeys(), "views go with the container")
	require.Zero(t, vt.sweeps, "every image is still there: nothing to sweep")
}

// TestImageVolumeRemovedImage: when a volume's image was removed while the
// container lived, removing the container sweeps the image's layers.
func TestImageVolumeRemovedImage(t *testing.T) {
	ctx := testCtx()
	vt := newVolumeTest(t)
	id, err := vt.create(ctx, "c", imageMount("/vol", "vol", ""))
	require.NoError(t, err)
	require.NoError(t, vt.images.Remove(ctx, "vol"))
	_, err = vt.rs.RemoveContainer(ctx, &runtime.RemoveContainerRequest{ContainerId: id})
	require.NoError(t, err)
	require.Empty(t, vt.rootfs.viewKeys())
	require.Equal(t, 1, vt.sweeps)
}

// TestImageVolumeInvalid: bad image volumes fail CreateContainer with
// InvalidArgument (NotFound for an image that is not there) and leave no
// view behind.
func TestImageVolumeInvalid(t *testing.T) {
	ctx := testCtx()
	for _, tc := range []struct {
		desc     string
		mount    *runtime.Mount
		notFound bool
		wantErr  string
	}{
		{desc: "not read-only", wantErr: "read-only",
			mount: &runtime.Mount{ContainerPath: "/vol", Image: &runtime.ImageSpec{Image: "vol"}}},
		{desc: "host path too", wantErr: "host path",
			mount: &runtime.Mount{ContainerPath: "/vol", HostPath: "/tmp", Readonly: true, Image: &runtime.ImageSpec{Image: "vol"}}},
		{desc: "no image", wantErr: "no image",
			mount: &runtime.Mount{ContainerPath: "/vol", Readonly: true, Image: &runtime.ImageSpec{}}},
		{desc: "sub path without image", wantErr: "without an image",
			mount: &runtime.Mount{ContainerPath: "/vol", HostPath: "/tmp", ImageSubPath: "etc"}},
		{desc: "absolute sub path", wantErr: "relative", mount: imageMount("/vol", "vol", "/etc")},
		{desc: "sub path with ..", wantErr: `".."`, mount: imageMount("/vol", "vol", "etc/../../x")},
		{desc: "sub path not in the image", wantErr: "does not exist", mount: imageMount("/vol", "vol", "not-existing")},
		// abs -> /etc: the host's /etc/shadow exists, the image's does not.
		{desc: "sub path through a symlink not in the image", wantErr: "does not exist", mount: imageMount("/vol", "vol", "abs/shadow")},
		{desc: "image not pulled", notFound: true, mount: imageMount("/vol", "missing", "")},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			vt := newVolumeTest(t)
			_, err := vt.create(ctx, "c", imageMount("/ok", "vol", ""), tc.mount)
			require.Error(t, err)
			if tc.notFound {
				require.True(t, errdefs.IsNotFound(err), "%v", err)
			} else {
				require.True(t, errdefs.IsInvalidArgument(err), "%v", err)
				require.ErrorContains(t, err, tc.wantErr)
			}
			require.Empty(t, vt.rootfs.viewKeys(), "no view left")
		})
	}
}

// TestImageVolumeViewFails: when the second view cannot be made, the first
// is released.
func TestImageVolumeViewFails(t *testing.T) {
	ctx := testCtx()
	vt := newVolumeTest(t)
	broken := testImage(3, "")
	broken.Layers[0].CacheID = "gone"
	vt.images.add(broken, "broken")
	_, err := vt.create(ctx, "c", imageMount("/a", "vol", ""), imageMount("/b", "broken", ""))
	require.True(t, errdefs.IsNotFound(err), "%v", err)
	require.Empty(t, vt.rootfs.viewKeys())
}

func TestSnapshotOwner(t *testing.T) {
	id := fmt.Sprintf("%064x", 7)
	for _, tc := range []struct{ key, want string }{
		{id, id},
		{id + "-iv0", id},
		{id + "-iv12", id},
		{id + "-iv", id + "-iv"},
		{id + "-ivx", id + "-ivx"},
		{id + "-iv-1", id + "-iv-1"},
		{"-iv0", "-iv0"},
		{"layer-cache-id", "layer-cache-id"},
	} {
		require.Equal(t, tc.want, SnapshotOwner(tc.key), tc.key)
	}
	require.Equal(t, id+"-iv3", imageVolumeKey(id, 3))
}

func mountByDest(t *testing.T, s *specs.Spec, dst string) specs.Mount {
	t.Helper()
	for _, m := range s.Mounts {
		if m.Destination == dst {
			return m
		}
	}
	t.Fatalf("no mount at %s", dst)
	return specs.Mount{}
}
