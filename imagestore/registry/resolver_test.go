package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/require"
)

func readAll(t *testing.T, rc io.ReadCloser) []byte {
	t.Helper()
	defer rc.Close()
	b, err := io.ReadAll(rc)
	require.NoError(t, err)
	return b
}

func TestResolveTagAndDigest(t *testing.T) {
	f := newFakeRegistry(t)
	img := newTestImage(t)
	want := img.serve(f, "library/app", "1.0")
	r, _ := newTestResolver(t)
	ctx := t.Context()

	for _, tc := range []struct {
		desc     string
		ref      string
		wantPath string
	}{
		{desc: "tag", ref: f.host() + "/library/app:1.0", wantPath: "/v2/library/app/manifests/1.0"},
		{desc: "digest", ref: f.host() + "/library/app@" + want.Digest.String(), wantPath: "/v2/library/app/manifests/" + want.Digest.String()},
		{desc: "tag and digest: digest wins", ref: f.host() + "/library/app:nope@" + want.Digest.String(), wantPath: "/v2/library/app/manifests/" + want.Digest.String()},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			f.reset()
			desc, fetcher, err := r.Resolve(ctx, mustRef(t, tc.ref), nil)
			require.NoError(t, err)
			require.Equal(t, want, desc)
			reqs := f.seen()
			require.Len(t, reqs, 1, "HEAD with digest and size is enough")
			require.Equal(t, http.MethodHead, reqs[0].Method)
			require.Equal(t, tc.wantPath, reqs[0].Path)
			require.Empty(t, reqs[0].Query, "the registry's own host gets no ns parameter")
			require.Equal(t, "crid-test", reqs[0].Header.Get("User-Agent"))
			accept := strings.Join(reqs[0].Accept, ",")
			for _, mt := range []string{ocispec.MediaTypeImageIndex, ocispec.MediaTypeImageManifest, MediaTypeDockerManifestList, MediaTypeDockerManifest} {
				require.Contains(t, accept, mt)
			}
			require.NotContains(t, accept, "distribution.manifest.v1")

			require.Equal(t, img.manifest, readAll(t, must(fetcher.Fetch(ctx, desc))))
		})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestResolveMediaTypes(t *testing.T) {
	index := []byte(`{"schemaVersion":2,"manifests":[]}`)
	manifest := []byte(`{"schemaVersion":2,"config":{},"layers":[]}`)
	for _, tc := range []struct {
		desc      string
		mediaType string
		body      []byte
		setup     func(f *fakeRegistry)
		wantType  string
		wantGET   bool
		wantErr   error
	}{
		{desc: "oci index", mediaType: ocispec.MediaTypeImageIndex, body: index, wantType: ocispec.MediaTypeImageIndex},
		{desc: "oci manifest", mediaType: ocispec.MediaTypeImageManifest, body: manifest, wantType: ocispec.MediaTypeImageManifest},
		{desc: "docker list", mediaType: MediaTypeDockerManifestList, body: index, wantType: MediaTypeDockerManifestList},
		{desc: "docker manifest", mediaType: MediaTypeDockerManifest, body: manifest, wantType: MediaTypeDockerManifest},
		{
			desc: "content type parameters dropped", mediaType: MediaTypeDockerManifest, body: manifest,
			setup:    func(f *fakeRegistry) { f.contentType = MediaTypeDockerManifest + "; charset=utf-8" },
			wantType: MediaTypeDockerManifest,
		},
		{
			desc: "generic content type: sniffed from the body", mediaType: ocispec.MediaTypeImageIndex,
			body:     []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`),
			setup:    func(f *fakeRegistry) { f.contentType = "application/json" },
			wantType: ocispec.MediaTypeImageIndex, wantGET: true,
		},
		{
			desc: "no content type, no mediaType field: manifests make an index", body: index,
			setup:    func(f *fakeRegistry) { f.contentType = "text/plain" },
			wantType: ocispec.MediaTypeImageIndex, wantGET: true,
		},
		{
			desc: "no digest header: computed from the body", mediaType: ocispec.MediaTypeImageManifest, body: manifest,
			setup:    func(f *fakeRegistry) { f.noDigestHeader = true },
			wantType: ocispec.MediaTypeImageManifest, wantGET: true,
		},
		{
			desc: "HEAD not allowed: GET", mediaType: ocispec.MediaTypeImageManifest, body: manifest,
			setup:    func(f *fakeRegistry) { f.noHead = true },
			wantType: ocispec.MediaTypeImageManifest, wantGET: true,
		},
		{
			desc: "schema 1 refused", mediaType: "application/vnd.docker.distribution.manifest.v1+prettyjws",
			body: []byte(`{"schemaVersion":1,"fsLayers":[]}`), wantErr: errdefs.ErrNotImplemented,
		},
		{
			desc: "schema 1 sniffed and refused", body: []byte(`{"schemaVersion":1,"fsLayers":[]}`),
			setup: func(f *fakeRegistry) { f.contentType = "application/json" }, wantErr: errdefs.ErrNotImplemented,
		},
		{
			desc: "unknown media type refused", mediaType: "application/vnd.example.thing+json", body: manifest,
			wantErr: errdefs.ErrNotImplemented,
		},
		{
			desc: "digest header contradicting the body", mediaType: ocispec.MediaTypeImageManifest, body: manifest,
			setup:   func(f *fakeRegistry) { f.wrongDigest = true; f.noHead = true },
			wantErr: errdefs.ErrDataLoss,
		},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			f := newFakeRegistry(t)
			want := f.addManifest("app", "v1", tc.mediaType, tc.body)
			if tc.setup != nil {
				f.set(tc.setup)
			}
			r, _ := newTestResolver(t)
			desc, fetcher, err := r.Resolve(t.Context(), mustRef(t, f.host()+"/app:v1"), nil)
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.wantType, desc.MediaType)
			require.Equal(t, want.Digest, desc.Digest)
			require.Equal(t, want.Size, desc.Size)
			methods := []string{}
			for _, s := range f.seen() {
				methods = append(methods, s.Method)
			}
			require.Equal(t, tc.wantGET, strings.Contains(strings.Join(methods, ","), http.MethodGet), methods)

			// The body read while resolving is handed out without a
			// second download.
			f.reset()
			require.Equal(t, tc.body, readAll(t, must(fetcher.Fetch(t.Context(), desc))))
			if tc.wantGET {
				require.Empty(t, f.seen())
			}
		})
	}
}

func TestFetch(t *testing.T) {
	f := newFakeRegistry(t)
	img := newTestImage(t)
	mdesc := img.serve(f, "team/app", "v1")
	index := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`)
	idesc := f.addManifest("team/app", "", ocispec.MediaTypeImageIndex, index)
	r, _ := newTestResolver(t)
	ctx := t.Context()
	_, fetcher, err := r.Resolve(ctx, mustRef(t, f.host()+"/team/app:v1"), nil)
	require.NoError(t, err)

	t.Run("manifest and index from /manifests/", func(t *testing.T) {
		f.reset()
		require.Equal(t, img.manifest, readAll(t, must(fetcher.Fetch(ctx, mdesc))))
		require.Equal(t, index, readAll(t, must(fetcher.Fetch(ctx, idesc))))
		reqs := f.seen()
		require.Len(t, reqs, 2)
		require.Equal(t, "/v2/team/app/manifests/"+mdesc.Digest.String(), reqs[0].Path)
		require.Len(t, reqs[0].Accept, 1, "one Accept header")
		require.True(t, strings.HasPrefix(reqs[0].Accept[0], ocispec.MediaTypeImageManifest+", "), "own media type first")
		require.Equal(t, "/v2/team/app/manifests/"+idesc.Digest.String(), reqs[1].Path)
	})
	t.Run("config and layer from /blobs/", func(t *testing.T) {
		f.reset()
		cdesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(img.config), Size: int64(len(img.config))}
		ldesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(img.layer), Size: int64(len(img.layer))}
		require.Equal(t, img.config, readAll(t, must(fetcher.Fetch(ctx, cdesc))))
		require.Equal(t, img.layer, readAll(t, must(fetcher.Fetch(ctx, ldesc))))
		reqs := f.seen()
		require.Equal(t, "/v2/team/app/blobs/"+cdesc.Digest.String(), reqs[0].Path)
		require.Equal(t, "/v2/team/app/blobs/"+ldesc.Digest.String(), reqs[1].Path)
	})
	t.Run("unknown blob", func(t *testing.T) {
		_, err := fetcher.Fetch(ctx, ocispec.Descriptor{Digest: digest.FromString("nope"), Size: 4})
		require.ErrorIs(t, err, errdefs.ErrNotFound)
		var se *StatusError
		require.ErrorAs(t, err, &se)
		require.Equal(t, http.StatusNotFound, se.StatusCode)
		require.Equal(t, []string{"BLOB_UNKNOWN"}, se.Codes)
	})
	t.Run("size mismatch", func(t *testing.T) {
		_, err := fetcher.Fetch(ctx, ocispec.Descriptor{Digest: digest.FromBytes(img.layer), Size: 3})
		require.ErrorIs(t, err, errdefs.ErrDataLoss)
	})
	t.Run("invalid digest", func(t *testing.T) {
		_, err := fetcher.Fetch(ctx, ocispec.Descriptor{Digest: "sha256:nothex"})
		require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
	})
	t.Run("not found", func(t *testing.T) {
		_, _, err := r.Resolve(ctx, mustRef(t, f.host()+"/team/app:missing"), nil)
		require.ErrorIs(t, err, errdefs.ErrNotFound)
		require.Contains(t, err.Error(), "404 Not Found")
	})
}

