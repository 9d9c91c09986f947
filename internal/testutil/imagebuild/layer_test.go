package imagebuild

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/require"
)

// readLayer decompresses a built layer and returns its tar headers and the
// bodies of regular files, in archive order.
func readLayer(t *testing.T, l BuiltLayer) ([]*tar.Header, map[string]string) {
	t.Helper()
	f, err := l.Open()
	require.NoError(t, err)
	defer f.Close()
	blob, err := io.ReadAll(f)
	require.NoError(t, err)
	require.Equal(t, l.Digest, digest.FromBytes(blob), "blob digest")
	require.EqualValues(t, l.Size, len(blob))

	var r io.Reader = bytes.NewReader(blob)
	switch l.Compression {
	case Gzip:
		zr, err := gzip.NewReader(r) // the standard library's reader
		require.NoError(t, err)
		require.Empty(t, zr.Name, "gzip header name")
		require.True(t, zr.ModTime.IsZero(), "gzip header mtime %v", zr.ModTime)
		r = zr
	case Zstd:
		zr, err := zstd.NewReader(r)
		require.NoError(t, err)
		defer zr.Close()
		r = zr
	}
	raw, err := io.ReadAll(r)
	require.NoError(t, err)
	require.Equal(t, l.DiffID, digest.FromBytes(raw), "diff ID")
	require.EqualValues(t, l.UncompressedSize, len(raw))

	var hdrs []*tar.Header
	bodies := map[string]string{}
	tr := tar.NewReader(bytes.NewReader(raw))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		hdrs = append(hdrs, h)
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			require.NoError(t, err)
			bodies[h.Name] = string(b)
		}
	}
	return hdrs, bodies
}

func names(hdrs []*tar.Header) []string {
	out := make([]string, len(hdrs))
	for i, h := range hdrs {
		out[i] = h.Name
	}
	return out
}

func buildLayer(t *testing.T, l Layer) BuiltLayer {
	t.Helper()
	b, err := NewBuilder(t.TempDir())
	require.NoError(t, err)
	img, err := b.Build(t.Context(), Image{Layers: []Layer{l}})
	require.NoError(t, err)
	require.Len(t, img.Layers, 1)
	return img.Layers[0]
}

func TestLayerWhiteoutAndOpaque(t *testing.T) {
	l := buildLayer(t, Layer{Entries: []Entry{
		File("data/dir/z", "z\n", 0o644),
		Opaque("/data/dir"),
		Whiteout("data/a"),
		Whiteout("top"),
	}})
	hdrs, bodies := readLayer(t, l)
	// Sorted by path, parents added; the opaque marker precedes the new
	// file of its directory.
	require.Equal(t, []string{
		".wh.top",
		"data/",
		"data/.wh.a",
		"data/dir/",
		"data/dir/.wh..wh..opq",
		"data/dir/z",
	}, names(hdrs))
	for _, h := range hdrs {
		switch h.Name {
		case ".wh.top", "data/.wh.a", "data/dir/.wh..wh..opq":
			require.Equal(t, byte(tar.TypeReg), h.Typeflag, h.Name)
			require.Zero(t, h.Size, h.Name)
		case "data/", "data/dir/":
			require.Equal(t, byte(tar.TypeDir), h.Typeflag, h.Name)
			require.EqualValues(t, 0o755, h.Mode, h.Name)
		}
		require.Equal(t, Epoch, h.ModTime.UTC(), h.Name)
		require.Zero(t, h.Uid)
		require.Empty(t, h.Uname)
	}
	require.Equal(t, "z\n", bodies["data/dir/z"])
}

