//go:build e2e

package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crid-dev/crid/internal/testutil/imagebuild"
	"github.com/crid-dev/crid/internal/testutil/registry"
)

// imageID is the ID crid must report for a pushed target: the config digest
// of the image, or of the host platform's image in an index.
func imageID(p *imagebuild.Pushed) string {
	if p.Image != nil {
		return p.Image.ConfigDigest.String()
	}
	for _, img := range p.Index.Images {
		if img.Platform.Architecture == hostArch() {
			return img.ConfigDigest.String()
		}
	}
	return ""
}

func builtImage(p *imagebuild.Pushed) *imagebuild.BuiltImage {
	if p.Image != nil {
		return p.Image
	}
	for _, img := range p.Index.Images {
		if img.Platform.Architecture == hostArch() {
			return img
		}
	}
	return nil
}

func imgStatus(t *testing.T, d *daemon, ref string) *runtime.ImageStatusResponse {
	t.Helper()
	resp, err := d.images().ImageStatus(context.Background(), &runtime.ImageStatusRequest{
		Image: &runtime.ImageSpec{Image: ref}, Verbose: true})
	require.NoError(t, err)
	return resp
}

type verboseInfo struct {
	ChainID string `json:"chainID"`
	Layers  []struct {
		ChainID string `json:"chainID"`
		DiffID  string `json:"diffID"`
		Size    int64  `json:"size"`
	} `json:"layers"`
}

func TestImageLifecycleWithCrictl(t *testing.T) {
	reg, pushed := pushSet(t, []string{"basic"})
	d := startDaemon(t)

	for _, ref := range []string{"crid-test/busybox:latest", "crid-test/busybox-oci:latest",
		"crid-test/multiarch:latest", "crid-test/multiarch-docker:latest", "crid-test/layered:latest"} {
		t.Run("pull "+ref, func(t *testing.T) {
			p := pushed[ref]
			full := reg.Addr() + "/" + ref
			out := d.mustCrictl(t, "pull", full)
			require.Contains(t, out, imageID(p), "crictl pull reports the image ID (the config digest)")

			st := imgStatus(t, d, full)
			require.NotNil(t, st.GetImage())
			require.Equal(t, imageID(p), st.GetImage().GetId())
			require.Contains(t, st.GetImage().GetRepoTags(), full)
			require.Contains(t, st.GetImage().GetRepoDigests(), reg.Addr()+"/"+strings.Split(ref, ":")[0]+"@"+p.Digest.String())
			require.Positive(t, st.GetImage().GetSize())

			var info verboseInfo
			require.NoError(t, json.Unmarshal([]byte(st.GetInfo()["info"]), &info))
			bi := builtImage(p)
			chain := bi.ChainIDs()
			require.Equal(t, chain[len(chain)-1].String(), info.ChainID)
			require.Len(t, info.Layers, len(bi.Layers))
			for i, l := range bi.Layers {
				require.Equal(t, l.DiffID.String(), info.Layers[i].DiffID, "layer %d", i)
				require.Equal(t, chain[i].String(), info.Layers[i].ChainID, "layer %d", i)
			}
		})
	}

	t.Run("images lists every tag", func(t *testing.T) {
		var list struct {
			Images []struct {
				ID       string   `json:"id"`
				RepoTags []string `json:"repoTags"`
			} `json:"images"`
		}
		require.NoError(t, json.Unmarshal([]byte(d.mustCrictl(t, "images", "-o", "json")), &list))
		tags := map[string]string{}
		for _, img := range list.Images {
			for _, tag := range img.RepoTags {
				tags[tag] = img.ID
			}
		}
		for ref, p := range pushed {
			require.Equal(t, imageID(p), tags[reg.Addr()+"/"+ref], ref)
		}
	})

	t.Run("pull by digest and by tag@digest", func(t *testing.T) {
		p := pushed["crid-test/busybox:latest"]
		byDigest := reg.Addr() + "/crid-test/busybox@" + p.Digest.String()
		require.Contains(t, d.mustCrictl(t, "pull", byDigest), imageID(p))
		both := reg.Addr() + "/crid-test/busybox:latest@" + p.Digest.String()
		require.Contains(t, d.mustCrictl(t, "pull", both), imageID(p))
		require.Equal(t, imageID(p), imgStatus(t, d, byDigest).GetImage().GetId())
	})

	t.Run("imagefsinfo reports usage", func(t *testing.T) {
		var fsinfo struct {
			Status struct {
				ImageFilesystems []struct {
					UsedBytes  struct{ Value string }      `json:"usedBytes"`
					InodesUsed struct{ Value string }      `json:"inodesUsed"`
					FsID       struct{ Mountpoint string } `json:"fsId"`
				} `json:"imageFilesystems"`
			} `json:"status"`
		}
		require.NoError(t, json.Unmarshal([]byte(d.mustCrictl(t, "imagefsinfo", "-o", "json")), &fsinfo))
		require.Len(t, fsinfo.Status.ImageFilesystems, 1)
		fs := fsinfo.Status.ImageFilesystems[0]
		require.NotEqual(t, "", fs.UsedBytes.Value)
		require.NotEqual(t, "0", fs.UsedBytes.Value)
		require.NotEqual(t, "0", fs.InodesUsed.Value)
		require.True(t, strings.HasPrefix(fs.FsID.Mountpoint, d.root), fs.FsID.Mountpoint)
	})

	t.Run("rmi removes all tags and keeps shared layers", func(t *testing.T) {
		bb := pushed["crid-test/busybox:latest"]
		full := reg.Addr() + "/crid-test/busybox:latest"
		d.mustCrictl(t, "rmi", full)
		require.Nil(t, imgStatus(t, d, full).GetImage())
		require.Nil(t, imgStatus(t, d, reg.Addr()+"/crid-test/busybox@"+bb.Digest.String()).GetImage(),
			"the digest reference goes with the image")
		require.Nil(t, imgStatus(t, d, imageID(bb)).GetImage())

		// layered shares busybox's base layer: it must still be whole.
		layered := imgStatus(t, d, reg.Addr()+"/crid-test/layered:latest")
		require.NotNil(t, layered.GetImage())

		_, err := d.images().RemoveImage(context.Background(), &runtime.RemoveImageRequest{
			Image: &runtime.ImageSpec{Image: full}})
		require.NoError(t, err, "removing a removed image succeeds")
	})

	t.Run("a store survives a restart", func(t *testing.T) {
		d.restart(t)
		p := pushed["crid-test/layered:latest"]
		st := imgStatus(t, d, reg.Addr()+"/crid-test/layered:latest")
		require.NotNil(t, st.GetImage())
		require.Equal(t, imageID(p), st.GetImage().GetId())
	})
}

