package imagebuild

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// WriteOCILayout writes img as an OCI image layout in dir (created if
// needed): its blobs, an "oci-layout" file and an index.json with one entry,
// annotated with tag as org.opencontainers.image.ref.name when tag is set.
// An existing index.json is replaced.
func (i *BuiltImage) WriteOCILayout(dir, tag string) error {
	if err := writeImageBlobs(dir, i); err != nil {
		return fmt.Errorf("write OCI layout %s: %w", dir, err)
	}
	return writeLayoutIndex(dir, tag, i.Descriptor())
}

// WriteOCILayout writes x and all its images as an OCI image layout in dir,
// like [BuiltImage.WriteOCILayout].
func (x *BuiltIndex) WriteOCILayout(dir, tag string) error {
	for _, img := range x.Images {
		if err := writeImageBlobs(dir, img); err != nil {
			return fmt.Errorf("write OCI layout %s: %w", dir, err)
		}
	}
	if err := writeBlob(dir, x.Digest, x.Manifest); err != nil {
		return fmt.Errorf("write OCI layout %s: %w", dir, err)
	}
	return writeLayoutIndex(dir, tag, ocispec.Descriptor{MediaType: x.MediaType, Digest: x.Digest, Size: int64(len(x.Manifest))})
}

func writeImageBlobs(dir string, img *BuiltImage) error {
	if err := writeBlob(dir, img.ConfigDigest, img.Config); err != nil {
		return err
	}
	if err := writeBlob(dir, img.Digest, img.Manifest); err != nil {
		return err
	}
	for _, l := range img.Layers {
		if err := copyBlob(dir, l); err != nil {
			return err
		}
	}
	return nil
}

func layoutBlobPath(dir string, d digest.Digest) string {
	return filepath.Join(dir, "blobs", d.Algorithm().String(), d.Encoded())
}

func writeBlob(dir string, d digest.Digest, data []byte) error {
	p := layoutBlobPath(dir, d)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, data, 0o644)
}

// copyBlob hard-links a layer blob from the build cache, or copies it.
func copyBlob(dir string, l BuiltLayer) error {
	p := layoutBlobPath(dir, l.Digest)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	if _, err := os.Stat(p); err == nil {
		return nil
	}
	if err := os.Link(l.path, p); err == nil {
		return nil
	}
	src, err := l.Open()
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.Create(p)
	if err != nil {
		return err
	}
	_, err = io.Copy(dst, src)
	return errors.Join(err, dst.Close())
}

func writeLayoutIndex(dir, tag string, desc ocispec.Descriptor) error {
	desc.Platform = nil
	if tag != "" {
		desc.Annotations = map[string]string{ocispec.AnnotationRefName: tag}
	}
	index, err := json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{desc},
	})
	if err != nil {
		return err
	}
	layout, err := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, ocispec.ImageLayoutFile), layout, 0o644); err != nil {
		return fmt.Errorf("write OCI layout %s: %w", dir, err)
	}
	if err := os.WriteFile(filepath.Join(dir, ocispec.ImageIndexFile), index, 0o644); err != nil {
		return fmt.Errorf("write OCI layout %s: %w", dir, err)
	}
	return nil
}
