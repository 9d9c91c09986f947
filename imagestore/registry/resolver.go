package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/crid-dev/crid/internal/log"
)

// Media types of manifests and indexes.
const (
	MediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"

	mediaTypeDockerSchema1       = "application/vnd.docker.distribution.manifest.v1+json"
	mediaTypeDockerSchema1Signed = "application/vnd.docker.distribution.manifest.v1+prettyjws"
)

// manifestAccept is the Accept header of manifest requests: indexes and
// manifests, OCI and Docker schema 2. Schema 1 is not asked for.
var manifestAccept = []string{
	ocispec.MediaTypeImageIndex,
	ocispec.MediaTypeImageManifest,
	MediaTypeDockerManifestList,
	MediaTypeDockerManifest,
}

// MaxManifestSize caps a manifest or index read while resolving, as
// containerd does.
const MaxManifestSize = 4 << 20

// Default timeouts, used for zero fields of Timeouts.
const (
	DefaultDialTimeout           = 30 * time.Second
	DefaultTLSHandshakeTimeout   = 10 * time.Second
	DefaultResponseHeaderTimeout = 60 * time.Second
)

// Timeouts bound the steps of one request. None bounds reading a body:
// layers take as long as they take, and the caller fails a pull that stops
// making progress.
type Timeouts struct {
	// Dial bounds a TCP connect. hosts.toml's dial_timeout overrides it
	// for a host.
	Dial time.Duration
	// TLSHandshake bounds a TLS handshake.
	TLSHandshake time.Duration
	// ResponseHeader bounds the wait for the response headers once the
	// request was sent. After it, the next host is tried.
	ResponseHeader time.Duration
}

// Options configure a Resolver.
type Options struct {
	// ConfigPath holds a directory per registry host with its hosts.toml;
	// DefaultConfigPath when empty.
	ConfigPath string
	// UserAgent is sent with every request; "crid" when empty.
	UserAgent string
	// Timeouts of each request; zero fields take the defaults.
	Timeouts Timeouts
}

// Resolver resolves references against registries and opens their content.
// It is safe for concurrent use. hosts.toml is read anew for every Resolve,
// so that edits apply to the next pull; connections and bearer tokens are
// shared across pulls.
type Resolver struct {
	configPath string
	userAgent  string
	transports *transports
	auth       *authCache
	plainHTTP  sync.Map // host → struct{}: loopback hosts found to speak plain HTTP
}

// NewResolver returns a Resolver configured by opts.
func NewResolver(opts Options) (*Resolver, error) {
	t := opts.Timeouts
	if t.Dial < 0 || t.TLSHandshake < 0 || t.ResponseHeader < 0 {
		return nil, fmt.Errorf("negative registry timeout: %w", errdefs.ErrInvalidArgument)
	}
	if t.Dial == 0 {
		t.Dial = DefaultDialTimeout
	}
	if t.TLSHandshake == 0 {
		t.TLSHandshake = DefaultTLSHandshakeTimeout
	}
	if t.ResponseHeader == 0 {
		t.ResponseHeader = DefaultResponseHeaderTimeout
	}
	r := &Resolver{
		configPath: opts.ConfigPath,
		userAgent:  opts.UserAgent,
		transports: newTransports(t),
		auth:       newAuthCache(),
	}
	if r.configPath == "" {
		r.configPath = DefaultConfigPath
	}
	if r.userAgent == "" {
		r.userAgent = "crid"
	}
	return r, nil
}

// CloseIdleConnections closes the connections kept alive for later pulls.
func (r *Resolver) CloseIdleConnections() {
	r.transports.closeIdle()
}