func TestPullErrors(t *testing.T) {
	reg, _ := pushSet(t, []string{"basic"})
	d := startDaemon(t)
	ctx := context.Background()

	for _, tc := range []struct {
		desc, ref string
		want      codes.Code
	}{
		{"unknown tag", reg.Addr() + "/crid-test/busybox:nope", codes.NotFound},
		{"unknown repository", reg.Addr() + "/crid-test/nothing:latest", codes.NotFound},
		{"malformed reference", "UPPER/Case:bad tag", codes.InvalidArgument},
		{"empty reference", "", codes.InvalidArgument},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			_, err := d.images().PullImage(ctx, &runtime.PullImageRequest{Image: &runtime.ImageSpec{Image: tc.ref}})
			require.Error(t, err)
			require.Equal(t, tc.want, status.Code(err), err.Error())
		})
	}
	t.Run("unknown registry is unavailable, not a hang", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		_, err := d.images().PullImage(ctx, &runtime.PullImageRequest{Image: &runtime.ImageSpec{Image: "127.0.0.1:1/x/y:z"}})
		require.Error(t, err)
		require.NotEqual(t, codes.DeadlineExceeded, status.Code(err), err.Error())
	})
}

func TestPullWithCredentials(t *testing.T) {
	reg, pushed := pushSet(t, []string{"basic"}, registry.WithBasicAuth("alice", "s3cret"))
	d := startDaemon(t)
	ctx := context.Background()
	ref := reg.Addr() + "/crid-test/busybox:latest"
	want := imageID(pushed["crid-test/busybox:latest"])

	_, err := d.images().PullImage(ctx, &runtime.PullImageRequest{Image: &runtime.ImageSpec{Image: ref}})
	require.Equal(t, codes.Unauthenticated, status.Code(err), "anonymous pull: %v", err)

	_, err = d.images().PullImage(ctx, &runtime.PullImageRequest{Image: &runtime.ImageSpec{Image: ref},
		Auth: &runtime.AuthConfig{Username: "alice", Password: "wrong"}})
	require.Equal(t, codes.Unauthenticated, status.Code(err), "wrong password: %v", err)

	out := d.mustCrictl(t, "pull", "--creds", "alice:s3cret", ref)
	require.Contains(t, out, want)

	d.mustCrictl(t, "rmi", ref)
	resp, err := d.images().PullImage(ctx, &runtime.PullImageRequest{Image: &runtime.ImageSpec{Image: ref},
		Auth: &runtime.AuthConfig{Auth: base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))}})
	require.NoError(t, err)
	require.Equal(t, want, resp.GetImageRef())
}