func TestResolveRequiresTagOrDigest(t *testing.T) {
	r, _ := newTestResolver(t)
	_, _, err := r.Resolve(t.Context(), mustRef(t, "127.0.0.1:1/app"), nil)
	require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
}

func TestMirrorFallback(t *testing.T) {
	img := newTestImage(t)
	upstream := newFakeRegistry(t)
	want := img.serve(upstream, "library/app", "1")
	empty := newFakeRegistry(t) // a mirror that has nothing: 404
	down := closedAddr(t)
	r, dir := newTestResolver(t)
	registryHost := upstream.host()
	writeHostsToml(t, dir, registryHost, fmt.Sprintf(`
[host."http://%s"]
  capabilities = ["pull", "resolve"]
[host."http://%s"]
  capabilities = ["pull", "resolve"]
`, down, empty.host()))
	ctx, logs := captureLogs(t.Context())

	desc, fetcher, err := r.Resolve(ctx, mustRef(t, registryHost+"/library/app:1"), nil)
	require.NoError(t, err)
	require.Equal(t, want, desc)
	mreqs := empty.seen()
	require.Len(t, mreqs, 1)
	require.Equal(t, "/v2/library/app/manifests/1", mreqs[0].Path)
	require.Equal(t, url.Values{"ns": {registryHost}}.Encode(), mreqs[0].Query, "a mirror is told the registry")
	require.Len(t, upstream.seen(), 1)
	require.Contains(t, logs.String(), down, "a swallowed failure is logged")

	empty.reset()
	upstream.reset()
	layer := ocispec.Descriptor{Digest: digest.FromBytes(img.layer), Size: int64(len(img.layer))}
	require.Equal(t, img.layer, readAll(t, must(fetcher.Fetch(ctx, layer))))
	require.Len(t, empty.seen(), 1, "the mirror is asked first")
	require.Len(t, upstream.seen(), 1)

	t.Run("mirror has it: upstream untouched", func(t *testing.T) {
		img.serve(empty, "library/app", "1")
		empty.reset()
		upstream.reset()
		_, fetcher, err := r.Resolve(ctx, mustRef(t, registryHost+"/library/app:1"), nil)
		require.NoError(t, err)
		require.Equal(t, img.layer, readAll(t, must(fetcher.Fetch(ctx, layer))))
		require.Len(t, empty.seen(), 2)
		require.Empty(t, upstream.seen())
	})
}