// Resolve returns the descriptor of the manifest or index ref names and a
// Fetcher for its repository, authenticated with creds (nil for
// anonymous). A digest in ref wins over its tag. A tag is resolved on the
// hosts with the resolve capability; a digest on those with pull (the
// content is verified by the caller), as containerd does. Hosts are tried in
// order; if all fail, the error names each and wraps the class of the last.
func (r *Resolver) Resolve(ctx context.Context, ref reference.Named, creds *Credentials) (ocispec.Descriptor, Fetcher, error) {
	var (
		object string
		dgst   digest.Digest
		want   capabilities
	)
	if d, ok := ref.(reference.Digested); ok {
		dgst = d.Digest()
		if err := dgst.Validate(); err != nil {
			return ocispec.Descriptor{}, nil, fmt.Errorf("resolve %s: %w: %w", ref, err, errdefs.ErrInvalidArgument)
		}
		object, want = dgst.String(), capPull
	} else if t, ok := ref.(reference.Tagged); ok {
		object, want = t.Tag(), capResolve
	} else {
		return ocispec.Descriptor{}, nil, fmt.Errorf("resolve %s: reference has neither tag nor digest: %w", ref, errdefs.ErrInvalidArgument)
	}

	s, err := r.newSession(ctx, ref, creds)
	if err != nil {
		return ocispec.Descriptor{}, nil, fmt.Errorf("resolve %s: %w", ref, err)
	}
	hosts := s.hostsWith(want)
	if len(hosts) == 0 {
		return ocispec.Descriptor{}, nil, fmt.Errorf("resolve %s: no host of %s has the %s capability: %w", ref, s.registry, want, errdefs.ErrNotFound)
	}
	herr := &hostsError{op: "resolve " + ref.String()}
	for _, ep := range hosts {
		desc, body, err := s.resolveOn(ctx, ep, object, dgst)
		if err == nil {
			s.logSwallowed(ctx, herr)
			return desc, &fetcher{s: s, root: desc, rootBody: body}, nil
		}
		if ctx.Err() != nil {
			return ocispec.Descriptor{}, nil, fmt.Errorf("resolve %s: %w", ref, ctx.Err())
		}
		if errors.Is(err, errdefs.ErrNotImplemented) {
			// The image itself is unsupported; another host holds the same.
			return ocispec.Descriptor{}, nil, fmt.Errorf("resolve %s on %s: %w", ref, ep, err)
		}
		herr.add(ep.String(), err)
	}
	return ocispec.Descriptor{}, nil, herr
}

// session is one pull's view of a repository: its hosts, with the
// credentials that apply to each.
type session struct {
	r        *Resolver
	registry string // the registry host of the reference ("docker.io")
	repo     string // the repository path ("library/busybox")
	hosts    []*endpoint
}

// endpoint is one host of a session.
type endpoint struct {
	scheme string
	host   string
	path   string // API root, "/v2" unless override_path
	caps   capabilities
	header http.Header
	client *http.Client
	creds  authCreds
	// mirror is set for a host other than the registry's own, which is
	// told the registry in an "ns" query parameter (containerd does so).
	mirror bool
}

func (e *endpoint) base() string { return e.scheme + "://" + e.host }

func (e *endpoint) String() string { return e.base() + e.path }

func (r *Resolver) newSession(ctx context.Context, ref reference.Named, creds *Credentials) (*session, error) {
	registry := reference.Domain(ref)
	configs, err := r.hostConfigs(ctx, registry)
	if err != nil {
		return nil, err
	}
	s := &session{r: r, registry: registry, repo: reference.Path(ref)}
	for i := range configs {
		ep, err := r.newEndpoint(&configs[i], registry, creds)
		if err != nil {
			return nil, err
		}
		s.hosts = append(s.hosts, ep)
	}
	return s, nil
}

// hostConfigs reads the hosts of registry: its hosts.toml (or _default's),
// with the default upstream filled in.
func (r *Resolver) hostConfigs(ctx context.Context, registry string) ([]hostConfig, error) {
	dir, err := findHostDir(r.configPath, registry)
	if err != nil {
		return nil, err
	}
	var configs []hostConfig
	if dir != "" {
		if configs, err = loadHostDir(ctx, dir); err != nil {
			return nil, err
		}
	}
	if len(configs) == 0 {
		configs = []hostConfig{{caps: capAll}}
	}
	if last := &configs[len(configs)-1]; last.host == "" {
		applyDefaultServer(last, registry)
	}
	return configs, nil
}

func (r *Resolver) newEndpoint(h *hostConfig, registry string, creds *Credentials) (*endpoint, error) {
	if h.scheme == "http" && h.explicitTLS() {
		// TLS configured for an http:// host: try HTTPS first, as
		// containerd does, unless port 80 leaves no doubt.
		if _, port, _ := net.SplitHostPort(h.host); port != "80" {
			h.scheme, h.fallbackHTTP = "https", true
		}
	}
	tr, err := r.transports.get(h)
	if err != nil {
		return nil, fmt.Errorf("host %s: %w", h.host, err)
	}
	var rt http.RoundTripper = tr
	if h.fallbackHTTP {
		rt = &httpFallback{next: tr, host: h.host, plain: &r.plainHTTP}
	}
	ac, err := hostCredentials(creds, registry, h.host)
	if err != nil {
		return nil, err
	}
	return &endpoint{
		scheme: h.scheme,
		host:   h.host,
		path:   h.path,
		caps:   h.caps,
		header: h.header,
		client: &http.Client{Transport: rt, CheckRedirect: checkRedirect},
		creds:  ac,
		mirror: canonicalHost(h.host) != canonicalHost(registry),
	}, nil
}

func (s *session) hostsWith(want capabilities) []*endpoint {
	var out []*endpoint
	for _, ep := range s.hosts {
		if ep.caps.has(want) {
			out = append(out, ep)
		}
	}
	return out
}

