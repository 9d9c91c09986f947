//go:build e2e

package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestImageVolume mounts images into a busybox container as kubelet's
// image volumes do (KEP-4639): crid-test/layered (four layers: an overlay
// view) whole and at a sub path, and crid-test/busybox (one layer: a bind
// of the layer). The volumes are read-only but executable, ContainerStatus
// reports each image's ID, and both survive a crid restart. The layered
// image is removed while the container runs; once the container is
// removed, no mount, view or layer of that image is left.
func TestImageVolume(t *testing.T) {
	e := newRuntimeEnv(t)
	ctx := context.Background()
	layered := strings.TrimSuffix(e.image, "/crid-test/busybox:latest") + "/crid-test/layered:latest"
	pulled, err := e.d.images().PullImage(ctx, &runtime.PullImageRequest{Image: &runtime.ImageSpec{Image: layered}})
	require.NoError(t, err, "pull layered\n%s", e.d.Logs())
	layeredID := pulled.GetImageRef()
	_, snaps := e.d.storeDirs()
	snapshots := filepath.Join(snaps, "snapshots")
	containersDir := filepath.Join(e.d.state, "containers")

	pod := e.podConfig("image-volume", nil)
	podID := e.runPod(t, pod)
	imageMount := func(dst, ref, user, subPath string) *runtime.Mount {
		return &runtime.Mount{ContainerPath: dst, Readonly: true, ImageSubPath: subPath,
			Image: &runtime.ImageSpec{Image: ref, UserSpecifiedImage: user}}
	}
	cfg := e.ctrConfig(pod, "vol", "sleep", "3600")
	cfg.Mounts = []*runtime.Mount{
		imageMount("/vol", layeredID, layered, ""),
		imageMount("/sub", layeredID, layered, "data/dir"),
		imageMount("/bb", e.imageID, e.image, ""),
	}
	id := e.create(t, podID, pod, cfg)
	e.start(t, id)

	check := func(t *testing.T) {
		t.Helper()
		require.Equal(t, "b\n", e.mustExec(t, id, "cat", "/vol/data/b"))
		require.Equal(t, "z\n", e.mustExec(t, id, "cat", "/vol/data/dir/z"))
		_, _, code := e.execOut(t, id, "test", "-e", "/vol/data/a")
		require.NotZero(t, code, "the whiteout of /data/a hides it")
		require.Equal(t, "z\n", e.mustExec(t, id, "ls", "/sub"), "the sub path, not the image root")
		require.Equal(t, "c\n", e.mustExec(t, id, "cat", "/vol/data/c"), "the top (uncompressed) layer")
		for _, p := range []string{"/vol/new", "/sub/new", "/bb/new", "/vol/data/b"} {
			_, _, code := e.execOut(t, id, "touch", p)
			require.NotZero(t, code, "writing %s must fail", p)
		}
		require.Equal(t, "b\nc\ndir\n", e.mustExec(t, id, "/vol/bin/ls", "-1", "/vol/data"),
			"binaries of the image run from the volume")
		require.Equal(t, "hi\n", e.mustExec(t, id, "/bb/bin/echo", "hi"))
		mounts := map[string]string{}
		for _, m := range e.ctrStatus(t, id).GetMounts() {
			mounts[m.GetContainerPath()] = m.GetImage().GetImageRef()
		}
		require.Equal(t, map[string]string{"/vol": layeredID, "/sub": layeredID, "/bb": e.imageID}, mounts)
		for i := range cfg.Mounts {
			require.DirExists(t, filepath.Join(snapshots, id+"-iv"+strconv.Itoa(i)), "view %d", i)
		}
		require.Len(t, mountsUnder(t, filepath.Join(containersDir, id, "volumes")), 3)
	}
	check(t)

	e.d.restart(t)
	require.Equal(t, runtime.ContainerState_CONTAINER_RUNNING, e.ctrStatus(t, id).GetState())
	check(t)

	// Removed while a volume uses it: gone from the store at once, its
	// files stay until the container goes.
	_, err = e.d.images().RemoveImage(ctx, &runtime.RemoveImageRequest{Image: &runtime.ImageSpec{Image: layeredID}})
	require.NoError(t, err)
	st, err := e.d.images().ImageStatus(ctx, &runtime.ImageStatusRequest{Image: &runtime.ImageSpec{Image: layeredID}})
	require.NoError(t, err)
	require.Nil(t, st.GetImage())
	require.Equal(t, "b\n", e.mustExec(t, id, "cat", "/vol/data/b"))

	_, err = e.rt().RemoveContainer(ctx, &runtime.RemoveContainerRequest{ContainerId: id})
	require.NoError(t, err)
	require.Empty(t, mountsUnder(t, containersDir), "no mount left in the bundles")
	require.Equal(t, []string{busyboxLayer(t, e)}, dirNames(t, snapshots),
		"only the busybox image's one layer is left: no view, no layer of the removed image")
}

