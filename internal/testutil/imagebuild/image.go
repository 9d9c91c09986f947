package imagebuild

import (
	"archive/tar"
	"fmt"
	"io/fs"
	"maps"
	"runtime"
	"time"
)

// Epoch is the modification time written into every tar header and the
// "created" time of every image config, so that builds are reproducible.
var Epoch = time.Unix(0, 0).UTC()

// Compression selects how a layer blob is compressed. The zero value is Gzip.
type Compression uint8

const (
	// Gzip compresses with gzip (no name, no mtime in the header).
	Gzip Compression = iota
	// Zstd compresses with zstd; it needs OCI media types.
	Zstd
	// Uncompressed stores the plain tar; the blob digest equals the diff ID.
	Uncompressed
)

func (c Compression) String() string {
	switch c {
	case Gzip:
		return "gzip"
	case Zstd:
		return "zstd"
	case Uncompressed:
		return "uncompressed"
	}
	return fmt.Sprintf("Compression(%d)", uint8(c))
}

// MediaTypes selects the media type family of a manifest, index, config or
// layer. The zero value inherits from the enclosing object (layer ← image ←
// index); at the top level it means OCI.
type MediaTypes uint8

const (
	// Inherit takes the media types of the enclosing object (OCI at the top).
	Inherit MediaTypes = iota
	// Docker selects Docker image manifest v2 schema 2 and Docker manifest
	// lists.
	Docker
	// OCI selects the OCI image manifest, config, layer and index types.
	OCI
)

func (m MediaTypes) String() string {
	switch m {
	case Inherit:
		return "inherit"
	case Docker:
		return "docker"
	case OCI:
		return "oci"
	}
	return fmt.Sprintf("MediaTypes(%d)", uint8(m))
}

func (m MediaTypes) or(parent MediaTypes) MediaTypes {
	if m != Inherit {
		return m
	}
	if parent != Inherit {
		return parent
	}
	return OCI
}

// Platform is the platform an image is built for.
type Platform struct {
	OS           string
	Architecture string
	Variant      string
}

// String formats the platform as os/arch[/variant].
func (p Platform) String() string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// orDefault fills an empty platform with linux and the host architecture.
func (p Platform) orDefault() Platform {
	if p.OS == "" {
		p.OS = "linux"
	}
	if p.Architecture == "" {
		p.Architecture = runtime.GOARCH
	}
	return p
}

// Config is the runtime part of an image config.
type Config struct {
	Entrypoint []string
	Cmd        []string
	Env        []string
	User       string
	WorkingDir string
	StopSignal string
	// Volumes lists container paths, e.g. "/data".
	Volumes []string
	// ExposedPorts lists ports as "port/proto", e.g. "80/tcp".
	ExposedPorts []string
	Labels       map[string]string
}

// Image describes a single-platform image.
type Image struct {
	Layers   []Layer
	Config   Config
	Platform Platform // zero: linux/<host architecture>
	// MediaTypes of the manifest and config; Inherit means the index's, or
	// OCI for a top-level image.
	MediaTypes MediaTypes
}

// Index describes a multi-platform image: an OCI image index, or a Docker
// manifest list when MediaTypes is Docker. Each image must have a distinct
// platform; images with MediaTypes Inherit take the index's.
type Index struct {
	Images     []Image
	MediaTypes MediaTypes
}

// Layer describes one layer tar.
type Layer struct {
	Entries     []Entry
	Compression Compression
	// MediaTypes of the layer descriptor; Inherit means the image's.
	MediaTypes MediaTypes
	// Verbatim writes Entries in the given order and adds no missing parent
	// directories, for hostile or unusual archives.
	Verbatim bool
	// Tar, when non-nil, is the uncompressed layer archive used as is;
	// Entries must then be empty. It is for archives the tar writer refuses
	// to produce (truncated, garbage).
	Tar []byte
}

// EntryType is the kind of a layer [Entry].
type EntryType uint8

const (
	TypeFile        EntryType = iota // regular file
	TypeDir                          // directory
	TypeSymlink                      // symbolic link to Linkname
	TypeHardlink                     // hard link to the layer path Linkname
	TypeWhiteout                     // .wh.<name>: deletes Path from lower layers
	TypeOpaque                       // .wh..wh..opq in directory Path: hides its lower contents
	TypeCharDevice                   // character device Major:Minor
	TypeBlockDevice                  // block device Major:Minor
	TypeFIFO                         // named pipe
	TypeRaw                          // Header written as is, then Content
)

var entryTypeNames = [...]string{"file", "dir", "symlink", "hardlink", "whiteout", "opaque", "chardev", "blockdev", "fifo", "raw"}

