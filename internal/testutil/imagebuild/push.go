package imagebuild

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"
)

// pushParallelism bounds concurrent blob uploads of one image.
const pushParallelism = 4

// Pusher uploads built images to a registry through the distribution API
// (https://distribution.github.io/distribution/spec/api/): HEAD to skip
// blobs the repository has, a cross-repository mount for blobs this pusher
// already uploaded elsewhere, otherwise POST then a monolithic PUT, and a
// manifest PUT with the manifest's media type.
type Pusher struct {
	base               *url.URL
	client             *http.Client
	username, password string

	// mu guards the field below.
	mu sync.Mutex
	// pushedTo maps a blob to a repository known to hold it.
	pushedTo map[digest.Digest]string
}

// PushOption configures a [Pusher].
type PushOption func(*Pusher)

// WithBasicAuth sends HTTP basic credentials with every request.
func WithBasicAuth(username, password string) PushOption {
	return func(p *Pusher) { p.username, p.password = username, password }
}

// WithHTTPClient uses c (for instance one trusting a test CA) instead of
// http.DefaultClient.
func WithHTTPClient(c *http.Client) PushOption {
	return func(p *Pusher) { p.client = c }
}

// NewPusher returns a pusher for registry, given as "host:port" (plain
// HTTP) or as an http:// or https:// URL.
func NewPusher(registry string, opts ...PushOption) (*Pusher, error) {
	raw := registry
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("parse registry address %q: %w", registry, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.Trim(u.Path, "/") != "" {
		return nil, fmt.Errorf("registry address %q: want host:port or http(s)://host:port", registry)
	}
	u.Path = ""
	p := &Pusher{base: u, client: http.DefaultClient, pushedTo: map[digest.Digest]string{}}
	for _, o := range opts {
		o(p)
	}
	return p, nil
}

// Host returns the registry's host:port, as used in image references.
func (p *Pusher) Host() string { return p.base.Host }

// URL returns the registry's base URL, e.g. "http://127.0.0.1:5000".
func (p *Pusher) URL() string { return p.base.Scheme + "://" + p.base.Host }

// ResponseError is an unexpected registry response.
type ResponseError struct {
	Method     string
	URL        string
	StatusCode int
	Body       string // first KiB of the body (the distribution error JSON)
}

func (e *ResponseError) Error() string {
	return fmt.Sprintf("%s %s: unexpected status %d: %s", e.Method, e.URL, e.StatusCode, strings.TrimSpace(e.Body))
}

// PushImage uploads img's blobs and manifest to repo, tagged tag (by digest
// only if tag is empty).
func (p *Pusher) PushImage(ctx context.Context, repo, tag string, img *BuiltImage) error {
	if err := p.pushImageBlobs(ctx, repo, img); err != nil {
		return fmt.Errorf("push %s: %w", repo, err)
	}
	ref := tag
	if ref == "" {
		ref = img.Digest.String()
	}
	if err := p.putManifest(ctx, repo, ref, img.MediaType, img.Digest, img.Manifest); err != nil {
		return fmt.Errorf("push %s:%s: %w", repo, ref, err)
	}
	return nil
}

// PushIndex uploads every image of idx by digest, then the index tagged tag
// (by digest only if tag is empty).
func (p *Pusher) PushIndex(ctx context.Context, repo, tag string, idx *BuiltIndex) error {
	for _, img := range idx.Images {
		if err := p.PushImage(ctx, repo, "", img); err != nil {
			return fmt.Errorf("push %s image: %w", img.Platform, err)
		}
	}
	ref := tag
	if ref == "" {
		ref = idx.Digest.String()
	}
	if err := p.putManifest(ctx, repo, ref, idx.MediaType, idx.Digest, idx.Manifest); err != nil {
		return fmt.Errorf("push %s:%s: %w", repo, ref, err)
	}
	return nil
}

func (p *Pusher) pushImageBlobs(ctx context.Context, repo string, img *BuiltImage) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(pushParallelism)
	g.Go(func() error {
		open := func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(img.Config)), nil }
		if err := p.pushBlob(gctx, repo, img.ConfigDigest, int64(len(img.Config)), open); err != nil {
			return fmt.Errorf("push config %s: %w", img.ConfigDigest, err)
		}
		return nil
	})
	for _, l := range img.Layers {
		g.Go(func() error {
			if err := p.pushBlob(gctx, repo, l.Digest, l.Size, l.Open); err != nil {
				return fmt.Errorf("push layer %s: %w", l.Digest, err)
			}
			return nil
		})
	}
	return g.Wait()
}

