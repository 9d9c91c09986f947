package imagestore

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sameLength returns b with one byte changed.
func sameLength(b []byte, at int) []byte {
	out := bytes.Clone(b)
	out[at] ^= 0x01
	return out
}

func TestPullRejectsBadContent(t *testing.T) {
	twoLayers := func() imageSpec {
		return imageSpec{layers: []layerSpec{
			files("bottom", strings.Repeat("b", 3000)),
			files("top", strings.Repeat("t", 5000)),
		}}
	}
	type setup func(t *testing.T, e *testEnv) fixture
	push := func(spec imageSpec) setup {
		return func(t *testing.T, e *testEnv) fixture { return e.reg.push(t, "app", spec) }
	}
	serve := func(what func(f fixture) (digest.Digest, []byte)) setup {
		return func(t *testing.T, e *testEnv) fixture {
			f := e.reg.push(t, "app", twoLayers())
			d, b := what(f)
			e.reg.serve[d] = b
			return f
		}
	}
	layerBlob := func(e *testEnv, f fixture, i int) []byte { return e.reg.blobs[f.layers[i].Digest] }

	for _, tc := range []struct {
		desc    string
		opts    func(*Options)
		setup   func(t *testing.T, e *testEnv) fixture
		is      func(error) bool
		message string
		// removedSnapshot: the top layer was unpacked, then found bad and
		// its snapshot removed.
		removedSnapshot bool
		// namesLayer: the error names the top layer's digest.
		namesLayer bool
	}{
		{
			desc: "manifest digest mismatch",
			setup: func(t *testing.T, e *testEnv) fixture {
				f := e.reg.push(t, "app", twoLayers())
				e.reg.serve[f.manifest.Digest] = bytes.Replace(f.manifestB, []byte("schemaVersion"), []byte("schemaVersioN"), 1)
				return f
			},
			is: errdefs.IsDataLoss, message: "manifest: digest mismatch: got sha256:",
		},
		{
			desc: "manifest longer than its descriptor",
			setup: func(t *testing.T, e *testEnv) fixture {
				f := e.reg.push(t, "app", twoLayers())
				e.reg.serve[f.manifest.Digest] = append(bytes.Clone(f.manifestB), ' ')
				return f
			},
			is: errdefs.IsDataLoss, message: "more than the",
		},
		{
			desc: "manifest truncated",
			setup: func(t *testing.T, e *testEnv) fixture {
				f := e.reg.push(t, "app", twoLayers())
				e.reg.serve[f.manifest.Digest] = f.manifestB[:len(f.manifestB)-3]
				return f
			},
			is: errdefs.IsDataLoss, message: "truncated",
		},
		{
			desc: "manifest media type disagrees with its descriptor",
			setup: push(imageSpec{layers: twoLayers().layers, manifestMod: func(m map[string]any) {
				m["mediaType"] = mediaTypeDockerManifest
			}}),
			is: errdefs.IsInvalidArgument, message: `document says media type "application/vnd.docker.distribution.manifest.v2+json", its descriptor "application/vnd.oci.image.manifest.v1+json"`,
		},
		{
			desc: "manifest shaped like an index",
			setup: push(imageSpec{layers: twoLayers().layers, manifestMod: func(m map[string]any) {
				m["manifests"] = []any{}
			}}),
			is: errdefs.IsInvalidArgument, message: "has manifests",
		},
		{
			desc: "Docker schema 1",
			setup: func(t *testing.T, e *testEnv) fixture {
				f := e.reg.build(t, twoLayers())
				b := []byte(`{"schemaVersion":1,"name":"app","tag":"latest"}`)
				e.reg.tag(t, "app", ocispec.Descriptor{MediaType: mediaTypeDockerSchema1, Digest: e.reg.putBlob(b), Size: int64(len(b))})
				return f
			},
			is: errdefs.IsNotImplemented, message: "schema 1",
		},
		{
			desc:  "manifest over the size limit",
			opts:  func(o *Options) { o.MaxManifestSize = 100 },
			setup: push(twoLayers()),
			is:    errdefs.IsResourceExhausted, message: "exceeds the limit of 100 bytes",
		},
		{
			desc:  "config over the size limit",
			opts:  func(o *Options) { o.MaxConfigSize = 50 },
			setup: push(twoLayers()),
			is:    errdefs.IsResourceExhausted, message: "exceeds the limit of 50 bytes",
		},
		{
			desc:  "config digest mismatch",
			setup: serve(func(f fixture) (digest.Digest, []byte) { return f.config.Digest, sameLength(f.configData, 5) }),
			is:    errdefs.IsDataLoss, message: "config: digest mismatch",
		},
		{
			desc: "config with fewer diff-ids than layers",
			setup: push(imageSpec{layers: twoLayers().layers, configMod: func(c *ocispec.Image) {
				c.RootFS.DiffIDs = c.RootFS.DiffIDs[:1]
			}}),
			is: errdefs.IsInvalidArgument, message: "lists 1 diff-ids for the manifest's 2 layers",
		},
		{
			desc: "config of an artifact, not an image",
			setup: push(imageSpec{layers: twoLayers().layers, manifestMod: func(m map[string]any) {
				c := m["config"].(ocispec.Descriptor)
				c.MediaType = "application/vnd.cncf.helm.config.v1+json"
				m["config"] = c
			}}),
			is: errdefs.IsNotImplemented, message: "not a container image's",
		},
		{
			desc: "unsupported layer media type",
			setup: push(imageSpec{layers: twoLayers().layers, manifestMod: func(m map[string]any) {
				l := m["layers"].([]ocispec.Descriptor)
				l[1].MediaType = "application/vnd.oci.image.layer.v1.tar+gzip+encrypted"
			}}),
			is: errdefs.IsNotImplemented, message: "unsupported layer media type",
		},
		{
			// The gzip header's mtime is outside its CRC: a valid stream of
			// the same length whose digest differs.
			desc: "layer digest mismatch",
			setup: func(t *testing.T, e *testEnv) fixture {
				f := e.reg.push(t, "app", twoLayers())
				e.reg.serve[f.layers[1].Digest] = sameLength(layerBlob(e, f, 1), 4)
				return f
			},
			is: errdefs.IsDataLoss, message: "layer: digest mismatch: got sha256:", removedSnapshot: true,
		},
		{
			desc: "layer corrupt",
			setup: func(t *testing.T, e *testEnv) fixture {
				f := e.reg.push(t, "app", twoLayers())
				b := layerBlob(e, f, 1)
				e.reg.serve[f.layers[1].Digest] = sameLength(b, len(b)/2)
				return f
			},
			// The inflater turns the flipped bit into garbage the tar reader
			// rejects before the digest can be checked at the end.
			// (Spooled, it fails the digest check instead.) Either way the
			// error names the layer.
			is: func(error) bool { return true }, namesLayer: true,
		},
		{
			desc: "layer truncated",
			setup: func(t *testing.T, e *testEnv) fixture {
				f := e.reg.push(t, "app", twoLayers())
				b := layerBlob(e, f, 1)
				e.reg.serve[f.layers[1].Digest] = b[:len(b)-10]
				return f
			},
			is: errdefs.IsDataLoss, message: "truncated: got", namesLayer: true,
		},
		{
			desc: "layer longer than its descriptor",
			setup: func(t *testing.T, e *testEnv) fixture {
				f := e.reg.push(t, "app", twoLayers())
				e.reg.serve[f.layers[1].Digest] = append(bytes.Clone(layerBlob(e, f, 1)), 0)
				return f
			},
			is: errdefs.IsDataLoss, message: "more than the", namesLayer: true,
		},
		{
			desc: "diff-id mismatch",
			setup: push(imageSpec{layers: twoLayers().layers, configMod: func(c *ocispec.Image) {
				c.RootFS.DiffIDs[1] = digest.FromString("something else")
			}}),
			is: errdefs.IsDataLoss, message: "diff-id mismatch: got sha256:", removedSnapshot: true,
		},
		{
			desc:  "layer over the uncompressed cap",
			opts:  func(o *Options) { o.MaxLayerSize = 4096 },
			setup: push(twoLayers()),
			is:    errdefs.IsResourceExhausted, message: "uncompressed size exceeds the limit of 4096 bytes",
		},
		{
			desc: "layer missing from the registry",
			setup: func(t *testing.T, e *testEnv) fixture {
				f := e.reg.push(t, "app", twoLayers())
				delete(e.reg.blobs, f.layers[1].Digest)
				return f
			},
			is: errdefs.IsNotFound, message: "fetch layer", namesLayer: true,
		},
	} {
		for _, parallel := range []bool{true, false} {
			name := tc.desc
			if !parallel {
				name += "/sequential unpack"
			}
			t.Run(name, func(t *testing.T) {
				e := newEnv(t, tc.opts)
				e.unp.parallel = parallel
				f := tc.setup(t, e)
				_, err := e.pull("app")
				require.Error(t, err)
				assert.True(t, tc.is(err), "wrong class: %v", err)
				assert.ErrorContains(t, err, tc.message)
				if tc.namesLayer || tc.removedSnapshot {
					assert.ErrorContains(t, err, f.layers[1].Digest.String())
				}
				assert.Empty(t, e.s.List(testCtx(t)))
				assert.Empty(t, e.list("imagedb", "content", "sha256"))
				assert.Empty(t, e.list("imagedb", "metadata", "sha256"))
				assert.Empty(t, e.list("blobs", "sha256"))
				assert.JSONEq(t, `{"Repositories":{}}`, readOr(e, "repositories.json", `{"Repositories":{}}`))
				// With sequential unpacking the top layer is usually spooled
				// and rejected before it is unpacked.
				if tc.removedSnapshot && parallel {
					require.NotEmpty(t, e.unp.removed(), "the bad layer's snapshot was not removed")
					for _, k := range e.unp.removed() {
						assert.NotContains(t, e.unp.keys(), k)
					}
				}
				e.checkConsistent()

				if tc.opts != nil {
					return // the limit still applies
				}
				// The registry heals: the same pull now works.
				clear(e.reg.serve)
				good := e.reg.push(t, "app", twoLayers())
				img := e.mustPull("app")
				assert.Equal(t, good.config.Digest, img.ID)
				e.checkConsistent()
			})
		}
	}
}

