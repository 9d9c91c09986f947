package imagebuild

import (
	"archive/tar"
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
)

const (
	whiteoutPrefix = ".wh."
	opaqueName     = ".wh..wh..opq"
)

// member is an entry resolved to its tar name.
type member struct {
	e    Entry
	name string // tar name, "dir/" for directories
	key  string // sort key: name without trailing slash
}

// tarName returns the archive name of a non-raw entry.
func tarName(e Entry) (string, error) {
	p := strings.TrimLeft(e.Path, "/")
	if p != "" {
		p = path.Clean(p)
	}
	if p == "" || p == "." {
		return "", fmt.Errorf("entry %s %q: empty or root path", e.Type, e.Path)
	}
	if p == ".." || strings.HasPrefix(p, "../") {
		return "", fmt.Errorf("entry %s %q: escapes the root (use Raw for hostile names)", e.Type, e.Path)
	}
	switch e.Type {
	case TypeDir:
		return p + "/", nil
	case TypeWhiteout:
		dir, base := path.Split(p)
		return dir + whiteoutPrefix + base, nil
	case TypeOpaque:
		return p + "/" + opaqueName, nil
	}
	return p, nil
}

// orderMembers resolves tar names and, unless the layer is verbatim, adds
// missing parent directories, sorts by path and moves hard links after their
// targets.
func orderMembers(l Layer) ([]member, error) {
	ms := make([]member, 0, len(l.Entries))
	for _, e := range l.Entries {
		if e.Type == TypeRaw {
			if e.Header == nil {
				return nil, fmt.Errorf("raw entry %q: nil header", e.Path)
			}
			ms = append(ms, member{e: e, name: e.Header.Name, key: strings.TrimSuffix(e.Header.Name, "/")})
			continue
		}
		name, err := tarName(e)
		if err != nil {
			return nil, err
		}
		ms = append(ms, member{e: e, name: name, key: strings.TrimSuffix(name, "/")})
	}
	if l.Verbatim {
		return ms, nil
	}

	present := make(map[string]bool, len(ms))
	for _, m := range ms {
		present[m.key] = true
	}
	var parents []member
	for _, m := range ms {
		for dir := path.Dir(m.key); dir != "." && dir != "/" && !present[dir]; dir = path.Dir(dir) {
			present[dir] = true
			parents = append(parents, member{e: Dir(dir, 0o755), name: dir + "/", key: dir})
		}
	}
	ms = append(ms, parents...)
	slices.SortStableFunc(ms, func(a, b member) int { return cmp.Compare(a.key, b.key) })

	// A hard link must follow its target in the archive. Links whose target
	// is a later member of this layer wait for it; links to lower layers
	// stay in place.
	index := make(map[string]int, len(ms))
	for i, m := range ms {
		if _, dup := index[m.key]; !dup {
			index[m.key] = i
		}
	}
	waiting := map[string][]member{}
	emitted := make(map[string]bool, len(ms))
	out := make([]member, 0, len(ms))
	var emit func(m member)
	emit = func(m member) {
		out = append(out, m)
		emitted[m.key] = true
		ws := waiting[m.key]
		delete(waiting, m.key)
		for _, w := range ws {
			emit(w)
		}
	}
	for _, m := range ms {
		if m.e.Type == TypeHardlink {
			target := path.Clean(strings.TrimLeft(m.e.Linkname, "/"))
			if _, inLayer := index[target]; inLayer && !emitted[target] {
				waiting[target] = append(waiting[target], m)
				continue
			}
		}
		emit(m)
	}
	if len(out) != len(ms) {
		// Only hard-link cycles (a → b → a) can be left waiting.
		return nil, errors.New("hard links form a cycle")
	}
	return out, nil
}

// tarMode converts fs.FileMode permission and special bits to tar's c_mode.
func tarMode(m fs.FileMode) int64 {
	mode := int64(m.Perm())
	if m&fs.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	return mode
}