// logSwallowed logs the failures of hosts that a later host made up for.
func (s *session) logSwallowed(ctx context.Context, herr *hostsError) {
	for _, f := range herr.failed {
		log.G(ctx).Info("registry host failed, a later host answered", "host", f.host, "error", f.err)
	}
}

// url is the URL of <api root>/<repo>/<kind>/<object> on ep.
func (s *session) url(ep *endpoint, kind, object string) string {
	u := url.URL{
		Scheme: ep.scheme,
		Host:   ep.host,
		Path:   path.Join("/", ep.path, s.repo, kind, object),
	}
	if ep.mirror {
		u.RawQuery = url.Values{"ns": {s.registry}}.Encode()
	}
	return u.String()
}

// do sends a request to ep, with the authorization already known for it.
// After a 401 it answers the challenge and retries once; a second 401 (or
// a challenge it cannot answer) is an error wrapping ErrUnauthenticated.
// Any other response is returned for the caller to judge.
func (s *session) do(ctx context.Context, ep *endpoint, method, u string, accept []string) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, method, u, nil)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w: %w", method, u, err, errdefs.ErrInvalidArgument)
		}
		for k, v := range ep.header {
			req.Header[k] = append([]string(nil), v...)
		}
		req.Header.Set("User-Agent", s.r.userAgent)
		if len(accept) > 0 {
			req.Header.Set("Accept", strings.Join(accept, ", "))
		}
		if err := s.authorize(ctx, ep, req); err != nil {
			return nil, err
		}
		resp, err := ep.client.Do(req)
		if err != nil {
			return nil, transportError(ctx, err)
		}
		if resp.StatusCode != http.StatusUnauthorized {
			return resp, nil
		}
		if attempt > 0 {
			return nil, s.unauthorized(ep, resp)
		}
		if err := s.answerChallenge(ep, resp); err != nil {
			return nil, err
		}
	}
}

// authorize adds the Authorization header that ep is known to want.
func (s *session) authorize(ctx context.Context, ep *endpoint, req *http.Request) error {
	if ep.creds.registryToken != "" {
		req.Header.Set("Authorization", "Bearer "+ep.creds.registryToken)
		return nil
	}
	ch, ok := s.r.auth.challenge(ep.base())
	if !ok {
		return nil
	}
	switch ch.scheme {
	case "basic":
		if ep.creds.hasBasic() {
			req.SetBasicAuth(ep.creds.username, ep.creds.password)
		}
	case "bearer":
		tok, err := s.r.auth.token(ctx, ep, ch, s.repo, s.r.userAgent)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	return nil
}

// answerChallenge records the challenge of a 401 response so that the
// retry carries an answer; it fails when no answer can help.
func (s *session) answerChallenge(ep *endpoint, resp *http.Response) error {
	chs := parseChallenges(resp.Header.Values("WWW-Authenticate"))
	ch, ok := pickChallenge(chs)
	if !ok {
		return fmt.Errorf("%w (no supported authentication challenge)", s.unauthorized(ep, resp))
	}
	if ep.creds.registryToken != "" {
		return fmt.Errorf("%w (registry token refused)", s.unauthorized(ep, resp))
	}
	if ch.scheme == "basic" && !ep.creds.hasBasic() {
		return s.unauthorized(ep, resp)
	}
	resp.Body.Close()
	s.r.auth.setChallenge(ep.base(), ch)
	if ch.scheme == "bearer" {
		// The token sent, if any, was refused: get a fresh one.
		s.r.auth.forgetToken(ep, ch, s.repo)
	}
	return nil
}

// unauthorized describes a 401 that authentication could not fix and
// closes its body.
func (s *session) unauthorized(ep *endpoint, resp *http.Response) error {
	se := newStatusError(resp)
	if ep.creds.empty() {
		return fmt.Errorf("pull access denied, repository does not exist or may require authorization: %w", se)
	}
	return fmt.Errorf("credentials refused: %w", se)
}

// resolveOn resolves object on ep: HEAD first, and GET when the HEAD
// answer lacks a digest, a size or a specific media type (or the registry
// does not implement HEAD). It returns the manifest's bytes when it read
// them.
func (s *session) resolveOn(ctx context.Context, ep *endpoint, object string, dgst digest.Digest) (ocispec.Descriptor, []byte, error) {
	u := s.url(ep, "manifests", object)
	resp, err := s.do(ctx, ep, http.MethodHead, u, manifestAccept)
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	switch {
	case resp.StatusCode == http.StatusMethodNotAllowed || resp.StatusCode == http.StatusNotImplemented:
		resp.Body.Close()
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		return ocispec.Descriptor{}, nil, newStatusError(resp)
	default:
		resp.Body.Close()
		mt := contentType(resp.Header)
		if isSchema1(mt) {
			return ocispec.Descriptor{}, nil, errSchema1(mt)
		}
		d := dgst
		if d == "" {
			if h := digest.Digest(resp.Header.Get("Docker-Content-Digest")); h.Validate() == nil {
				d = h
			}
		}
		if d != "" && resp.ContentLength >= 0 && isIndexOrManifest(mt) {
			if resp.ContentLength > MaxManifestSize {
				return ocispec.Descriptor{}, nil, errTooLarge(resp.ContentLength)
			}
			return ocispec.Descriptor{MediaType: mt, Digest: d, Size: resp.ContentLength}, nil, nil
		}
	}

	resp, err = s.do(ctx, ep, http.MethodGet, u, manifestAccept)
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return ocispec.Descriptor{}, nil, newStatusError(resp)
	}
	defer resp.Body.Close()
	if resp.ContentLength > MaxManifestSize {
		return ocispec.Descriptor{}, nil, errTooLarge(resp.ContentLength)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxManifestSize+1))
	if err != nil {
		return ocispec.Descriptor{}, nil, fmt.Errorf("read manifest: %w", transportError(ctx, err))
	}
	if len(body) > MaxManifestSize {
		return ocispec.Descriptor{}, nil, errTooLarge(int64(len(body)))
	}
	mt := contentType(resp.Header)
	if isGenericType(mt) {
		mt = sniffMediaType(body)
	}
	if isSchema1(mt) {
		return ocispec.Descriptor{}, nil, errSchema1(mt)
	}
	if !isIndexOrManifest(mt) {
		return ocispec.Descriptor{}, nil, fmt.Errorf("unsupported manifest media type %q: %w", mt, errdefs.ErrNotImplemented)
	}
	d, err := bodyDigest(body, dgst, digest.Digest(resp.Header.Get("Docker-Content-Digest")))
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	return ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(body))}, body, nil
}