func TestMirrorsFromHostsToml(t *testing.T) {
	// The image's name is that of an "upstream" registry that has nothing;
	// hosts.toml sends pulls first to a dead mirror, then to the mirror that
	// has the image. The upstream server is a local registry too, so no
	// request ever leaves this machine.
	upstream := registry.Start(t)
	mirror, pushed := pushSet(t, []string{"basic"})
	d := startDaemon(t)
	d.writeHosts(t, upstream.Addr(), `server = "http://`+upstream.Addr()+`"

[host."http://127.0.0.1:1"]
  capabilities = ["pull", "resolve"]

[host."http://`+mirror.Addr()+`"]
  capabilities = ["pull", "resolve"]
`)
	ref := upstream.Addr() + "/crid-test/layered:latest"
	out := d.mustCrictl(t, "pull", ref)
	require.Contains(t, out, imageID(pushed["crid-test/layered:latest"]))
	st := imgStatus(t, d, ref)
	require.Contains(t, st.GetImage().GetRepoTags(), ref, "the image keeps the name it was pulled by")

	t.Run("falls back to the upstream when mirrors lack the image", func(t *testing.T) {
		up := pushTo(t, upstream, "basic")
		d.writeHosts(t, upstream.Addr(), `server = "http://`+upstream.Addr()+`"

[host."http://`+registry.Start(t).Addr()+`"]
  capabilities = ["pull", "resolve"]
`)
		ref := upstream.Addr() + "/crid-test/busybox-oci:latest"
		require.Contains(t, d.mustCrictl(t, "pull", ref), imageID(up["crid-test/busybox-oci:latest"]))
	})
}

func TestDaemonBasics(t *testing.T) {
	d := startDaemon(t)

	fi, err := os.Stat(d.sock)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "socket mode")
	fi, err = os.Stat(d.root)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), fi.Mode().Perm(), "root mode")
	fi, err = os.Stat(d.state)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o711), fi.Mode().Perm(), "state mode")

	out := d.mustCrictl(t, "version")
	require.Contains(t, out, "RuntimeName:  crid")
	out = d.mustCrictl(t, "info")
	require.Contains(t, out, "RuntimeReady")

	t.Run("a second daemon on the same root refuses to start", func(t *testing.T) {
		other := filepath.Join(t.TempDir(), "other.sock")
		out, err := runCrid("--config", d.config, "--root", d.root, "--state", t.TempDir(), "--listen", other)
		require.Error(t, err)
		require.Contains(t, out, "in use by another crid")
	})
	t.Run("a second daemon on the same socket refuses to start", func(t *testing.T) {
		out, err := runCrid("--config", d.config, "--root", t.TempDir(), "--state", t.TempDir(), "--listen", d.sock)
		require.Error(t, err)
		require.Contains(t, out, "another process is serving")
	})
	t.Run("a bad config is a clear error", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "config.toml")
		require.NoError(t, os.WriteFile(bad, []byte("[image]\nsnapshotter = 'zfs'\n"), 0o644))
		out, err := runCrid("--config", bad, "--root", t.TempDir())
		require.Error(t, err)
		require.Contains(t, out, "image.snapshotter")
	})
	t.Run("config default prints the full default", func(t *testing.T) {
		out, err := runCrid("config", "default")
		require.NoError(t, err)
		for _, k := range []string{"root = '/var/lib/crid'", "listen = '/run/crid/crid.sock'", "[image]", "max_concurrent_downloads = 6"} {
			require.Contains(t, out, k)
		}
	})
	t.Run("SIGTERM stops it cleanly and removes the socket", func(t *testing.T) {
		d.stop(t)
		_, err := os.Stat(d.sock)
		require.True(t, os.IsNotExist(err), "socket left behind: %v", err)
		d.start(t)
	})
}

func runCrid(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := execCombined(ctx, cridBin, args...)
	return out, err
}