// writeTar writes the layer archive to w.
func writeTar(ctx context.Context, w io.Writer, l Layer) error {
	if l.Tar != nil {
		if len(l.Entries) != 0 {
			return errors.New("layer has both Tar and Entries")
		}
		_, err := w.Write(l.Tar)
		return err
	}
	ms, err := orderMembers(l)
	if err != nil {
		return err
	}
	// A hard link header carries its target's mode and owner, as Docker
	// writes them: some appliers chmod the link (so the shared inode) to the
	// header's mode.
	targets := make(map[string]Entry, len(ms))
	for _, m := range ms {
		if m.e.Type == TypeFile {
			targets[m.key] = m.e
		}
	}
	tw := tar.NewWriter(w)
	for _, m := range ms {
		if err := ctx.Err(); err != nil {
			return err
		}
		if m.e.Type == TypeHardlink && m.e.Mode == 0 {
			if t, ok := targets[path.Clean(strings.TrimLeft(m.e.Linkname, "/"))]; ok {
				m.e.Mode, m.e.UID, m.e.GID = t.Mode, t.UID, t.GID
			}
		}
		if err := writeMember(ctx, tw, m); err != nil {
			return fmt.Errorf("write %s %q: %w", m.e.Type, m.name, err)
		}
	}
	return tw.Close()
}

func writeMember(ctx context.Context, tw *tar.Writer, m member) error {
	e := m.e
	if e.Type == TypeRaw {
		hdr := *e.Header
		if err := tw.WriteHeader(&hdr); err != nil {
			return err
		}
		_, err := tw.Write(e.Content)
		return err
	}
	hdr := &tar.Header{
		Name:    m.name,
		Mode:    tarMode(e.Mode),
		Uid:     e.UID,
		Gid:     e.GID,
		ModTime: Epoch,
	}
	if len(e.Xattrs) > 0 {
		hdr.PAXRecords = make(map[string]string, len(e.Xattrs))
		for k, v := range e.Xattrs {
			hdr.PAXRecords["SCHILY.xattr."+k] = v
		}
	}
	var body func() error
	switch e.Type {
	case TypeFile:
		hdr.Typeflag = tar.TypeReg
		switch {
		case e.HostPath != "":
			f, err := os.Open(e.HostPath)
			if err != nil {
				return err
			}
			defer f.Close()
			st, err := f.Stat()
			if err != nil {
				return err
			}
			hdr.Size = st.Size()
			body = func() error {
				n, err := io.Copy(tw, bufio.NewReaderSize(f, 1<<20))
				if err == nil && n != hdr.Size {
					err = fmt.Errorf("host file %s changed size while copying", e.HostPath)
				}
				return err
			}
		case e.Generated != nil:
			hdr.Size = e.Generated.Size
			body = func() error { return writeGenerated(ctx, tw, *e.Generated) }
		default:
			hdr.Size = int64(len(e.Content))
			body = func() error { _, err := tw.Write(e.Content); return err }
		}
	case TypeDir:
		hdr.Typeflag = tar.TypeDir
	case TypeSymlink:
		hdr.Typeflag = tar.TypeSymlink
		hdr.Linkname = e.Linkname
	case TypeHardlink:
		hdr.Typeflag = tar.TypeLink
		hdr.Linkname = path.Clean(strings.TrimLeft(e.Linkname, "/"))
	case TypeWhiteout, TypeOpaque:
		hdr.Typeflag = tar.TypeReg
	case TypeCharDevice, TypeBlockDevice:
		hdr.Typeflag = tar.TypeChar
		if e.Type == TypeBlockDevice {
			hdr.Typeflag = tar.TypeBlock
		}
		hdr.Devmajor, hdr.Devminor = e.Major, e.Minor
	case TypeFIFO:
		hdr.Typeflag = tar.TypeFifo
	default:
		return fmt.Errorf("unknown entry type %d", e.Type)
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if body != nil {
		return body()
	}
	return nil
}