func TestMirrorUnauthorizedFallsBack(t *testing.T) {
	img := newTestImage(t)
	upstream := newFakeRegistry(t)
	want := img.serve(upstream, "app", "1")
	mirror := newFakeRegistry(t)
	img.serve(mirror, "app", "1")
	mirror.set(func(f *fakeRegistry) { f.basicUser, f.basicPass = "m", "p" })
	r, dir := newTestResolver(t)
	writeHostsToml(t, dir, upstream.host(), fmt.Sprintf("[host.\"http://%s\"]\n", mirror.host()))

	desc, _, err := r.Resolve(t.Context(), mustRef(t, upstream.host()+"/app:1"), nil)
	require.NoError(t, err, "a 401 the credentials cannot answer moves on to the next host")
	require.Equal(t, want, desc)
	require.Len(t, mirror.seen(), 1)
}

func TestMirrorCapabilities(t *testing.T) {
	img := newTestImage(t)
	upstream := newFakeRegistry(t)
	want := img.serve(upstream, "app", "1")
	mirror := newFakeRegistry(t)
	img.serve(mirror, "app", "1")
	r, dir := newTestResolver(t)
	writeHostsToml(t, dir, upstream.host(), fmt.Sprintf(`
server = "http://%s"
[host."http://%s"]
  capabilities = ["pull"]
`, upstream.host(), mirror.host()))
	ctx := t.Context()

	_, fetcher, err := r.Resolve(ctx, mustRef(t, upstream.host()+"/app:1"), nil)
	require.NoError(t, err)
	require.Empty(t, mirror.seen(), "a pull-only mirror does not resolve tags")
	require.Len(t, upstream.seen(), 1)

	upstream.reset()
	readAll(t, must(fetcher.Fetch(ctx, ocispec.Descriptor{Digest: digest.FromBytes(img.layer)})))
	require.Len(t, mirror.seen(), 1, "but serves blobs")
	require.Empty(t, upstream.seen())

	mirror.reset()
	_, _, err = r.Resolve(ctx, mustRef(t, upstream.host()+"/app@"+want.Digest.String()), nil)
	require.NoError(t, err)
	require.Len(t, mirror.seen(), 1, "and digests")
	require.Empty(t, upstream.seen())

	t.Run("no host may resolve", func(t *testing.T) {
		writeHostsToml(t, dir, upstream.host(), fmt.Sprintf(`
server = "http://%s"
capabilities = ["pull"]
`, upstream.host()))
		_, _, err := r.Resolve(ctx, mustRef(t, upstream.host()+"/app:1"), nil)
		require.ErrorIs(t, err, errdefs.ErrNotFound)
		require.Contains(t, err.Error(), "resolve capability")
	})
}

