package registry

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// fetcher opens the content of one repository on the hosts of a session
// with the pull capability.
type fetcher struct {
	s *session
	// root is the descriptor Resolve returned; rootBody its bytes when
	// Resolve read them, handed out instead of a second download.
	root     ocispec.Descriptor
	rootBody []byte
}

// Fetch opens desc: a manifest or index (by media type) from
// <repo>/manifests/<digest>, anything else from <repo>/blobs/<digest>,
// trying the pull hosts in order and following redirects. The body is
// streamed as it arrives, unverified. A host that answers with a length
// other than desc.Size is skipped.
func (f *fetcher) Fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	if err := desc.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("fetch %q: %w: %w", desc.Digest, err, errdefs.ErrInvalidArgument)
	}
	if f.rootBody != nil && desc.Digest == f.root.Digest {
		return io.NopCloser(bytes.NewReader(f.rootBody)), nil
	}
	kind := "blobs"
	if isManifestMediaType(desc.MediaType) {
		kind = "manifests"
	}
	hosts := f.s.hostsWith(capPull)
	if len(hosts) == 0 {
		return nil, fmt.Errorf("fetch %s: no host of %s has the pull capability: %w", desc.Digest, f.s.registry, errdefs.ErrNotFound)
	}
	herr := &hostsError{op: fmt.Sprintf("fetch %s from %s/%s", desc.Digest, f.s.registry, f.s.repo)}
	for _, ep := range hosts {
		body, err := f.fetchFrom(ctx, ep, kind, desc)
		if err == nil {
			f.s.logSwallowed(ctx, herr)
			return body, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("fetch %s: %w", desc.Digest, ctx.Err())
		}
		herr.add(ep.String(), err)
	}
	return nil, herr
}

func (f *fetcher) fetchFrom(ctx context.Context, ep *endpoint, kind string, desc ocispec.Descriptor) (io.ReadCloser, error) {
	resp, err := f.s.do(ctx, ep, http.MethodGet, f.s.url(ep, kind, desc.Digest.String()), accept(kind, desc))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, newStatusError(resp)
	}
	if desc.Size > 0 && resp.ContentLength >= 0 && resp.ContentLength != desc.Size {
		resp.Body.Close()
		return nil, fmt.Errorf("%s is %d bytes long, not %d: %w", desc.Digest, resp.ContentLength, desc.Size, errdefs.ErrDataLoss)
	}
	return resp.Body, nil
}

// accept is the Accept header for fetching desc: its own media type first
// for a manifest, none for a blob.
func accept(kind string, desc ocispec.Descriptor) []string {
	if kind != "manifests" {
		return nil
	}
	out := []string{desc.MediaType}
	for _, a := range manifestAccept {
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// isManifestMediaType reports whether content of media type mt lives under
// /manifests/ rather than /blobs/.
func isManifestMediaType(mt string) bool {
	return isIndexOrManifest(mt) || isSchema1(mt) || mt == "application/vnd.oci.artifact.manifest.v1+json"
}