// bodyDigest is the digest of a manifest body: the reference's digest,
// else the registry's Docker-Content-Digest, else sha256 of the body. A
// digest that the body contradicts is an error of the host.
func bodyDigest(body []byte, want, header digest.Digest) (digest.Digest, error) {
	for _, d := range []digest.Digest{want, header} {
		if d == "" || d.Validate() != nil {
			continue
		}
		if !d.Algorithm().Available() {
			return d, nil
		}
		if got := d.Algorithm().FromBytes(body); got != d {
			return "", fmt.Errorf("manifest digest is %s, not %s: %w", got, d, errdefs.ErrDataLoss)
		}
		return d, nil
	}
	return digest.FromBytes(body), nil
}

func errSchema1(mt string) error {
	return fmt.Errorf("manifest media type %q (Docker schema 1) is not supported: rebuild the image as OCI or Docker schema 2: %w", mt, errdefs.ErrNotImplemented)
}

func errTooLarge(n int64) error {
	return fmt.Errorf("manifest of %d bytes exceeds the %d byte limit: %w", n, MaxManifestSize, errdefs.ErrInvalidArgument)
}

// contentType is the media type of a response, without parameters.
func contentType(h http.Header) string {
	ct := h.Get("Content-Type")
	if ct == "" {
		return ""
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return ct
	}
	return mt
}

func isIndexOrManifest(mt string) bool {
	switch mt {
	case ocispec.MediaTypeImageIndex, ocispec.MediaTypeImageManifest, MediaTypeDockerManifestList, MediaTypeDockerManifest:
		return true
	}
	return false
}

// isGenericType reports whether mt says nothing about what a manifest is:
// some registries serve manifests as plain JSON or text.
func isGenericType(mt string) bool {
	switch mt {
	case "", "application/json", "text/plain", "application/octet-stream":
		return true
	}
	return false
}

func isSchema1(mt string) bool {
	return mt == mediaTypeDockerSchema1 || mt == mediaTypeDockerSchema1Signed
}

// sniffMediaType guesses the media type of a manifest served with a
// generic Content-Type (application/json, text/plain, none).
func sniffMediaType(body []byte) string {
	var m struct {
		SchemaVersion int             `json:"schemaVersion"`
		MediaType     string          `json:"mediaType"`
		Manifests     json.RawMessage `json:"manifests"`
		Config        json.RawMessage `json:"config"`
		Layers        json.RawMessage `json:"layers"`
		FSLayers      json.RawMessage `json:"fsLayers"`
	}
	if err := json.NewDecoder(bytes.NewReader(body)).Decode(&m); err != nil {
		return ""
	}
	switch {
	case m.MediaType != "":
		return m.MediaType
	case m.SchemaVersion == 1 || m.FSLayers != nil:
		return mediaTypeDockerSchema1
	case m.Manifests != nil:
		return ocispec.MediaTypeImageIndex
	case m.Config != nil || m.Layers != nil:
		return ocispec.MediaTypeImageManifest
	}
	return ""
}