func TestAllHostsFail(t *testing.T) {
	empty := newFakeRegistry(t)
	down := closedAddr(t)
	for _, tc := range []struct {
		desc      string
		mirror    string
		upstream  string
		wantClass error
	}{
		{desc: "mirror down, upstream 404", mirror: down, upstream: empty.host(), wantClass: errdefs.ErrNotFound},
		{desc: "mirror 404, upstream down", mirror: empty.host(), upstream: down, wantClass: errdefs.ErrUnavailable},
		{desc: "both 404", mirror: empty.host(), upstream: empty.host(), wantClass: errdefs.ErrNotFound},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			r, dir := newTestResolver(t)
			writeHostsToml(t, dir, "reg.example", fmt.Sprintf("server = \"http://%s\"\n[host.\"http://%s\"]\n", tc.upstream, tc.mirror))
			_, _, err := r.Resolve(t.Context(), mustRef(t, "reg.example/app:1"), nil)
			require.ErrorIs(t, err, tc.wantClass)
			msg := err.Error()
			require.Contains(t, msg, "all 2 hosts failed")
			require.Contains(t, msg, "http://"+tc.mirror)
			require.Contains(t, msg, "http://"+tc.upstream)
			require.Less(t, strings.Index(msg, "http://"+tc.mirror+"/v2]"), strings.LastIndex(msg, "http://"+tc.upstream+"/v2]"), "hosts in the order tried")
		})
	}
	t.Run("5xx is unavailable", func(t *testing.T) {
		broken := newFakeRegistry(t)
		broken.set(func(f *fakeRegistry) { f.status = http.StatusServiceUnavailable })
		r, _ := newTestResolver(t)
		_, _, err := r.Resolve(t.Context(), mustRef(t, broken.host()+"/app:1"), nil)
		require.ErrorIs(t, err, errdefs.ErrUnavailable)
	})
}