func (t EntryType) String() string {
	if int(t) < len(entryTypeNames) {
		return entryTypeNames[t]
	}
	return fmt.Sprintf("EntryType(%d)", uint8(t))
}

// Entry is one member of a layer. Paths are relative to the image root; a
// leading "/" is ignored. Mode holds permission bits and may include
// fs.ModeSetuid, fs.ModeSetgid and fs.ModeSticky; it is written as given (the
// constructors pick the usual defaults).
type Entry struct {
	Type EntryType
	Path string
	Mode fs.FileMode
	UID  int
	GID  int
	// Content of a regular file (or the body of a raw entry).
	Content []byte
	// HostPath, if set, is a host file whose content is copied (TypeFile).
	HostPath string
	// Generated, if set, describes pseudo-random content (TypeFile).
	Generated *Generated
	// Linkname is the symlink target or the hard link's target path.
	Linkname     string
	Major, Minor int64
	// Xattrs are written as PAX SCHILY.xattr records.
	Xattrs map[string]string
	// Header is the verbatim header of a TypeRaw entry.
	Header *tar.Header
}

// Generated describes deterministic pseudo-random file content.
type Generated struct {
	Seed uint64
	Size int64
	// Text produces lines of pseudo-random words (compresses ~3-4× with
	// gzip) instead of uniformly random bytes (incompressible).
	Text bool
}

// File is a regular file with the given content.
func File(path, content string, mode fs.FileMode) Entry {
	return Entry{Type: TypeFile, Path: path, Content: []byte(content), Mode: mode}
}

// HostFile is a regular file whose content is copied from hostPath.
func HostFile(path, hostPath string, mode fs.FileMode) Entry {
	return Entry{Type: TypeFile, Path: path, HostPath: hostPath, Mode: mode}
}

// RandomFile is a 0644 regular file of size bytes of deterministic
// pseudo-random content; text selects word-like, compressible content.
func RandomFile(path string, size int64, seed uint64, text bool) Entry {
	return Entry{Type: TypeFile, Path: path, Mode: 0o644, Generated: &Generated{Seed: seed, Size: size, Text: text}}
}

// Dir is a directory.
func Dir(path string, mode fs.FileMode) Entry {
	return Entry{Type: TypeDir, Path: path, Mode: mode}
}

// Symlink is a symbolic link at path pointing to target.
func Symlink(path, target string) Entry {
	return Entry{Type: TypeSymlink, Path: path, Linkname: target, Mode: 0o777}
}

// Hardlink is a hard link at path to the file at target (a path in the
// image, in this layer or a lower one). Its header takes the mode and owner
// of a target in the same layer, as Docker writes them; set Mode to
// override.
func Hardlink(path, target string) Entry {
	return Entry{Type: TypeHardlink, Path: path, Linkname: target}
}

// Whiteout deletes path, inherited from lower layers, by writing the entry
// "<dir>/.wh.<name>".
func Whiteout(path string) Entry {
	return Entry{Type: TypeWhiteout, Path: path}
}

// Opaque marks directory dir opaque by writing "<dir>/.wh..wh..opq": the
// contents of dir in lower layers are hidden.
func Opaque(dir string) Entry {
	return Entry{Type: TypeOpaque, Path: dir}
}

// CharDevice is a character device node.
func CharDevice(path string, major, minor int64, mode fs.FileMode) Entry {
	return Entry{Type: TypeCharDevice, Path: path, Major: major, Minor: minor, Mode: mode}
}

// BlockDevice is a block device node.
func BlockDevice(path string, major, minor int64, mode fs.FileMode) Entry {
	return Entry{Type: TypeBlockDevice, Path: path, Major: major, Minor: minor, Mode: mode}
}

// FIFO is a named pipe.
func FIFO(path string, mode fs.FileMode) Entry {
	return Entry{Type: TypeFIFO, Path: path, Mode: mode}
}

// Raw writes hdr exactly as given (name, size, type, mode, times…) followed
// by body, for hostile cases such as "../escape" names or absolute link
// targets. hdr.Size must equal len(body) for the tar writer to accept it; use
// [Layer.Tar] for archives that are malformed at the byte level.
func Raw(hdr tar.Header, body []byte) Entry {
	return Entry{Type: TypeRaw, Path: hdr.Name, Header: &hdr, Content: body}
}

// Owner returns a copy of e owned by uid:gid.
func (e Entry) Owner(uid, gid int) Entry {
	e.UID, e.GID = uid, gid
	return e
}

// WithXattr returns a copy of e with the extended attribute key=value.
func (e Entry) WithXattr(key, value string) Entry {
	x := maps.Clone(e.Xattrs)
	if x == nil {
		x = map[string]string{}
	}
	x[key] = value
	e.Xattrs = x
	return e
}