// busyboxLayer is the snapshot key (cache-id) of the busybox image's layer.
func busyboxLayer(t *testing.T, e *rtEnv) string {
	t.Helper()
	img, _ := e.d.storeDirs()
	entries, err := os.ReadDir(filepath.Join(img, "layerdb", "sha256"))
	require.NoError(t, err)
	require.Len(t, entries, 1, "busybox has one layer")
	b, err := os.ReadFile(filepath.Join(img, "layerdb", "sha256", entries[0].Name(), "cache-id"))
	require.NoError(t, err)
	return strings.TrimSpace(string(b))
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, d := range ents {
		names = append(names, d.Name())
	}
	return names
}

// TestImageVolumeRefused: an image volume that is not read-only, or whose
// sub path is not in the image, fails CreateContainer with
// InvalidArgument, one whose image is not pulled with NotFound, and none
// leaves a mount, a view or a bundle behind.
func TestImageVolumeRefused(t *testing.T) {
	e := newRuntimeEnv(t)
	ctx := context.Background()
	_, snaps := e.d.storeDirs()
	snapshots := filepath.Join(snaps, "snapshots")
	before := countEntries(t, snapshots)
	pod := e.podConfig("image-volume-refused", nil)
	podID := e.runPod(t, pod)
	for _, tc := range []struct {
		desc  string
		mount *runtime.Mount
		code  codes.Code
	}{
		{"writable", &runtime.Mount{ContainerPath: "/vol", Image: &runtime.ImageSpec{Image: e.imageID}}, codes.InvalidArgument},
		{"sub path not in the image", &runtime.Mount{ContainerPath: "/vol", Readonly: true,
			Image: &runtime.ImageSpec{Image: e.imageID}, ImageSubPath: "not-existing"}, codes.InvalidArgument},
		{"sub path out of the image", &runtime.Mount{ContainerPath: "/vol", Readonly: true,
			Image: &runtime.ImageSpec{Image: e.imageID}, ImageSubPath: "../../etc"}, codes.InvalidArgument},
		{"image not pulled", &runtime.Mount{ContainerPath: "/vol", Readonly: true,
			Image: &runtime.ImageSpec{Image: "sha256:" + strings.Repeat("0", 64)}}, codes.NotFound},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			cfg := e.ctrConfig(pod, "refused", "sleep", "3600")
			cfg.Mounts = []*runtime.Mount{
				{ContainerPath: "/ok", Readonly: true, Image: &runtime.ImageSpec{Image: e.imageID}},
				tc.mount,
			}
			_, err := e.rt().CreateContainer(ctx, &runtime.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
			requireCode(t, tc.code, err)
			require.Empty(t, mountsUnder(t, filepath.Join(e.d.state, "containers")))
			require.Equal(t, before, countEntries(t, snapshots), "no view left")
		})
	}
}
