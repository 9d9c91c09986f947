package registry

import (
	"context"
	"io"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Credentials are the ones a pull request carries (CRI AuthConfig). Any field
// may be empty.
type Credentials struct {
	Username string
	Password string
	// Auth is base64("username:password"), as in Docker's config.json.
	Auth          string
	ServerAddress string
	// IdentityToken is a refresh token exchanged for a bearer token (OAuth2).
	IdentityToken string
	// RegistryToken is a bearer token sent as it is.
	RegistryToken string
}

// Empty reports whether c carries no credential at all.
func (c *Credentials) Empty() bool {
	return c == nil || (c.Username == "" && c.Password == "" && c.Auth == "" &&
		c.IdentityToken == "" && c.RegistryToken == "")
}

// Fetcher opens manifests and blobs of one repository by descriptor. The
// returned content is unverified: the caller checks digest and size.
// Fetch of an unknown blob returns an error wrapping errdefs.ErrNotFound.
type Fetcher interface {
	Fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error)
}