func TestOverridePath(t *testing.T) {
	img := newTestImage(t)
	for _, tc := range []struct {
		desc     string
		root     string
		server   string
		override bool
	}{
		{desc: "override_path: the URL's path is the API root", root: "/custom/api", server: "/custom/api", override: true},
		{desc: "path without override gets /v2", root: "/prefix/v2", server: "/prefix"},
		{desc: "path ending in /v2 is kept", root: "/prefix/v2", server: "/prefix/v2/"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			f := newFakeRegistry(t)
			f.set(func(f *fakeRegistry) { f.root = tc.root })
			want := img.serve(f, "app", "1")
			r, dir := newTestResolver(t)
			writeHostsToml(t, dir, "reg.example", fmt.Sprintf("[host.\"http://%s%s\"]\noverride_path = %t\n", f.host(), tc.server, tc.override))
			desc, fetcher, err := r.Resolve(t.Context(), mustRef(t, "reg.example/app:1"), nil)
			require.NoError(t, err)
			require.Equal(t, want, desc)
			require.Equal(t, tc.root+"/app/manifests/1", f.seen()[0].Path)
			require.Equal(t, img.config, readAll(t, must(fetcher.Fetch(t.Context(), ocispec.Descriptor{Digest: digest.FromBytes(img.config)}))))
		})
	}
}

func TestHeadersFromHostsToml(t *testing.T) {
	f := newFakeRegistry(t)
	newTestImage(t).serve(f, "app", "1")
	r, dir := newTestResolver(t)
	writeHostsToml(t, dir, "reg.example", fmt.Sprintf(`
server = "http://%s"
[header]
  x-single = "one"
  x-multi = ["a", "b"]
`, f.host()))
	_, _, err := r.Resolve(t.Context(), mustRef(t, "reg.example/app:1"), nil)
	require.NoError(t, err)
	h := f.seen()[0].Header
	require.Equal(t, "one", h.Get("X-Single"))
	require.Equal(t, []string{"a", "b"}, h.Values("X-Multi"))
}

func TestBasicAuth(t *testing.T) {
	f := newFakeRegistry(t)
	img := newTestImage(t)
	want := img.serve(f, "app", "1")
	f.set(func(f *fakeRegistry) { f.basicUser, f.basicPass = "alice", "s3cret" })
	ref := f.host() + "/app:1"

	for _, tc := range []struct {
		desc    string
		creds   *Credentials
		wantErr error
	}{
		{desc: "username and password", creds: &Credentials{Username: "alice", Password: "s3cret"}},
		{desc: "auth", creds: &Credentials{Auth: "YWxpY2U6czNjcmV0"}},
		{desc: "server address names the registry", creds: &Credentials{Username: "alice", Password: "s3cret", ServerAddress: "http://" + f.host() + "/v2/"}},
		{desc: "anonymous", wantErr: errdefs.ErrUnauthenticated},
		{desc: "wrong password", creds: &Credentials{Username: "alice", Password: "nope"}, wantErr: errdefs.ErrUnauthenticated},
		{desc: "server address names another registry", creds: &Credentials{Username: "alice", Password: "s3cret", ServerAddress: "other.example"}, wantErr: errdefs.ErrUnauthenticated},
		{desc: "malformed auth", creds: &Credentials{Auth: "!!!"}, wantErr: errdefs.ErrInvalidArgument},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			r, _ := newTestResolver(t)
			ctx, logs := captureLogs(t.Context())
			desc, fetcher, err := r.Resolve(ctx, mustRef(t, ref), tc.creds)
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				require.NotContains(t, err.Error(), "s3cret")
				return
			}
			require.NoError(t, err)
			require.Equal(t, want, desc)
			require.Equal(t, img.layer, readAll(t, must(fetcher.Fetch(ctx, ocispec.Descriptor{Digest: digest.FromBytes(img.layer)}))))
			require.NotContains(t, logs.String(), "s3cret")
		})
	}
}

