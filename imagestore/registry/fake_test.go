package registry

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/require"

	"github.com/crid-dev/crid/internal/log"
)

// seen is one request a fake server received.
type seen struct {
	Method string
	Path   string
	Query  string
	Auth   string
	Accept []string
	Header http.Header
}

// fakeManifest is a manifest a fake registry serves.
type fakeManifest struct {
	mediaType string
	body      []byte
}

// fakeRegistry is an httptest distribution registry, good enough for the
// resolver: manifests by tag or digest, blobs, optional basic or bearer
// auth, and knobs for misbehaviour.
type fakeRegistry struct {
	srv *httptest.Server

	// mu guards everything below.
	mu        sync.Mutex
	root      string                  // API root, "/v2" by default
	manifests map[string]fakeManifest // "repo:tag" and "repo@digest"
	blobs     map[digest.Digest][]byte
	requests  []seen

	basicUser, basicPass string      // non-empty: require basic auth
	tokens               *fakeTokens // non-nil: require a bearer token from it
	forbidden            bool        // authenticated requests get 403

	noHead          bool   // HEAD answers 405
	noDigestHeader  bool   // no Docker-Content-Digest
	contentType     string // overrides the manifest's Content-Type
	wrongDigest     bool   // Docker-Content-Digest names another digest
	status          int    // non-zero: every /v2 API request gets it
	redirectBlobsTo string // base URL blobs are redirected to
}

// newFake returns a fake registry without a server: set f.srv.
func newFake() *fakeRegistry {
	return &fakeRegistry{root: "/v2", manifests: map[string]fakeManifest{}, blobs: map[digest.Digest][]byte{}}
}

func newFakeRegistry(t *testing.T) *fakeRegistry {
	f := newFake()
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func newFakeTLSRegistry(t *testing.T) *fakeRegistry {
	f := newFake()
	f.srv = httptest.NewTLSServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

// host is the server's host:port.
func (f *fakeRegistry) host() string {
	return strings.TrimPrefix(strings.TrimPrefix(f.srv.URL, "http://"), "https://")
}

func (f *fakeRegistry) set(fn func(f *fakeRegistry)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// addManifest serves body as repo:tag (tag may be "") and repo@digest.
func (f *fakeRegistry) addManifest(repo, tag, mediaType string, body []byte) ocispec.Descriptor {
	d := digest.FromBytes(body)
	f.mu.Lock()
	defer f.mu.Unlock()
	m := fakeManifest{mediaType: mediaType, body: body}
	if tag != "" {
		f.manifests[repo+":"+tag] = m
	}
	f.manifests[repo+"@"+d.String()] = m
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(body))}
}

func (f *fakeRegistry) addBlob(body []byte) ocispec.Descriptor {
	d := digest.FromBytes(body)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.blobs[d] = body
	return ocispec.Descriptor{MediaType: "application/octet-stream", Digest: d, Size: int64(len(body))}
}

func (f *fakeRegistry) seen() []seen {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]seen(nil), f.requests...)
}

func (f *fakeRegistry) reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = nil
}