func TestLayerEntryKinds(t *testing.T) {
	host := filepath.Join(t.TempDir(), "host")
	require.NoError(t, os.WriteFile(host, []byte("from host"), 0o600))
	raw := tar.Header{Typeflag: tar.TypeReg, Name: "../escape", Size: 4, Mode: 0o644, ModTime: Epoch}

	l := buildLayer(t, Layer{Compression: Zstd, Entries: []Entry{
		HostFile("usr/bin/tool", host, 0o755|fs.ModeSetuid).Owner(1000, 1001),
		Hardlink("a/link", "usr/bin/tool"), // sorts before its target
		Symlink("lib", "usr/lib"),
		CharDevice("dev/null", 1, 3, 0o666),
		BlockDevice("dev/loop9", 7, 9, 0o660),
		FIFO("run/fifo", 0o600),
		Dir("tmp", 0o777|fs.ModeSticky),
		File("etc/x", "x", 0o640).WithXattr("user.test", "v"),
	}})
	hdrs, bodies := readLayer(t, l)
	require.Equal(t, []string{
		"a/",
		"dev/", "dev/loop9", "dev/null",
		"etc/", "etc/x",
		"lib",
		"run/", "run/fifo",
		"tmp/",
		"usr/", "usr/bin/", "usr/bin/tool",
		"a/link",
	}, names(hdrs))
	byName := map[string]*tar.Header{}
	for _, h := range hdrs {
		byName[h.Name] = h
	}
	tool := byName["usr/bin/tool"]
	require.EqualValues(t, 0o4755, tool.Mode)
	require.Equal(t, 1000, tool.Uid)
	require.Equal(t, 1001, tool.Gid)
	require.Equal(t, "from host", bodies["usr/bin/tool"])
	require.Equal(t, byte(tar.TypeLink), byName["a/link"].Typeflag)
	require.Equal(t, "usr/bin/tool", byName["a/link"].Linkname)
	require.EqualValues(t, 0o4755, byName["a/link"].Mode, "hard link takes its target's mode")
	require.Equal(t, 1000, byName["a/link"].Uid)
	require.Equal(t, byte(tar.TypeSymlink), byName["lib"].Typeflag)
	require.Equal(t, "usr/lib", byName["lib"].Linkname)
	require.Equal(t, byte(tar.TypeChar), byName["dev/null"].Typeflag)
	require.EqualValues(t, 1, byName["dev/null"].Devmajor)
	require.EqualValues(t, 3, byName["dev/null"].Devminor)
	require.Equal(t, byte(tar.TypeBlock), byName["dev/loop9"].Typeflag)
	require.EqualValues(t, 7, byName["dev/loop9"].Devmajor)
	require.Equal(t, byte(tar.TypeFifo), byName["run/fifo"].Typeflag)
	require.EqualValues(t, 0o1777, byName["tmp/"].Mode)
	require.Equal(t, "v", byName["etc/x"].PAXRecords["SCHILY.xattr.user.test"])

	// Raw entries and verbatim layers keep hostile names and order.
	l = buildLayer(t, Layer{Verbatim: true, Entries: []Entry{
		File("z/child-before-parent", "", 0o644),
		Raw(raw, []byte("evil")),
		File("z/child-before-parent", "dup", 0o644),
	}})
	hdrs, _ = readLayer(t, l)
	require.Equal(t, []string{"z/child-before-parent", "../escape", "z/child-before-parent"}, names(hdrs))
}

func TestLayerRawTar(t *testing.T) {
	garbage := []byte("this is not a tar archive")
	l := buildLayer(t, Layer{Compression: Uncompressed, Tar: garbage})
	require.Equal(t, digest.FromBytes(garbage), l.DiffID)
	require.Equal(t, l.DiffID, l.Digest)
	require.Equal(t, ocispec.MediaTypeImageLayer, l.MediaType)
}

func TestBuildErrors(t *testing.T) {
	b, err := NewBuilder(t.TempDir())
	require.NoError(t, err)
	ctx := t.Context()
	for _, tc := range []struct {
		desc string
		img  Image
		want string
	}{
		{desc: "escaping path", img: Image{Layers: []Layer{{Entries: []Entry{File("../x", "", 0)}}}}, want: "escapes the root"},
		{desc: "root path", img: Image{Layers: []Layer{{Entries: []Entry{Dir("/", 0)}}}}, want: "empty or root"},
		{desc: "docker zstd", img: Image{MediaTypes: Docker, Layers: []Layer{{Compression: Zstd}}}, want: "no docker media type for zstd"},
		{desc: "hard link cycle", img: Image{Layers: []Layer{{Entries: []Entry{Hardlink("a", "b"), Hardlink("b", "a")}}}}, want: "cycle"},
		{desc: "tar and entries", img: Image{Layers: []Layer{{Tar: []byte{}, Entries: []Entry{Dir("a", 0)}}}}, want: "both Tar and Entries"},
		{desc: "missing host file", img: Image{Layers: []Layer{{Entries: []Entry{HostFile("a", "/nonexistent/file", 0)}}}}, want: "/nonexistent/file"},
		{desc: "raw without header", img: Image{Layers: []Layer{{Entries: []Entry{{Type: TypeRaw, Path: "x"}}}}}, want: "nil header"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			_, err := b.Build(ctx, tc.img)
			require.ErrorContains(t, err, tc.want)
		})
	}

	_, err = b.BuildIndex(ctx, Index{Images: []Image{{}, {}}})
	require.ErrorContains(t, err, "appears twice")
	_, err = b.BuildIndex(ctx, Index{})
	require.ErrorContains(t, err, "no images")

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	img, err := Bench(1, 1, true)
	require.NoError(t, err)
	_, err = b.Build(cancelled, img)
	require.ErrorIs(t, err, context.Canceled)
}

func TestGeneratedContent(t *testing.T) {
	for _, tc := range []struct {
		desc     string
		text     bool
		min, max float64
	}{
		{desc: "text", text: true, min: 3, max: 4},
		{desc: "random", text: false, min: 0.99, max: 1.01},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			l := buildLayer(t, Layer{Entries: []Entry{RandomFile("f", 8<<20+17, 42, tc.text)}})
			ratio := float64(l.UncompressedSize) / float64(l.Size)
			t.Logf("gzip ratio %.2f", ratio)
			require.GreaterOrEqual(t, ratio, tc.min)
			require.LessOrEqual(t, ratio, tc.max)

			_, bodies := readLayer(t, l)
			require.Len(t, bodies["f"], 8<<20+17)
			var again bytes.Buffer
			require.NoError(t, writeGenerated(t.Context(), &again, Generated{Seed: 42, Size: 8<<20 + 17, Text: tc.text}))
			require.Equal(t, sha256.Sum256([]byte(bodies["f"])), sha256.Sum256(again.Bytes()))
		})
	}
}