func readOr(e *testEnv, name, def string) string {
	b, err := os.ReadFile(e.path(name))
	if err != nil {
		return def
	}
	return string(b)
}

func TestUncompressedLayerDiffIDIsItsDigest(t *testing.T) {
	e := newEnv(t, nil)
	l := files("a", "1")
	l.mediaType = ocispec.MediaTypeImageLayer
	f := e.reg.push(t, "app", imageSpec{layers: []layerSpec{l}, configMod: func(c *ocispec.Image) {
		c.RootFS.DiffIDs[0] = digest.FromString("other")
	}})
	_, err := e.pull("app")
	require.Error(t, err)
	assert.True(t, errdefs.IsDataLoss(err), "%v", err)
	assert.ErrorContains(t, err, "diff-id mismatch")
	assert.Zero(t, e.reg.fetchCount(f.layers[0].Digest), "rejected before the download")
	e.checkConsistent()
}

func TestDocumentMediaType(t *testing.T) {
	oci := []byte(`{"schemaVersion":2,"mediaType":"` + ocispec.MediaTypeImageManifest + `","config":{},"layers":[]}`)
	noField := []byte(`{"schemaVersion":2,"config":{},"layers":[]}`)
	index := []byte(`{"schemaVersion":2,"mediaType":"` + ocispec.MediaTypeImageIndex + `","manifests":[]}`)
	for _, tc := range []struct {
		desc, descType string
		doc            []byte
		want           string // "" means an error
	}{
		{"agree", ocispec.MediaTypeImageManifest, oci, ocispec.MediaTypeImageManifest},
		{"parameters are ignored", ocispec.MediaTypeImageManifest + "; charset=utf-8", oci, ocispec.MediaTypeImageManifest},
		{"generic content type", "application/json", oci, ocispec.MediaTypeImageManifest},
		{"document without the field", ocispec.MediaTypeImageManifest, noField, ocispec.MediaTypeImageManifest},
		{"disagree", mediaTypeDockerManifest, oci, ""},
		{"index passed off as a manifest", ocispec.MediaTypeImageManifest, []byte(`{"schemaVersion":2,"manifests":[]}`), ""},
		{"manifest passed off as an index", ocispec.MediaTypeImageIndex, noField, ""},
		{"index", ocispec.MediaTypeImageIndex, index, ocispec.MediaTypeImageIndex},
		{"no type anywhere", "", noField, ""},
		{"not JSON", ocispec.MediaTypeImageManifest, []byte("<html>"), ""},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			got, err := documentMediaType(ocispec.Descriptor{MediaType: tc.descType, Digest: digest.FromBytes(tc.doc)}, tc.doc)
			if tc.want == "" {
				require.Error(t, err)
				assert.True(t, errdefs.IsInvalidArgument(err), "%v", err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}