func (f *fakeRegistry) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, seen{
		Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery,
		Auth: r.Header.Get("Authorization"), Accept: r.Header.Values("Accept"), Header: r.Header.Clone(),
	})
	rest, ok := strings.CutPrefix(r.URL.Path, f.root+"/")
	if !ok {
		http.NotFound(w, r)
		return
	}
	var repo, kind, object string
	for _, k := range []string{"/manifests/", "/blobs/"} {
		if i := strings.LastIndex(rest, k); i > 0 {
			repo, kind, object = rest[:i], strings.Trim(k, "/"), rest[i+len(k):]
			break
		}
	}
	if !f.authorizedLocked(w, r, repo) {
		return
	}
	if f.status != 0 {
		writeRegistryError(w, f.status, "UNAVAILABLE", "forced status")
		return
	}
	switch kind {
	case "manifests":
		if r.Method == http.MethodHead && f.noHead {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		sep := ":"
		if strings.Contains(object, ":") {
			sep = "@"
		}
		m, ok := f.manifests[repo+sep+object]
		if !ok {
			writeRegistryError(w, http.StatusNotFound, "MANIFEST_UNKNOWN", "manifest unknown")
			return
		}
		ct := m.mediaType
		if f.contentType != "" {
			ct = f.contentType
		}
		w.Header().Set("Content-Type", ct)
		if !f.noDigestHeader {
			d := digest.FromBytes(m.body)
			if f.wrongDigest {
				d = digest.FromString("something else")
			}
			w.Header().Set("Docker-Content-Digest", d.String())
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(m.body)))
		if r.Method == http.MethodGet {
			_, _ = w.Write(m.body)
		}
	case "blobs":
		b, ok := f.blobs[digest.Digest(object)]
		if !ok {
			writeRegistryError(w, http.StatusNotFound, "BLOB_UNKNOWN", "blob unknown")
			return
		}
		if f.redirectBlobsTo != "" {
			http.Redirect(w, r, f.redirectBlobsTo+r.URL.Path+"?X-Signature=secret-sig", http.StatusTemporaryRedirect)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		_, _ = w.Write(b)
	default:
		writeRegistryError(w, http.StatusNotFound, "NAME_UNKNOWN", "unknown path")
	}
}

