package imagestore

import (
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
)

// ParseRef normalizes an image reference the way kubelet and crictl expect:
// a familiar name gains its registry and "library/" path and, when it has
// neither tag nor digest, the tag "latest":
//
//	busybox                       → docker.io/library/busybox:latest
//	busybox@sha256:…              → docker.io/library/busybox@sha256:…
//	busybox:1.36@sha256:…         → docker.io/library/busybox:1.36@sha256:… (both kept)
//	registry.k8s.io/pause:3.10    → registry.k8s.io/pause:3.10
//
// An image ID (64 hex characters) is not a reference. A malformed reference
// returns an error wrapping errdefs.ErrInvalidArgument.
func ParseRef(s string) (reference.Named, error) {
	if s == "" {
		return nil, fmt.Errorf("parse image reference: empty: %w", errdefs.ErrInvalidArgument)
	}
	named, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return nil, fmt.Errorf("parse image reference %q: %v: %w", s, err, errdefs.ErrInvalidArgument)
	}
	return reference.TagNameOnly(named), nil
}

// repoTag returns the "name:tag" form of ref, or "" when ref has no tag.
func repoTag(ref reference.Named) string {
	t, ok := ref.(reference.Tagged)
	if !ok {
		return ""
	}
	tagged, err := reference.WithTag(reference.TrimNamed(ref), t.Tag())
	if err != nil {
		return ""
	}
	return tagged.String()
}

// repoDigest returns "name@dgst".
func repoDigest(ref reference.Named, dgst digest.Digest) string {
	return ref.Name() + "@" + dgst.String()
}

// lookupKey returns the key a reference is recorded under in
// repositories.json: the digest wins over a tag ("name:tag@d" → "name@d").
func lookupKey(ref reference.Named) string {
	if d, ok := ref.(reference.Digested); ok {
		return repoDigest(ref, d.Digest())
	}
	return ref.String()
}

// isRepoDigest reports whether a key of repositories.json is "name@digest".
func isRepoDigest(key string) bool { return strings.Contains(key, "@") }

// idForm classifies s as an image ID query. It returns the hex part and
// whether s is a complete ID ("sha256:<64hex>" or "<64hex>") or a prefix
// (1 to 63 lower-case hex characters, optionally after "sha256:"). ok is
// false when s cannot be an ID.
func idForm(s string) (hex string, full, ok bool) {
	hex = strings.TrimPrefix(s, digest.SHA256.String()+":")
	if hex == "" || len(hex) > 64 {
		return "", false, false
	}
	for i := 0; i < len(hex); i++ {
		c := hex[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return "", false, false
		}
	}
	return hex, len(hex) == 64, true
}
