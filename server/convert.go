package server

import (
	"math"
	"strconv"
	"strings"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crid-dev/crid/imagestore"
	"github.com/crid-dev/crid/imagestore/registry"
)

// credentialsFromCRI converts the pull's AuthConfig; nil for anonymous.
func credentialsFromCRI(a *runtime.AuthConfig) *registry.Credentials {
	if a == nil {
		return nil
	}
	c := &registry.Credentials{
		Username:      a.GetUsername(),
		Password:      a.GetPassword(),
		Auth:          a.GetAuth(),
		ServerAddress: a.GetServerAddress(),
		IdentityToken: a.GetIdentityToken(),
		RegistryToken: a.GetRegistryToken(),
	}
	if c.Empty() {
		return nil
	}
	return c
}

func toCRIImages(imgs []imagestore.Image) []*runtime.Image {
	out := make([]*runtime.Image, 0, len(imgs))
	for _, img := range imgs {
		out = append(out, toCRIImage(img))
	}
	return out
}

func toCRIImage(img imagestore.Image) *runtime.Image {
	id := img.ID.String()
	out := &runtime.Image{
		Id:          id,
		RepoTags:    img.RepoTags,
		RepoDigests: img.RepoDigests,
		Size:        uint64(max(img.Size, 0)),
		Spec:        &runtime.ImageSpec{Image: id},
		Pinned:      img.Pinned,
	}
	uid, name := imageUser(img.Config.Config.User)
	if uid != nil {
		out.Uid = &runtime.Int64Value{Value: *uid}
	} else {
		out.Username = name
	}
	return out
}

// imageUser splits an image's USER ("uid", "uid:gid", "name", "name:group")
// into a numeric UID or a user name. A number outside 0..MaxInt32 is neither
// (a UID over 2^31 must never wrap around to root, CVE-2024-40635).
func imageUser(user string) (uid *int64, name string) {
	u, _, _ := strings.Cut(user, ":")
	if u == "" {
		return nil, ""
	}
	if n, err := strconv.ParseInt(u, 10, 64); err == nil {
		if n < 0 || n > math.MaxInt32 {
			return nil, ""
		}
		return &n, ""
	}
	if strings.TrimLeft(u, "0123456789") == "" {
		return nil, "" // all digits but not parseable: out of range
	}
	return nil, u
}

// imageInfo is ImageStatus's verbose "info": what the store knows of the
// image beyond the CRI fields.
type imageInfo struct {
	ID             string        `json:"id"`
	ManifestDigest string        `json:"manifestDigest,omitempty"`
	ChainID        string        `json:"chainID,omitempty"`
	Layers         []layerInfo   `json:"layers"`
	Pulled         time.Time     `json:"pulled"`
	ImageSpec      ocispec.Image `json:"imageSpec"`
}

type layerInfo struct {
	ChainID string `json:"chainID"`
	DiffID  string `json:"diffID"`
	Size    int64  `json:"size"`
	CacheID string `json:"cacheID"`
}

func verboseImageInfo(img imagestore.Image) imageInfo {
	info := imageInfo{
		ID:             img.ID.String(),
		ManifestDigest: img.ManifestDigest.String(),
		Pulled:         img.Pulled,
		ImageSpec:      img.Config,
		Layers:         make([]layerInfo, 0, len(img.Layers)),
	}
	for _, l := range img.Layers {
		info.Layers = append(info.Layers, layerInfo{
			ChainID: l.ChainID.String(), DiffID: l.DiffID.String(), Size: l.Size, CacheID: l.CacheID,
		})
	}
	if n := len(img.Layers); n > 0 {
		info.ChainID = img.Layers[n-1].ChainID.String()
	}
	return info
}