// authorizedLocked checks the request's credentials and answers 401/403
// when they do not pass.
func (f *fakeRegistry) authorizedLocked(w http.ResponseWriter, r *http.Request, repo string) bool {
	switch {
	case f.basicUser != "":
		u, p, ok := r.BasicAuth()
		if !ok || u != f.basicUser || p != f.basicPass {
			w.Header().Set("WWW-Authenticate", `Basic realm="fake registry"`)
			writeRegistryError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
			return false
		}
	case f.tokens != nil:
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !f.tokens.valid(tok, "repository:"+repo+":pull") {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm=%q,service="fake-registry",scope="repository:%s:pull"`, f.tokens.srv.URL+"/token", repo))
			writeRegistryError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
			return false
		}
	default:
		return true
	}
	if f.forbidden {
		writeRegistryError(w, http.StatusForbidden, "DENIED", "requested access to the resource is denied")
		return false
	}
	return true
}

func writeRegistryError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": code, "message": msg}}})
}

// fakeTokens is a Docker token server.
type fakeTokens struct {
	srv *httptest.Server

	// mu guards everything below.
	mu       sync.Mutex
	issued   map[string][]string // token → scopes
	requests []tokenRequest

	user, pass   string // non-empty: GET needs these basic credentials
	refreshToken string // non-empty: POST accepts this refresh token
	postStatus   int    // non-zero: POST answers this status
	getStatus    int    // non-zero: GET answers this status
	accessToken  bool   // answer with access_token instead of token
	grantNothing bool   // issue tokens valid for no scope
	expiresIn    int
}

type tokenRequest struct {
	Method   string
	User     string
	Pass     string
	HasBasic bool
	Service  string
	Scopes   []string
	Form     map[string]string
	Account  string
}

func newFakeTokens(t *testing.T) *fakeTokens {
	ft := &fakeTokens{issued: map[string][]string{}}
	ft.srv = httptest.NewServer(http.HandlerFunc(ft.serve))
	t.Cleanup(ft.srv.Close)
	return ft
}

func (ft *fakeTokens) set(fn func(ft *fakeTokens)) {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	fn(ft)
}

func (ft *fakeTokens) seen() []tokenRequest {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	return append([]tokenRequest(nil), ft.requests...)
}

func (ft *fakeTokens) valid(tok, scope string) bool {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	for _, s := range ft.issued[tok] {
		if s == scope {
			return true
		}
	}
	return false
}

func (ft *fakeTokens) serve(w http.ResponseWriter, r *http.Request) {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	tr := tokenRequest{Method: r.Method}
	tr.User, tr.Pass, tr.HasBasic = r.BasicAuth()
	var scopes []string
	switch r.Method {
	case http.MethodGet:
		q := r.URL.Query()
		tr.Service, tr.Account = q.Get("service"), q.Get("account")
		scopes = q["scope"]
	case http.MethodPost:
		if err := r.ParseForm(); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		tr.Form = map[string]string{}
		for k := range r.PostForm {
			tr.Form[k] = r.PostForm.Get(k)
		}
		tr.Service = r.PostForm.Get("service")
		scopes = strings.Fields(r.PostForm.Get("scope"))
	}
	tr.Scopes = scopes
	ft.requests = append(ft.requests, tr)

	switch {
	case r.Method == http.MethodPost && ft.postStatus != 0:
		w.WriteHeader(ft.postStatus)
		return
	case r.Method == http.MethodGet && ft.getStatus != 0:
		w.WriteHeader(ft.getStatus)
		return
	case r.Method == http.MethodPost:
		if ft.refreshToken == "" || r.PostForm.Get("grant_type") != "refresh_token" || r.PostForm.Get("refresh_token") != ft.refreshToken {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
	case ft.user != "":
		if !tr.HasBasic || tr.User != ft.user || tr.Pass != ft.pass {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
	}
	tok := "tok-" + rand.Text()
	if !ft.grantNothing {
		ft.issued[tok] = scopes
	}
	field := "token"
	if ft.accessToken {
		field = "access_token"
	}
	resp := map[string]any{field: tok}
	if ft.expiresIn != 0 {
		resp["expires_in"] = ft.expiresIn
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

// writeHostsToml writes <dir>/<host>/hosts.toml.
func writeHostsToml(t *testing.T, dir, host, content string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, host), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, host, "hosts.toml"), []byte(content), 0o644))
}

// newTestResolver returns a resolver reading hosts.toml from a fresh
// directory, which it also returns.
func newTestResolver(t *testing.T) (*Resolver, string) {
	t.Helper()
	dir := t.TempDir()
	r, err := NewResolver(Options{ConfigPath: dir, UserAgent: "crid-test"})
	require.NoError(t, err)
	t.Cleanup(r.CloseIdleConnections)
	return r, dir
}

func mustRef(t *testing.T, s string) reference.Named {
	t.Helper()
	ref, err := parseRef(s)
	require.NoError(t, err)
	return ref
}

func parseRef(s string) (reference.Named, error) { return reference.ParseNormalizedNamed(s) }

// closedAddr is a loopback address nobody listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

// testImage is a small OCI image: a manifest naming a config and a layer.
type testImage struct {
	manifest []byte
	config   []byte
	layer    []byte
}

func newTestImage(t *testing.T) testImage {
	t.Helper()
	img := testImage{config: []byte(`{"architecture":"amd64","os":"linux"}`), layer: bytes.Repeat([]byte("layer"), 1000)}
	m := ocispec.Manifest{
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(img.config), Size: int64(len(img.config))},
		Layers:    []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromBytes(img.layer), Size: int64(len(img.layer))}},
	}
	m.SchemaVersion = 2
	var err error
	img.manifest, err = json.Marshal(m)
	require.NoError(t, err)
	return img
}

// serve publishes img on f as repo:tag and returns the manifest's
// descriptor.
func (img testImage) serve(f *fakeRegistry, repo, tag string) ocispec.Descriptor {
	f.addBlob(img.config)
	f.addBlob(img.layer)
	return f.addManifest(repo, tag, ocispec.MediaTypeImageManifest, img.manifest)
}

// captureLogs routes the package's logs into a buffer.
func captureLogs(ctx context.Context) (context.Context, *syncBuffer) {
	var buf syncBuffer
	return log.WithLogger(ctx, slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))), &buf
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