func TestBearerAuth(t *testing.T) {
	img := newTestImage(t)
	setup := func(t *testing.T) (*fakeRegistry, *fakeTokens) {
		f := newFakeRegistry(t)
		img.serve(f, "library/app", "1")
		tokens := newFakeTokens(t)
		f.set(func(f *fakeRegistry) { f.tokens = tokens })
		return f, tokens
	}
	layer := ocispec.Descriptor{Digest: digest.FromBytes(img.layer), Size: int64(len(img.layer))}

	t.Run("anonymous token with scope, reused", func(t *testing.T) {
		f, tokens := setup(t)
		r, _ := newTestResolver(t)
		ctx := t.Context()
		_, fetcher, err := r.Resolve(ctx, mustRef(t, f.host()+"/library/app:1"), nil)
		require.NoError(t, err)
		require.Equal(t, img.layer, readAll(t, must(fetcher.Fetch(ctx, layer))))
		require.Equal(t, img.config, readAll(t, must(fetcher.Fetch(ctx, ocispec.Descriptor{Digest: digest.FromBytes(img.config)}))))
		trs := tokens.seen()
		require.Len(t, trs, 1, "one token for the whole pull")
		require.Equal(t, http.MethodGet, trs[0].Method)
		require.False(t, trs[0].HasBasic)
		require.Equal(t, "fake-registry", trs[0].Service)
		require.Equal(t, []string{"repository:library/app:pull"}, trs[0].Scopes)
		reqs := f.seen()
		require.Empty(t, reqs[0].Auth)
		for _, s := range reqs[1:] {
			require.True(t, strings.HasPrefix(s.Auth, "Bearer tok-"), "requests after the challenge carry the token")
		}

		// A second pull reuses the challenge and the token.
		f.reset()
		_, _, err = r.Resolve(ctx, mustRef(t, f.host()+"/library/app:1"), nil)
		require.NoError(t, err)
		require.Len(t, tokens.seen(), 1)
		require.Len(t, f.seen(), 1)
	})
	t.Run("token expiry", func(t *testing.T) {
		f, tokens := setup(t)
		tokens.set(func(ft *fakeTokens) { ft.expiresIn = 120 })
		r, _ := newTestResolver(t)
		now := r.auth.now()
		r.auth.now = func() time.Time { return now }
		_, _, err := r.Resolve(t.Context(), mustRef(t, f.host()+"/library/app:1"), nil)
		require.NoError(t, err)
		r.auth.now = func() time.Time { return now.Add(100 * time.Second) }
		_, _, err = r.Resolve(t.Context(), mustRef(t, f.host()+"/library/app:1"), nil)
		require.NoError(t, err)
		require.Len(t, tokens.seen(), 1, "still valid")
		r.auth.now = func() time.Time { return now.Add(115 * time.Second) }
		_, _, err = r.Resolve(t.Context(), mustRef(t, f.host()+"/library/app:1"), nil)
		require.NoError(t, err)
		require.Len(t, tokens.seen(), 2, "refreshed shortly before expiry")
	})
	t.Run("credentials go to the token server", func(t *testing.T) {
		f, tokens := setup(t)
		tokens.set(func(ft *fakeTokens) { ft.user, ft.pass = "bob", "hunter2"; ft.accessToken = true })
		r, _ := newTestResolver(t)
		_, _, err := r.Resolve(t.Context(), mustRef(t, f.host()+"/library/app:1"), (&Credentials{Username: "bob", Password: "hunter2"}))
		require.NoError(t, err)
		trs := tokens.seen()
		require.Len(t, trs, 1)
		require.Equal(t, "bob", trs[0].User)
		require.Equal(t, "hunter2", trs[0].Pass)
		require.Equal(t, "bob", trs[0].Account)
		for _, s := range f.seen() {
			require.NotContains(t, s.Auth, "Basic", "basic credentials never go to a bearer registry")
		}
	})
	t.Run("token server refuses credentials", func(t *testing.T) {
		f, tokens := setup(t)
		tokens.set(func(ft *fakeTokens) { ft.user, ft.pass = "bob", "hunter2" })
		r, _ := newTestResolver(t)
		_, _, err := r.Resolve(t.Context(), mustRef(t, f.host()+"/library/app:1"), (&Credentials{Username: "bob", Password: "wrong"}))
		require.ErrorIs(t, err, errdefs.ErrUnauthenticated)
		require.NotContains(t, err.Error(), "wrong")
	})
	t.Run("token without access", func(t *testing.T) {
		f, tokens := setup(t)
		tokens.set(func(ft *fakeTokens) { ft.grantNothing = true })
		r, _ := newTestResolver(t)
		_, _, err := r.Resolve(t.Context(), mustRef(t, f.host()+"/library/app:1"), nil)
		require.ErrorIs(t, err, errdefs.ErrUnauthenticated, "a second 401 after a token is final")
		require.Contains(t, err.Error(), "pull access denied")
		require.Len(t, tokens.seen(), 1)
	})
	t.Run("forbidden", func(t *testing.T) {
		f, _ := setup(t)
		f.set(func(f *fakeRegistry) { f.forbidden = true })
		r, _ := newTestResolver(t)
		_, _, err := r.Resolve(t.Context(), mustRef(t, f.host()+"/library/app:1"), nil)
		require.ErrorIs(t, err, errdefs.ErrPermissionDenied)
	})
	t.Run("token server down", func(t *testing.T) {
		f, tokens := setup(t)
		tokens.set(func(ft *fakeTokens) { ft.getStatus = http.StatusBadGateway })
		r, _ := newTestResolver(t)
		_, _, err := r.Resolve(t.Context(), mustRef(t, f.host()+"/library/app:1"), nil)
		require.ErrorIs(t, err, errdefs.ErrUnavailable)
	})
	t.Run("identity token: refresh-token POST", func(t *testing.T) {
		f, tokens := setup(t)
		tokens.set(func(ft *fakeTokens) { ft.refreshToken = "refresh-me" })
		r, _ := newTestResolver(t)
		ctx, logs := captureLogs(t.Context())
		_, _, err := r.Resolve(ctx, mustRef(t, f.host()+"/library/app:1"), (&Credentials{IdentityToken: "refresh-me"}))
		require.NoError(t, err)
		trs := tokens.seen()
		require.Len(t, trs, 1)
		require.Equal(t, http.MethodPost, trs[0].Method)
		require.Equal(t, map[string]string{
			"grant_type": "refresh_token", "refresh_token": "refresh-me", "service": "fake-registry",
			"scope": "repository:library/app:pull", "client_id": "crid",
		}, trs[0].Form)
		require.NotContains(t, logs.String(), "refresh-me")
	})
	t.Run("identity token: GET when POST is not supported", func(t *testing.T) {
		f, tokens := setup(t)
		tokens.set(func(ft *fakeTokens) { ft.postStatus = http.StatusNotFound; ft.user, ft.pass = "<token>", "refresh-me" })
		r, _ := newTestResolver(t)
		_, _, err := r.Resolve(t.Context(), mustRef(t, f.host()+"/library/app:1"), (&Credentials{Username: "<token>", IdentityToken: "refresh-me"}))
		require.NoError(t, err)
		trs := tokens.seen()
		require.Len(t, trs, 2)
		require.Equal(t, http.MethodPost, trs[0].Method)
		require.Equal(t, http.MethodGet, trs[1].Method)
		require.Equal(t, "refresh-me", trs[1].Pass)
	})
	t.Run("identity token refused", func(t *testing.T) {
		f, tokens := setup(t)
		tokens.set(func(ft *fakeTokens) { ft.refreshToken = "other"; ft.postStatus = http.StatusForbidden })
		r, _ := newTestResolver(t)
		_, _, err := r.Resolve(t.Context(), mustRef(t, f.host()+"/library/app:1"), (&Credentials{IdentityToken: "refresh-me"}))
		require.ErrorIs(t, err, errdefs.ErrPermissionDenied)
		require.Len(t, tokens.seen(), 1, "403 is not a reason to try GET")
	})
}

