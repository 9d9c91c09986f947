package tartest

import (
	"archive/tar"
	"bytes"
	"fmt"
	"time"
)

// Epoch is the modification time of every entry built by the helpers below.
var Epoch = time.Unix(1_600_000_000, 0)

// Entry is one tar member: a header and, for regular files, its content.
type Entry struct {
	Header tar.Header
	Data   []byte
}

// Tar writes entries as a PAX tar stream.
func Tar(entries ...Entry) ([]byte, error) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		h := e.Header
		if h.Typeflag == tar.TypeReg && h.Size == 0 {
			h.Size = int64(len(e.Data))
		}
		if h.ModTime.IsZero() {
			h.ModTime = Epoch
		}
		if h.Format == tar.FormatUnknown {
			h.Format = tar.FormatPAX
		}
		if err := tw.WriteHeader(&h); err != nil {
			return nil, fmt.Errorf("write header %q: %w", h.Name, err)
		}
		if len(e.Data) > 0 {
			if _, err := tw.Write(e.Data); err != nil {
				return nil, fmt.Errorf("write %q: %w", h.Name, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// File is a regular file.
func File(name, content string, mode int64) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode}, Data: []byte(content)}
}

// Dir is a directory.
func Dir(name string, mode int64) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode}}
}

// Symlink is a symbolic link name → target.
func Symlink(name, target string) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}}
}

// Link is a hard link name → target (an earlier member's name).
func Link(name, target string) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, Mode: 0o644}}
}

// Char is a character device.
func Char(name string, major, minor int64) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeChar, Name: name, Mode: 0o666, Devmajor: major, Devminor: minor}}
}

// Block is a block device.
func Block(name string, major, minor int64) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeBlock, Name: name, Mode: 0o660, Devmajor: major, Devminor: minor}}
}

// Fifo is a named pipe.
func Fifo(name string) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeFifo, Name: name, Mode: 0o644}}
}

// Whiteout deletes name (a path relative to the layer root) from the layers
// below: it is the empty file dir/.wh.base.
func Whiteout(dir, base string) Entry {
	name := ".wh." + base
	if dir != "" {
		name = dir + "/" + name
	}
	return File(name, "", 0o644)
}

// Opaque marks dir as opaque: the layers below contribute nothing to it.
func Opaque(dir string) Entry {
	return File(dir+"/.wh..wh..opq", "", 0o644)
}

// WithOwner sets the entry's owner.
func (e Entry) WithOwner(uid, gid int) Entry {
	e.Header.Uid, e.Header.Gid = uid, gid
	return e
}

// WithXattr adds an extended attribute as a PAX SCHILY.xattr record.
func (e Entry) WithXattr(name, value string) Entry {
	recs := make(map[string]string, len(e.Header.PAXRecords)+1)
	for k, v := range e.Header.PAXRecords {
		recs[k] = v
	}
	recs["SCHILY.xattr."+name] = value
	e.Header.PAXRecords = recs
	return e
}

// WithModTime sets the entry's modification time.
func (e Entry) WithModTime(t time.Time) Entry {
	e.Header.ModTime = t
	return e
}
