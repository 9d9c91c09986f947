package registry_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/require"

	"github.com/crid-dev/crid/imagestore"
	"github.com/crid-dev/crid/imagestore/registry"
	regtest "github.com/crid-dev/crid/internal/testutil/registry"
)

// pusher uploads with the plain distribution API: a monolithic blob upload
// (POST, then PUT ?digest=) and a manifest PUT.
type pusher struct {
	t          *testing.T
	base       string
	user, pass string
}

func (p pusher) do(method, u, contentType string, body []byte, want int) *http.Response {
	p.t.Helper()
	req, err := http.NewRequestWithContext(p.t.Context(), method, u, bytes.NewReader(body))
	require.NoError(p.t, err)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if p.user != "" {
		req.SetBasicAuth(p.user, p.pass)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(p.t, err)
	msg, _ := io.ReadAll(resp.Body)
	require.NoError(p.t, resp.Body.Close())
	require.Equal(p.t, want, resp.StatusCode, "%s %s: %s", method, u, msg)
	return resp
}

func (p pusher) blob(repo, mediaType string, data []byte) ocispec.Descriptor {
	p.t.Helper()
	d := digest.FromBytes(data)
	resp := p.do(http.MethodPost, p.base+"/v2/"+repo+"/blobs/uploads/", "", nil, http.StatusAccepted)
	loc, err := resp.Location()
	require.NoError(p.t, err)
	q := loc.Query()
	q.Set("digest", d.String())
	loc.RawQuery = q.Encode()
	p.do(http.MethodPut, loc.String(), "application/octet-stream", data, http.StatusCreated)
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(data))}
}

func (p pusher) manifest(repo, tag, mediaType string, data []byte) ocispec.Descriptor {
	p.t.Helper()
	p.do(http.MethodPut, p.base+"/v2/"+repo+"/manifests/"+url.PathEscape(tag), mediaType, data, http.StatusCreated)
	return ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}
}

// tinyImage is what the test pushes: a config, one uncompressed layer and
// the manifest naming them.
type tinyImage struct {
	manifest      ocispec.Descriptor
	config, layer ocispec.Descriptor
	content       map[digest.Digest][]byte
}

func pushTinyImage(t *testing.T, p pusher, repo, tag string) tinyImage {
	t.Helper()
	layer := []byte("not really a tar, the registry does not care")
	config, err := json.Marshal(ocispec.Image{
		Platform: ocispec.Platform{Architecture: "amd64", OS: "linux"},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{digest.FromBytes(layer)}},
	})
	require.NoError(t, err)
	img := tinyImage{content: map[digest.Digest][]byte{}}
	img.config = p.blob(repo, ocispec.MediaTypeImageConfig, config)
	img.layer = p.blob(repo, ocispec.MediaTypeImageLayer, layer)
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: img.config, Layers: []ocispec.Descriptor{img.layer}}
	m.SchemaVersion = 2
	raw, err := json.Marshal(m)
	require.NoError(t, err)
	img.manifest = p.manifest(repo, tag, ocispec.MediaTypeImageManifest, raw)
	img.content[img.config.Digest] = config
	img.content[img.layer.Digest] = layer
	img.content[img.manifest.Digest] = raw
	return img
}

func fetchAll(ctx context.Context, t *testing.T, f registry.Fetcher, desc ocispec.Descriptor) []byte {
	t.Helper()
	rc, err := f.Fetch(ctx, desc)
	require.NoError(t, err)
	defer rc.Close()
	b, err := io.ReadAll(rc)
	require.NoError(t, err)
	return b
}

func newResolver(t *testing.T) *registry.Resolver {
	t.Helper()
	r, err := registry.NewResolver(registry.Options{ConfigPath: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(r.CloseIdleConnections)
	return r
}

var _ imagestore.Resolver = (*registry.Resolver)(nil)

// checkPull resolves ref and fetches every part of img through the
// resolver.
func checkPull(t *testing.T, r *registry.Resolver, ref string, creds *registry.Credentials, img tinyImage) {
	t.Helper()
	ctx := t.Context()
	named, err := reference.ParseNormalizedNamed(ref)
	require.NoError(t, err)
	desc, f, err := r.Resolve(ctx, named, creds)
	require.NoError(t, err)
	require.Equal(t, img.manifest, desc)
	for _, d := range []ocispec.Descriptor{img.manifest, img.config, img.layer} {
		require.Equal(t, img.content[d.Digest], fetchAll(ctx, t, f, d), "content of %s", d.Digest)
	}
}

func TestDistributionAnonymous(t *testing.T) {
	reg := regtest.Start(t)
	img := pushTinyImage(t, pusher{t: t, base: reg.URL()}, "crid/tiny", "v1")
	r := newResolver(t)

	checkPull(t, r, reg.Addr()+"/crid/tiny:v1", nil, img)
	checkPull(t, r, reg.Addr()+"/crid/tiny@"+img.manifest.Digest.String(), nil, img)

	ref, err := reference.ParseNormalizedNamed(reg.Addr() + "/crid/tiny:missing")
	require.NoError(t, err)
	_, _, err = r.Resolve(t.Context(), ref, nil)
	require.ErrorIs(t, err, errdefs.ErrNotFound)

	ref, err = reference.ParseNormalizedNamed(reg.Addr() + "/crid/absent:v1")
	require.NoError(t, err)
	_, _, err = r.Resolve(t.Context(), ref, nil)
	require.ErrorIs(t, err, errdefs.ErrNotFound)
}

func TestDistributionBasicAuth(t *testing.T) {
	reg := regtest.Start(t, regtest.WithBasicAuth("crid", "pa55word"))
	user, pass := reg.Credentials()
	img := pushTinyImage(t, pusher{t: t, base: reg.URL(), user: user, pass: pass}, "crid/private", "v1")
	r := newResolver(t)
	ref := reg.Addr() + "/crid/private:v1"

	checkPull(t, r, ref, &registry.Credentials{Username: "crid", Password: "pa55word"}, img)
	checkPull(t, r, ref, &registry.Credentials{Auth: base64.StdEncoding.EncodeToString([]byte("crid:pa55word"))}, img)
	checkPull(t, r, ref, &registry.Credentials{Username: "crid", Password: "pa55word", ServerAddress: reg.Addr()}, img)

	named, err := reference.ParseNormalizedNamed(ref)
	require.NoError(t, err)
	for _, tc := range []struct {
		desc  string
		creds *registry.Credentials
	}{
		{desc: "anonymous"},
		{desc: "wrong password", creds: &registry.Credentials{Username: "crid", Password: "wrong"}},
		{desc: "unknown user", creds: &registry.Credentials{Username: "mallory", Password: "pa55word"}},
		{desc: "credentials for another registry", creds: &registry.Credentials{Username: "crid", Password: "pa55word", ServerAddress: "other.example"}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			_, _, err := newResolver(t).Resolve(t.Context(), named, tc.creds)
			require.ErrorIs(t, err, errdefs.ErrUnauthenticated)
			require.NotContains(t, err.Error(), "pa55word")
		})
	}
}
