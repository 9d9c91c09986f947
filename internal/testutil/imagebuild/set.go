package imagebuild

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"
)

// ArchMarkerPath is the file in each image of the multiarch indexes that
// holds the image's platform (e.g. "linux/arm64/v8\n"). Only the host
// platform's image has a runnable busybox; the other one has just the marker.
const ArchMarkerPath = "/etc/crid-test-arch"

// Target is an image (or index) to push as Repo:Tag.
type Target struct {
	Repo  string
	Tag   string
	Image *Image // exactly one of Image and Index is set
	Index *Index
	// Upstream, if set, is the registry host this target stands in for
	// (e.g. "registry.k8s.io"): clients pull it as Upstream/Repo:Tag through
	// a mirror configuration ([WriteMirrorConfig]) that sends that host's
	// pulls to the registry the target was pushed to.
	Upstream string
}

// Ref returns "repo:tag".
func (t Target) Ref() string { return t.Repo + ":" + t.Tag }

// UpstreamRef returns "upstream/repo:tag", or "" without Upstream.
func (t Target) UpstreamRef() string {
	if t.Upstream == "" {
		return ""
	}
	return t.Upstream + "/" + t.Ref()
}

// Pushed is the result of [BuildAndPush].
type Pushed struct {
	// Ref is the full reference: "<registry host>/<repo>:<tag>".
	Ref       string
	MediaType string
	Digest    digest.Digest
	Image     *BuiltImage // set for a single-platform target
	Index     *BuiltIndex // set for an index target
	// UpstreamRef is the name clients pull through a mirror, or "".
	UpstreamRef string
}

// BuildAndPush builds t and pushes it.
func BuildAndPush(ctx context.Context, b *Builder, p *Pusher, t Target) (*Pushed, error) {
	out := &Pushed{Ref: p.Host() + "/" + t.Ref(), UpstreamRef: t.UpstreamRef()}
	switch {
	case t.Image != nil && t.Index == nil:
		img, err := b.Build(ctx, *t.Image)
		if err != nil {
			return nil, fmt.Errorf("build %s: %w", t.Ref(), err)
		}
		if err := p.PushImage(ctx, t.Repo, t.Tag, img); err != nil {
			return nil, err
		}
		out.MediaType, out.Digest, out.Image = img.MediaType, img.Digest, img
	case t.Index != nil && t.Image == nil:
		idx, err := b.BuildIndex(ctx, *t.Index)
		if err != nil {
			return nil, fmt.Errorf("build %s: %w", t.Ref(), err)
		}
		if err := p.PushIndex(ctx, t.Repo, t.Tag, idx); err != nil {
			return nil, err
		}
		out.MediaType, out.Digest, out.Index = idx.MediaType, idx.Digest, idx
	default:
		return nil, fmt.Errorf("target %s: set exactly one of Image and Index", t.Ref())
	}
	return out, nil
}

var sets = map[string]func() ([]Target, error){
	"basic":   basicSet,
	"bench":   benchSet,
	"critest": critestSet,
}

// SetNames returns the names accepted by [Set].
func SetNames() []string {
	return slices.Sorted(maps.Keys(sets))
}

// Set returns the named set of test images:
//
// "basic":
//   - crid-test/busybox:latest: [Busybox], Docker media types, gzip.
//   - crid-test/busybox-oci:latest: the same files, OCI media types, zstd.
//   - crid-test/multiarch:latest: OCI index of the host platform (busybox
//     plus [ArchMarkerPath]) and one other platform (linux/arm64/v8 on amd64
//     hosts, linux/amd64 elsewhere) holding only the marker.
//   - crid-test/multiarch-docker:latest: the same as a Docker manifest list.
//   - crid-test/layered:latest: OCI, 4 layers: busybox; /data/a, /data/b,
//     /data/dir/{x,y}; whiteout of /data/a, opaque /data/dir with a new
//     /data/dir/z; an uncompressed layer adding /data/c.
//
// "bench": crid-test/bench-compressible:latest and
// crid-test/bench-random:latest, each [Bench](200, 5, …).
//
// "critest": every image critest v1.37.0 pulls, under its upstream name
// (see [CritestTargets]).
func Set(name string) ([]Target, error) {
	f, ok := sets[name]
	if !ok {
		return nil, fmt.Errorf("unknown image set %q (known: %s)", name, strings.Join(SetNames(), ", "))
	}
	return f()
}

func basicSet() ([]Target, error) {
	bb, arch, err := BusyboxLayer()
	if err != nil {
		return nil, err
	}
	cfg := Config{Cmd: []string{"sh"}, Env: []string{BusyboxEnvPath}}
	host := Platform{OS: "linux", Architecture: arch}
	other := Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}
	if arch != "amd64" {
		other = Platform{OS: "linux", Architecture: "amd64"}
	}
	marker := func(p Platform) Layer {
		return Layer{Entries: []Entry{File(ArchMarkerPath, p.String()+"\n", 0o644)}}
	}
	multi := func(mt MediaTypes) *Index {
		return &Index{MediaTypes: mt, Images: []Image{
			{Layers: []Layer{bb, marker(host)}, Config: cfg, Platform: host},
			{Layers: []Layer{marker(other)}, Config: cfg, Platform: other},
		}}
	}
	bbZstd := bb
	bbZstd.Compression = Zstd
	raw := Layer{Compression: Uncompressed, Entries: []Entry{File("data/c", "c\n", 0o644)}}
	return []Target{
		{Repo: "crid-test/busybox", Tag: "latest", Image: &Image{
			Layers: []Layer{bb}, Config: cfg, Platform: host, MediaTypes: Docker,
		}},
		{Repo: "crid-test/busybox-oci", Tag: "latest", Image: &Image{
			Layers: []Layer{bbZstd}, Config: cfg, Platform: host, MediaTypes: OCI,
		}},
		{Repo: "crid-test/multiarch", Tag: "latest", Index: multi(OCI)},
		{Repo: "crid-test/multiarch-docker", Tag: "latest", Index: multi(Docker)},
		{Repo: "crid-test/layered", Tag: "latest", Image: &Image{
			Layers: []Layer{
				bb,
				{Entries: []Entry{
					File("data/a", "a\n", 0o644),
					File("data/b", "b\n", 0o644),
					File("data/dir/x", "x\n", 0o644),
					File("data/dir/y", "y\n", 0o644),
				}},
				{Entries: []Entry{
					Whiteout("data/a"),
					Opaque("data/dir"),
					File("data/dir/z", "z\n", 0o644),
				}},
				raw,
			},
			Config: cfg, Platform: host, MediaTypes: OCI,
		}},
	}, nil
}

func benchSet() ([]Target, error) {
	var out []Target
	for _, c := range []struct {
		repo         string
		compressible bool
	}{{"crid-test/bench-compressible", true}, {"crid-test/bench-random", false}} {
		img, err := Bench(200, 5, c.compressible)
		if err != nil {
			return nil, err
		}
		out = append(out, Target{Repo: c.repo, Tag: "latest", Image: &img})
	}
	return out, nil
}
