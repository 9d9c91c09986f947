package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/crid-dev/crid/internal/mount"
	"github.com/crid-dev/crid/internal/testutil"
	"github.com/crid-dev/crid/internal/testutil/imagebuild"
	"github.com/crid-dev/crid/internal/testutil/registry"
)

// TestPulledImageMountsAsContainersSeeIt pulls a multi-layer image with
// whiteouts and an opaque directory from a real registry through the
// components serve wires together, mounts its top layer as a container's
// rootfs would be, and checks the files a container would see — with the
// overlay snapshotter and with the copy-based fallback.
func TestPulledImageMountsAsContainersSeeIt(t *testing.T) {
	testutil.RequiresRoot(t)
	ctx := context.Background()
	reg := registry.Start(t)
	b, err := imagebuild.NewBuilder(t.TempDir())
	require.NoError(t, err)
	p, err := imagebuild.NewPusher(reg.Addr())
	require.NoError(t, err)
	targets, err := imagebuild.Set("basic")
	require.NoError(t, err)
	for _, tg := range targets {
		if tg.Repo == "crid-test/layered" {
			_, err := imagebuild.BuildAndPush(ctx, b, p, tg)
			require.NoError(t, err)
		}
	}

	for _, kind := range []string{"overlay", "native"} {
		t.Run(kind, func(t *testing.T) {
			cfg := defaultConfig()
			cfg.Root = t.TempDir()
			cfg.Image.Snapshotter = kind
			cfg.Image.RegistryConfigPath = t.TempDir()
			sn, err := newSnapshotter(ctx, cfg)
			require.NoError(t, err)
			t.Cleanup(func() { sn.Close() })
			require.Equal(t, kind, sn.Name())
			store, err := newImageStore(ctx, cfg, sn)
			require.NoError(t, err)

			img, err := store.Pull(ctx, reg.Addr()+"/crid-test/layered:latest", nil)
			require.NoError(t, err)
			require.Len(t, img.Layers, 4)

			top := img.Layers[len(img.Layers)-1].CacheID
			mounts, err := sn.View(ctx, "rootfs-view", top)
			require.NoError(t, err)
			t.Cleanup(func() { _ = sn.Remove(ctx, "rootfs-view") })
			target := filepath.Join(t.TempDir(), "rootfs")
			require.NoError(t, os.MkdirAll(target, 0o755))
			require.NoError(t, mount.All(mounts, target))
			t.Cleanup(func() { require.NoError(t, mount.Unmount(target)) })

			fi, err := os.Stat(filepath.Join(target, "bin/busybox"))
			require.NoError(t, err)
			require.NotZero(t, fi.Mode().Perm()&0o111, "busybox is executable")
			_, err = os.Lstat(filepath.Join(target, "data/a"))
			require.True(t, os.IsNotExist(err), "whited-out /data/a must be absent: %v", err)
			body, err := os.ReadFile(filepath.Join(target, "data/b"))
			require.NoError(t, err)
			require.Equal(t, "b\n", string(body))
			ents, err := os.ReadDir(filepath.Join(target, "data/dir"))
			require.NoError(t, err)
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			require.Equal(t, []string{"z"}, names, "the opaque /data/dir hides x and y")
			body, err = os.ReadFile(filepath.Join(target, "data/c"))
			require.NoError(t, err)
			require.Equal(t, "c\n", string(body), "the uncompressed layer's file")
		})
	}
}