func (p *Pusher) url(path string) string {
	u := *p.base
	u.Path = path
	return u.String()
}

// do sends a request and returns the response if its status is one of want;
// otherwise it returns a *ResponseError.
func (p *Pusher) do(ctx context.Context, method, u string, body io.Reader, size int64, contentType string, want ...int) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.ContentLength = size
		req.Header.Set("Content-Type", contentType)
	}
	if p.username != "" || p.password != "" {
		req.SetBasicAuth(p.username, p.password)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, err
	}
	for _, w := range want {
		if resp.StatusCode == w {
			return resp, nil
		}
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	return nil, &ResponseError{Method: method, URL: u, StatusCode: resp.StatusCode, Body: string(msg)}
}

// closeResponse drains a little of the body so the connection is reused.
func closeResponse(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}

func (p *Pusher) pushBlob(ctx context.Context, repo string, d digest.Digest, size int64, open func() (io.ReadCloser, error)) error {
	resp, err := p.do(ctx, http.MethodHead, p.url("/v2/"+repo+"/blobs/"+d.String()), nil, 0, "", http.StatusOK, http.StatusNotFound)
	if err != nil {
		return err
	}
	closeResponse(resp)
	if resp.StatusCode == http.StatusOK {
		p.remember(d, repo)
		return nil
	}

	start := p.url("/v2/" + repo + "/blobs/uploads/")
	p.mu.Lock()
	from := p.pushedTo[d]
	p.mu.Unlock()
	if from != "" && from != repo {
		start += "?" + url.Values{"mount": {d.String()}, "from": {from}}.Encode()
	}
	resp, err = p.do(ctx, http.MethodPost, start, nil, 0, "", http.StatusCreated, http.StatusAccepted)
	if err != nil {
		return err
	}
	closeResponse(resp)
	if resp.StatusCode == http.StatusCreated { // mounted
		p.remember(d, repo)
		return nil
	}
	loc, err := resp.Location()
	if err != nil {
		return fmt.Errorf("upload of %s: no Location: %w", d, err)
	}
	q := loc.Query()
	q.Set("digest", d.String())
	loc.RawQuery = q.Encode()

	body, err := open()
	if err != nil {
		return err
	}
	defer body.Close()
	resp, err = p.do(ctx, http.MethodPut, loc.String(), body, size, "application/octet-stream", http.StatusCreated)
	if err != nil {
		return err
	}
	closeResponse(resp)
	p.remember(d, repo)
	return nil
}

func (p *Pusher) remember(d digest.Digest, repo string) {
	p.mu.Lock()
	p.pushedTo[d] = repo
	p.mu.Unlock()
}

func (p *Pusher) putManifest(ctx context.Context, repo, ref, mediaType string, d digest.Digest, raw []byte) error {
	u := p.url("/v2/" + repo + "/manifests/" + ref)
	resp, err := p.do(ctx, http.MethodPut, u, bytes.NewReader(raw), int64(len(raw)), mediaType, http.StatusCreated)
	if err != nil {
		return err
	}
	closeResponse(resp)
	if got := resp.Header.Get("Docker-Content-Digest"); got != "" && got != d.String() {
		return fmt.Errorf("registry stored manifest as %s, built %s", got, d)
	}
	return nil
}
