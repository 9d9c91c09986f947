package imagebuild

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/require"

	"github.com/crid-dev/crid/internal/testutil/registry"
)

// Credentials of the registries started with basic auth.
const (
	testUser     = "crid"
	testPassword = "crid-test-password"
)

// startRegistry runs the real Distribution server for one test and returns
// its host:port.
func startRegistry(t *testing.T, auth bool) string {
	t.Helper()
	var opts []registry.Option
	if auth {
		opts = append(opts, registry.WithBasicAuth(testUser, testPassword))
	}
	return registry.Start(t, opts...).Addr()
}

// puller reads back from a registry with plain net/http, independently of
// Pusher.
type puller struct {
	t          *testing.T
	base       string
	user, pass string
}

var acceptAll = strings.Join([]string{
	ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex,
	MediaTypeDockerManifest, MediaTypeDockerManifestList,
}, ", ")

func (p puller) get(method, path string) *http.Response {
	p.t.Helper()
	req, err := http.NewRequestWithContext(p.t.Context(), method, p.base+path, nil)
	require.NoError(p.t, err)
	req.Header.Set("Accept", acceptAll)
	if p.user != "" {
		req.SetBasicAuth(p.user, p.pass)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(p.t, err)
	p.t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// manifest fetches repo:ref and checks it is exactly what was built.
func (p puller) manifest(repo, ref, mediaType string, d digest.Digest, want []byte) {
	p.t.Helper()
	resp := p.get(http.MethodGet, "/v2/"+repo+"/manifests/"+ref)
	body, err := io.ReadAll(resp.Body)
	require.NoError(p.t, err)
	require.Equal(p.t, http.StatusOK, resp.StatusCode, "GET %s:%s: %s", repo, ref, body)
	require.Equal(p.t, mediaType, resp.Header.Get("Content-Type"))
	require.Equal(p.t, d.String(), resp.Header.Get("Docker-Content-Digest"))
	require.Equal(p.t, d, digest.FromBytes(body))
	require.Equal(p.t, string(want), string(body))
}

// blob fetches a blob and checks its digest and size.
func (p puller) blob(repo string, d digest.Digest, size int64) []byte {
	p.t.Helper()
	resp := p.get(http.MethodGet, "/v2/"+repo+"/blobs/"+d.String())
	require.Equal(p.t, http.StatusOK, resp.StatusCode, "GET blob %s", d)
	body, err := io.ReadAll(resp.Body)
	require.NoError(p.t, err)
	require.EqualValues(p.t, size, len(body))
	require.Equal(p.t, d, digest.FromBytes(body))
	return body
}

func (p puller) image(repo, ref string, img *BuiltImage) {
	p.t.Helper()
	p.manifest(repo, ref, img.MediaType, img.Digest, img.Manifest)
	require.Equal(p.t, string(img.Config), string(p.blob(repo, img.ConfigDigest, int64(len(img.Config)))))
	var m ocispec.Manifest
	require.NoError(p.t, json.Unmarshal(img.Manifest, &m))
	require.Len(p.t, m.Layers, len(img.Layers))
	for _, l := range m.Layers {
		p.blob(repo, l.Digest, l.Size)
	}
}

func TestPushAndPullBack(t *testing.T) {
	addr := startRegistry(t, false)
	b, err := NewBuilder(t.TempDir())
	require.NoError(t, err)
	p, err := NewPusher(addr)
	require.NoError(t, err)
	pull := puller{t: t, base: "http://" + addr}

	targets, err := Set("basic")
	require.NoError(t, err)
	for _, tg := range targets {
		t.Run(tg.Repo, func(t *testing.T) {
			pull.t = t
			pushed, err := BuildAndPush(t.Context(), b, p, tg)
			require.NoError(t, err)
			require.Equal(t, addr+"/"+tg.Repo+":latest", pushed.Ref)
			if pushed.Image != nil {
				pull.image(tg.Repo, "latest", pushed.Image)
				return
			}
			idx := pushed.Index
			pull.manifest(tg.Repo, "latest", idx.MediaType, idx.Digest, idx.Manifest)
			for _, img := range idx.Images {
				pull.image(tg.Repo, img.Digest.String(), img)
			}
		})
	}
	pull.t = t

	// The expected shapes of the basic set.
	byRepo := map[string]Target{}
	for _, tg := range targets {
		byRepo[tg.Repo] = tg
	}
	bb, err := b.Build(t.Context(), *byRepo["crid-test/busybox"].Image)
	require.NoError(t, err)
	require.Equal(t, MediaTypeDockerManifest, bb.MediaType)
	require.Equal(t, MediaTypeDockerLayerGzip, bb.Layers[0].MediaType)
	oci, err := b.Build(t.Context(), *byRepo["crid-test/busybox-oci"].Image)
	require.NoError(t, err)
	require.Equal(t, ocispec.MediaTypeImageManifest, oci.MediaType)
	require.Equal(t, ocispec.MediaTypeImageLayerZstd, oci.Layers[0].MediaType)
	require.Equal(t, bb.Layers[0].DiffID, oci.Layers[0].DiffID, "same files, other compression")
	layered, err := b.Build(t.Context(), *byRepo["crid-test/layered"].Image)
	require.NoError(t, err)
	require.Len(t, layered.Layers, 4)
	require.Equal(t, bb.Layers[0].DiffID, layered.Layers[0].DiffID)
	require.Equal(t, ocispec.MediaTypeImageLayer, layered.Layers[3].MediaType)
	hdrs, _ := readLayer(t, layered.Layers[2])
	require.Equal(t, []string{"data/", "data/.wh.a", "data/dir/", "data/dir/.wh..wh..opq", "data/dir/z"}, names(hdrs))
	multi, err := b.BuildIndex(t.Context(), *byRepo["crid-test/multiarch"].Index)
	require.NoError(t, err)
	require.Equal(t, ocispec.MediaTypeImageIndex, multi.MediaType)
	require.Len(t, multi.Images, 2)
	_, bodies := readLayer(t, multi.Images[1].Layers[0])
	require.Equal(t, multi.Images[1].Platform.String()+"\n", bodies[strings.TrimPrefix(ArchMarkerPath, "/")])
	docker, err := b.BuildIndex(t.Context(), *byRepo["crid-test/multiarch-docker"].Index)
	require.NoError(t, err)
	require.Equal(t, MediaTypeDockerManifestList, docker.MediaType)

	// Pushing again finds every blob and rewrites the same manifests.
	for _, tg := range targets {
		_, err := BuildAndPush(t.Context(), b, p, tg)
		require.NoError(t, err)
	}
	resp := pull.get(http.MethodGet, "/v2/crid-test/layered/tags/list")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var tags struct{ Tags []string }
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&tags))
	require.Equal(t, []string{"latest"}, tags.Tags)

	// An image pushed without a tag is reachable by digest only.
	require.NoError(t, p.PushImage(t.Context(), "crid-test/untagged", "", layered))
	pull.image("crid-test/untagged", layered.Digest.String(), layered)
	resp = pull.get(http.MethodGet, "/v2/crid-test/untagged/manifests/latest")
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
}