func TestRegistryToken(t *testing.T) {
	f := newFakeRegistry(t)
	img := newTestImage(t)
	img.serve(f, "app", "1")
	tokens := newFakeTokens(t)
	f.set(func(f *fakeRegistry) { f.tokens = tokens })
	tokens.set(func(ft *fakeTokens) { ft.issued["given-token"] = []string{"repository:app:pull"} })
	r, _ := newTestResolver(t)

	_, fetcher, err := r.Resolve(t.Context(), mustRef(t, f.host()+"/app:1"), (&Credentials{RegistryToken: "given-token"}))
	require.NoError(t, err)
	readAll(t, must(fetcher.Fetch(t.Context(), ocispec.Descriptor{Digest: digest.FromBytes(img.layer)})))
	for _, s := range f.seen() {
		require.Equal(t, "Bearer given-token", s.Auth)
	}
	require.Empty(t, tokens.seen())

	_, _, err = r.Resolve(t.Context(), mustRef(t, f.host()+"/app:1"), (&Credentials{RegistryToken: "bad-token"}))
	require.ErrorIs(t, err, errdefs.ErrUnauthenticated)
	require.Contains(t, err.Error(), "registry token refused")
}

func TestRedirectDropsAuthorization(t *testing.T) {
	f := newFakeRegistry(t)
	img := newTestImage(t)
	img.serve(f, "app", "1")
	storage := newFakeRegistry(t) // a storage service on another port
	storage.addBlob(img.layer)
	storage.set(func(s *fakeRegistry) { s.root = "/v2" })
	f.set(func(f *fakeRegistry) {
		f.basicUser, f.basicPass = "alice", "s3cret"
		f.redirectBlobsTo = storage.srv.URL
	})
	r, _ := newTestResolver(t)
	_, fetcher, err := r.Resolve(t.Context(), mustRef(t, f.host()+"/app:1"), (&Credentials{Username: "alice", Password: "s3cret"}))
	require.NoError(t, err)
	f.reset()
	require.Equal(t, img.layer, readAll(t, must(fetcher.Fetch(t.Context(), ocispec.Descriptor{Digest: digest.FromBytes(img.layer)}))))
	reqs := f.seen()
	require.NotEmpty(t, reqs)
	require.True(t, strings.HasPrefix(reqs[len(reqs)-1].Auth, "Basic "), "the registry gets the credentials")
	sreqs := storage.seen()
	require.Len(t, sreqs, 1)
	require.Empty(t, sreqs[0].Auth, "the storage host does not")

	t.Run("error after a redirect hides the signature", func(t *testing.T) {
		storage.set(func(s *fakeRegistry) { s.status = http.StatusForbidden })
		_, err := fetcher.Fetch(t.Context(), ocispec.Descriptor{Digest: digest.FromBytes(img.layer)})
		require.ErrorIs(t, err, errdefs.ErrPermissionDenied)
		require.NotContains(t, err.Error(), "secret-sig")
	})
}

func TestContextCancelled(t *testing.T) {
	f := newFakeRegistry(t)
	newTestImage(t).serve(f, "app", "1")
	r, _ := newTestResolver(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, _, err := r.Resolve(ctx, mustRef(t, f.host()+"/app:1"), nil)
	require.ErrorIs(t, err, context.Canceled)
	require.False(t, errors.Is(err, errdefs.ErrUnavailable))
}