// recorder records the method and path (with the mount query) of requests.
type recorder struct {
	mu   sync.Mutex
	reqs []string
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	line := req.Method + " " + req.URL.Path
	if m := req.URL.Query().Get("mount"); m != "" {
		line += " mount=" + m + " from=" + req.URL.Query().Get("from")
	}
	r.reqs = append(r.reqs, line)
	r.mu.Unlock()
	return http.DefaultTransport.RoundTrip(req)
}

func TestPushMountsBlobsAcrossRepos(t *testing.T) {
	addr := startRegistry(t, false)
	b, err := NewBuilder(t.TempDir())
	require.NoError(t, err)
	rec := &recorder{}
	p, err := NewPusher(addr, WithHTTPClient(&http.Client{Transport: rec}))
	require.NoError(t, err)
	img, err := b.Build(t.Context(), Image{Layers: []Layer{{Entries: []Entry{File("f", "f", 0o644)}}}})
	require.NoError(t, err)

	require.NoError(t, p.PushImage(t.Context(), "one", "v1", img))
	rec.reqs = nil
	require.NoError(t, p.PushImage(t.Context(), "two", "v1", img))
	layer := img.Layers[0].Digest.String()
	require.Contains(t, rec.reqs, "POST /v2/two/blobs/uploads/ mount="+layer+" from=one")
	for _, r := range rec.reqs {
		require.False(t, strings.HasPrefix(r, "PUT /v2/two/blobs/uploads/"), "uploaded after mount: %s", r)
	}
	puller{t: t, base: "http://" + addr}.image("two", "v1", img)
}

func TestPushBasicAuth(t *testing.T) {
	addr := startRegistry(t, true)
	b, err := NewBuilder(t.TempDir())
	require.NoError(t, err)
	img, err := b.Build(t.Context(), Image{MediaTypes: Docker, Layers: []Layer{{Entries: []Entry{File("f", "f", 0o644)}}}})
	require.NoError(t, err)

	for _, tc := range []struct {
		desc string
		opts []PushOption
	}{
		{desc: "no credentials"},
		{desc: "wrong password", opts: []PushOption{WithBasicAuth(testUser, "wrong")}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			p, err := NewPusher(addr, tc.opts...)
			require.NoError(t, err)
			err = p.PushImage(t.Context(), "private/img", "v1", img)
			var re *ResponseError
			require.ErrorAs(t, err, &re)
			require.Equal(t, http.StatusUnauthorized, re.StatusCode)
		})
	}

	p, err := NewPusher("http://"+addr, WithBasicAuth(testUser, testPassword))
	require.NoError(t, err)
	require.NoError(t, p.PushImage(t.Context(), "private/img", "v1", img))
	puller{t: t, base: "http://" + addr, user: testUser, pass: testPassword}.image("private/img", "v1", img)
	resp := puller{t: t, base: "http://" + addr}.get(http.MethodGet, "/v2/private/img/manifests/v1")
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
}

func TestNewPusherAddress(t *testing.T) {
	for _, tc := range []struct {
		desc, addr, host, err string
	}{
		{desc: "host:port", addr: "127.0.0.1:5000", host: "127.0.0.1:5000"},
		{desc: "http URL", addr: "http://127.0.0.1:5000/", host: "127.0.0.1:5000"},
		{desc: "https URL", addr: "https://127.0.0.1:5443", host: "127.0.0.1:5443"},
		{desc: "path", addr: "http://127.0.0.1:5000/v2", err: "want host:port"},
		{desc: "scheme", addr: "ftp://127.0.0.1", err: "want host:port"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			p, err := NewPusher(tc.addr)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.host, p.Host())
		})
	}
}
