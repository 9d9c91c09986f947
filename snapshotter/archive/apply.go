package archive

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/crid-dev/crid/internal/log"
	"github.com/crid-dev/crid/snapshotter"
)

// WhiteoutMode selects how whiteout entries are applied.
type WhiteoutMode int

const (
	// OverlayWhiteouts writes whiteouts the way overlayfs reads them: the
	// root is a fresh layer directory that will be an overlay lower or upper.
	OverlayWhiteouts WhiteoutMode = iota + 1
	// NativeWhiteouts carries whiteouts out: the root holds a copy of the
	// layers below, and whiteouts delete from it.
	NativeWhiteouts
)

const (
	// copyBufferSize is the size of the pooled buffer file data is copied
	// through: large enough that a typical file is one read and one write.
	copyBufferSize = 1 << 20
	// maxCachedDirs bounds the open directory fds one Apply keeps.
	maxCachedDirs = 256
	// dirFlags opens a directory for *at calls, fchown, fchmod, fsetxattr
	// and futimens, refusing a symlink in the last component.
	dirFlags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	// maxID is the largest UID or GID a layer may use: (uid_t)-1 means
	// "unchanged" to chown(2) and larger values do not fit a uid_t.
	maxID = 1<<32 - 2
)

var bufPool = sync.Pool{New: func() any {
	b := make([]byte, copyBufferSize)
	return &b
}}

// Apply extracts the uncompressed layer tar read from r into the directory
// root and returns the bytes of file data it wrote and the inodes it
// created. It reads r to its end, past the tar's end-of-archive marker, so
// that a digest computed over r covers the whole stream.
//
// See the package documentation for what is refused and how whiteouts are
// applied. On error root is left partly written.
func Apply(ctx context.Context, root string, r io.Reader, mode WhiteoutMode) (snapshotter.Usage, error) {
	if mode != OverlayWhiteouts && mode != NativeWhiteouts {
		return snapshotter.Usage{}, fmt.Errorf("whiteout mode %d: %w", mode, errdefs.ErrInvalidArgument)
	}
	rootfd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return snapshotter.Usage{}, fmt.Errorf("open %s: %w", root, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(rootfd, &st); err != nil {
		unix.Close(rootfd)
		return snapshotter.Usage{}, fmt.Errorf("stat %s: %w", root, err)
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	a := &applier{
		ctx:  ctx,
		mode: mode,
		root: dirEnt{fd: rootfd, setgid: st.Mode&unix.S_ISGID != 0},
		dirs: make(map[string]dirEnt),
		buf:  *bp,
		euid: unix.Geteuid(),
		egid: unix.Getegid(),
	}
	if mode == NativeWhiteouts {
		a.layer = make(map[string]struct{})
	}
	defer a.close()

	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		// ErrInsecurePath only comes with GODEBUG=tarinsecurepath=0; the
		// header is valid and cleanName applies crid's own rules.
		if err != nil && !errors.Is(err, tar.ErrInsecurePath) {
			return snapshotter.Usage{}, fmt.Errorf("read layer tar: %w", err)
		}
		if err := ctx.Err(); err != nil {
			return snapshotter.Usage{}, err
		}
		a.trimCache()
		if err := a.entry(hdr, tr); err != nil {
			return snapshotter.Usage{}, err
		}
	}
	if err := a.setDirTimes(); err != nil {
		return snapshotter.Usage{}, err
	}
	if _, err := io.CopyBuffer(io.Discard, r, a.buf); err != nil {
		return snapshotter.Usage{}, fmt.Errorf("read layer tar: %w", err)
	}
	return a.usage, nil
}

// dirEnt is an open directory inside the root.
type dirEnt struct {
	fd     int
	setgid bool // entries created in it take its group, subdirectories its setgid bit
}

// dirTime is a directory whose times are set once the whole tar is applied.
type dirTime struct {
	rel string
	ts  [2]unix.Timespec
}

// applier is the state of one Apply. It is used by one goroutine.
type applier struct {
	ctx        context.Context
	mode       WhiteoutMode
	root       dirEnt
	dirs       map[string]dirEnt // open directories by cleaned name
	buf        []byte
	euid, egid int
	usage      snapshotter.Usage
	times      []dirTime
	// layer holds every name this layer created (native mode only), so an
	// opaque marker can tell the layer's entries from its parent's.
	layer map[string]struct{}
}

// entry applies one tar member.
func (a *applier) entry(hdr *tar.Header, r io.Reader) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil
	}
	name, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	if isAUFSMeta(name) {
		return nil
	}
	if hdr.Uid < 0 || hdr.Uid > maxID || hdr.Gid < 0 || hdr.Gid > maxID {
		return refuse(hdr.Name, fmt.Sprintf("owner %d:%d out of range", hdr.Uid, hdr.Gid))
	}
	if name == "" {
		return a.rootDir(hdr)
	}
	dir, base := splitName(name)
	if strings.HasPrefix(base, whiteoutPrefix) {
		return a.whiteout(hdr, name, dir, base)
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeCont, tar.TypeGNUSparse:
		return a.regular(hdr, r, name, dir, base)
	case tar.TypeDir:
		return a.directory(hdr, name, dir, base)
	case tar.TypeSymlink:
		return a.symlink(hdr, name, dir, base)
	case tar.TypeLink:
		return a.hardlink(hdr, name, dir, base)
	case tar.TypeChar:
		if !allowedChar(hdr.Devmajor, hdr.Devminor) {
			return refuse(hdr.Name, fmt.Sprintf("character device %d:%d is not in the standard set", hdr.Devmajor, hdr.Devminor))
		}
		return a.node(hdr, name, dir, base, unix.S_IFCHR, unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)))
	case tar.TypeFifo:
		return a.node(hdr, name, dir, base, unix.S_IFIFO, 0)
	case tar.TypeBlock:
		return refuse(hdr.Name, "block devices are not allowed")
	}
	return refuse(hdr.Name, fmt.Sprintf("unsupported entry type %q", hdr.Typeflag))
}

// allowedChar reports whether major:minor is one of the character devices
// a container's /dev is expected to hold.
func allowedChar(major, minor int64) bool {
	switch major {
	case 1:
		return minor == 3 || minor == 5 || minor == 7 || minor == 8 || minor == 9
	case 5:
		return minor == 0 || minor == 1 || minor == 2
	}
	return false
}

// rootDir applies a member naming the root itself ("./" in most tars).
func (a *applier) rootDir(hdr *tar.Header) error {
	if hdr.Typeflag != tar.TypeDir {
		return refuse(hdr.Name, "only a directory may name the root")
	}
	mode := uint32(hdr.Mode) & 0o7777
	if err := unix.Fchown(a.root.fd, hdr.Uid, hdr.Gid); err != nil {
		return a.fail(hdr.Name, "chown", err)
	}
	if err := unix.Fchmod(a.root.fd, mode); err != nil {
		return a.fail(hdr.Name, "chmod", err)
	}
	a.root.setgid = mode&unix.S_ISGID != 0
	a.xattrs(hdr, hdr.Name, a.root.fd, dirEnt{}, "")
	a.times = append(a.times, dirTime{rel: "", ts: timespecs(hdr)})
	return nil
}

// regular writes a regular file with one open, its writes and one close.
func (a *applier) regular(hdr *tar.Header, r io.Reader, name, dir, base string) error {
	pd, err := a.dir(dir, true)
	if err != nil {
		return a.fail(name, "parent", err)
	}
	mode := uint32(hdr.Mode) & 0o7777
	var fd int
	err = a.retry(pd, name, base, func() (err error) {
		fd, err = unix.Openat(pd.fd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode&0o777)
		return err
	})
	if err != nil {
		return a.fail(name, "create", err)
	}
	err = a.fill(fd, hdr, r, name, pd, mode)
	if cerr := unix.Close(fd); err == nil && cerr != nil {
		err = a.fail(name, "close", cerr)
	}
	if err != nil {
		return err
	}
	a.usage.Size += hdr.Size
	a.usage.Inodes++
	a.created(name)
	return nil
}

// fill writes the file's data and metadata through its fd.
func (a *applier) fill(fd int, hdr *tar.Header, r io.Reader, name string, pd dirEnt, mode uint32) error {
	for left := hdr.Size; left > 0; {
		chunk := a.buf[:min(left, int64(len(a.buf)))]
		n, err := io.ReadFull(r, chunk)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("layer entry %s: read: %w", quote(name), err)
		}
		if err := writeAll(fd, chunk[:n]); err != nil {
			return a.fail(name, "write", err)
		}
		left -= int64(n)
		if err := a.ctx.Err(); err != nil {
			return err
		}
	}
	if a.needChown(hdr, pd) {
		if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
			return a.fail(name, "chown", err)
		}
	}
	// Always chmod: open(2) masked the mode with the process umask (which
	// any goroutine may change at any time), and chown clears the setuid
	// and setgid bits.
	if err := unix.Fchmod(fd, mode); err != nil {
		return a.fail(name, "chmod", err)
	}
	a.xattrs(hdr, name, fd, pd, "")
	ts := timespecs(hdr)
	if err := futimens(fd, &ts); err != nil {
		return a.fail(name, "set times", err)
	}
	return nil
}

// directory creates a directory, or gives an existing one the entry's
// metadata. Its times are set at the end.
func (a *applier) directory(hdr *tar.Header, name, dir, base string) error {
	pd, err := a.dir(dir, true)
	if err != nil {
		return a.fail(name, "parent", err)
	}
	mode := uint32(hdr.Mode) & 0o7777
	created := true
	err = unix.Mkdirat(pd.fd, base, mode&0o777)
	if err == unix.EEXIST {
		var st unix.Stat_t
		if err = unix.Fstatat(pd.fd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil {
			if st.Mode&unix.S_IFMT == unix.S_IFDIR {
				created = false
			} else if err = a.clear(pd, name, base); err == nil {
				err = unix.Mkdirat(pd.fd, base, mode&0o777)
			}
		}
	}
	if err != nil {
		return a.fail(name, "mkdir", err)
	}
	// What is at base is the directory just made or checked above: nothing
	// else writes to the tree during an Apply, so the path calls below act
	// on it and not on a symlink swapped in.
	if !created || a.needChown(hdr, pd) {
		if err := unix.Fchownat(pd.fd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return a.fail(name, "chown", err)
		}
	}
	if err := unix.Fchmodat(pd.fd, base, mode, 0); err != nil {
		return a.fail(name, "chmod", err)
	}
	if d, ok := a.dirs[name]; ok {
		d.setgid = mode&unix.S_ISGID != 0
		a.dirs[name] = d
	}
	a.xattrs(hdr, name, -1, pd, base)
	a.times = append(a.times, dirTime{rel: name, ts: timespecs(hdr)})
	if created {
		a.usage.Inodes++
	}
	a.created(name)
	return nil
}

// symlink creates a symbolic link. Its target is data: it is never
// resolved here.
func (a *applier) symlink(hdr *tar.Header, name, dir, base string) error {
	target := hdr.Linkname
	if target == "" || len(target) >= pathMax || strings.IndexByte(target, 0) >= 0 {
		return refuse(hdr.Name, "symlink target is empty, too long or holds a NUL byte")
	}
	pd, err := a.dir(dir, true)
	if err != nil {
		return a.fail(name, "parent", err)
	}
	if err := a.retry(pd, name, base, func() error { return unix.Symlinkat(target, pd.fd, base) }); err != nil {
		return a.fail(name, "symlink", err)
	}
	if err := a.finishNode(hdr, name, pd, base, false); err != nil {
		return err
	}
	a.usage.Inodes++
	a.created(name)
	return nil
}

// hardlink links name to an earlier member of the tar.
func (a *applier) hardlink(hdr *tar.Header, name, dir, base string) error {
	target, err := cleanName(hdr.Linkname)
	if err != nil {
		return refuse(hdr.Name, fmt.Sprintf("hard link target: %v", err))
	}
	if target == "" {
		return refuse(hdr.Name, "hard link to the root")
	}
	if target == name {
		return nil // a link to itself changes nothing
	}
	pd, err := a.dir(dir, true)
	if err != nil {
		return a.fail(name, "parent", err)
	}
	tdir, tbase := splitName(target)
	err = a.retry(pd, name, base, func() error {
		// Resolved on every try: clearing name may have closed the
		// target's directory fd.
		td, err := a.dir(tdir, false)
		if err != nil {
			return err
		}
		return unix.Linkat(td.fd, tbase, pd.fd, base, 0)
	})
	switch {
	case errors.Is(err, unix.ENOENT):
		return refuse(hdr.Name, fmt.Sprintf("hard link target %s does not exist in this layer", quote(hdr.Linkname)))
	case errors.Is(err, unix.EPERM):
		return refuse(hdr.Name, fmt.Sprintf("hard link target %s is a directory", quote(hdr.Linkname)))
	case err != nil:
		return a.fail(name, "link", err)
	}
	a.created(name)
	return nil
}

// node creates a character device or a FIFO.
func (a *applier) node(hdr *tar.Header, name, dir, base string, typ uint32, dev uint64) error {
	pd, err := a.dir(dir, true)
	if err != nil {
		return a.fail(name, "parent", err)
	}
	mode := uint32(hdr.Mode) & 0o7777
	if err := a.retry(pd, name, base, func() error { return unix.Mknodat(pd.fd, base, typ|mode&0o777, int(dev)) }); err != nil {
		return a.fail(name, "mknod", err)
	}
	if err := a.finishNode(hdr, name, pd, base, true); err != nil {
		return err
	}
	a.usage.Inodes++
	a.created(name)
	return nil
}

// finishNode sets the metadata of a symlink, device or FIFO just created at
// base in pd.
func (a *applier) finishNode(hdr *tar.Header, name string, pd dirEnt, base string, chmod bool) error {
	if a.needChown(hdr, pd) {
		if err := unix.Fchownat(pd.fd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return a.fail(name, "chown", err)
		}
	}
	if chmod {
		// Not a symlink: it was just created by mknodat.
		if err := unix.Fchmodat(pd.fd, base, uint32(hdr.Mode)&0o7777, 0); err != nil {
			return a.fail(name, "chmod", err)
		}
	}
	a.xattrs(hdr, name, -1, pd, base)
	ts := timespecs(hdr)
	if err := unix.UtimesNanoAt(pd.fd, base, ts[:], unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return a.fail(name, "set times", err)
	}
	return nil
}

// whiteout applies .wh.<name> and .wh..wh..opq members.
func (a *applier) whiteout(hdr *tar.Header, name, dir, base string) error {
	if base == opaqueMarker {
		return a.opaque(hdr, dir)
	}
	target := base[len(whiteoutPrefix):]
	if target == "" || target == "." || target == ".." {
		return refuse(hdr.Name, "whiteout of the root or a parent")
	}
	victim := joinName(dir, target)
	if a.mode == OverlayWhiteouts {
		pd, err := a.dir(dir, true)
		if err != nil {
			return a.fail(name, "parent", err)
		}
		if err := a.retry(pd, victim, target, func() error { return unix.Mknodat(pd.fd, target, unix.S_IFCHR, 0) }); err != nil {
			return a.fail(name, "whiteout", err)
		}
		if a.needChown(hdr, pd) {
			if err := unix.Fchownat(pd.fd, target, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return a.fail(name, "chown", err)
			}
		}
		a.usage.Inodes++
		return nil
	}
	pd, err := a.dir(dir, false)
	if errors.Is(err, unix.ENOENT) {
		return nil // nothing below to delete
	}
	if err != nil {
		return a.fail(name, "parent", err)
	}
	if err := a.clear(pd, victim, target); err != nil {
		return a.fail(name, "whiteout", err)
	}
	return nil
}

// opaque applies dir/.wh..wh..opq.
func (a *applier) opaque(hdr *tar.Header, dir string) error {
	if dir == "" {
		return refuse(hdr.Name, "opaque marker on the root")
	}
	if a.mode == OverlayWhiteouts {
		d, err := a.dir(dir, true)
		if err != nil {
			return a.fail(hdr.Name, "directory", err)
		}
		if err := unix.Fsetxattr(d.fd, "trusted.overlay.opaque", []byte("y"), 0); err != nil {
			return a.fail(hdr.Name, "set opaque", err)
		}
		return nil
	}
	d, err := a.dir(dir, false)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return a.fail(hdr.Name, "directory", err)
	}
	if err := a.clearOpaque(dir, d.fd); err != nil {
		return a.fail(hdr.Name, "opaque", err)
	}
	return nil
}

// clearOpaque removes from the directory rel (open as fd) every entry this
// layer did not create, and recurses into the directories it did create:
// below an opaque directory only the layer's own entries are visible.
func (a *applier) clearOpaque(rel string, fd int) error {
	ents, err := readDir(fd)
	if err != nil {
		return err
	}
	for _, e := range ents {
		child := joinName(rel, e.Name())
		if _, mine := a.layer[child]; !mine {
			if err := a.clear(dirEnt{fd: fd}, child, e.Name()); err != nil {
				return err
			}
			continue
		}
		if !e.IsDir() {
			continue
		}
		cfd, err := unix.Openat(fd, e.Name(), dirFlags, 0)
		if err != nil {
			return err
		}
		err = a.clearOpaque(child, cfd)
		unix.Close(cfd)
		if err != nil {
			return err
		}
	}
	return nil
}

// dir returns the open directory rel ("" for the root), resolving it one
// component at a time from its nearest cached ancestor without following
// symlinks. With create, missing directories are made with mode 0755, as
// tar does for parents it was not given. A missing directory without create
// is unix.ENOENT; a symlink or non-directory on the way is refused.
//
// rel itself is cached; directories on the way only while the cache has
// room, so a deep name never holds more than a few fds beyond the cache.
func (a *applier) dir(rel string, create bool) (dirEnt, error) {
	if rel == "" {
		return a.root, nil
	}
	if d, ok := a.dirs[rel]; ok {
		return d, nil
	}
	cur, start := a.root, 0
	for i := len(rel) - 1; i > 0; i-- {
		if rel[i] != '/' {
			continue
		}
		if d, ok := a.dirs[rel[:i]]; ok {
			cur, start = d, i+1
			break
		}
	}
	owned := false // cur is neither cached nor the root: close it when done
	for {
		end := strings.IndexByte(rel[start:], '/')
		last := end < 0
		if last {
			end = len(rel)
		} else {
			end += start
		}
		next, err := a.openDir(cur, rel[:end], rel[start:end], create)
		if owned {
			unix.Close(cur.fd)
		}
		if err != nil {
			return dirEnt{}, err
		}
		owned = !last && len(a.dirs) >= maxCachedDirs
		if !owned {
			a.dirs[rel[:end]] = next
		}
		if last {
			return next, nil
		}
		cur, start = next, end+1
	}
}

// openDir opens directory base (named rel) in pd, creating it if asked.
func (a *applier) openDir(pd dirEnt, rel, base string, create bool) (dirEnt, error) {
	fd, err := unix.Openat(pd.fd, base, dirFlags, 0)
	if err == unix.ENOENT && create {
		err = unix.Mkdirat(pd.fd, base, 0o755)
		if err == nil {
			a.usage.Inodes++
			a.created(rel)
			// A parent that tar was not given is 0755 whatever the umask
			// (plus the setgid bit mkdir inherited).
			err = unix.Fchmodat(pd.fd, base, 0o755|uint32(boolBit(pd.setgid, unix.S_ISGID)), 0)
		}
		if err == nil || err == unix.EEXIST {
			fd, err = unix.Openat(pd.fd, base, dirFlags, 0)
		}
	}
	if err == unix.ELOOP || err == unix.ENOTDIR {
		return dirEnt{}, fmt.Errorf("%s is a symlink or not a directory (never followed): %w", quote(rel), errdefs.ErrInvalidArgument)
	}
	if err != nil {
		return dirEnt{}, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return dirEnt{}, err
	}
	return dirEnt{fd: fd, setgid: st.Mode&unix.S_ISGID != 0}, nil
}

func boolBit(b bool, bit int) int {
	if b {
		return bit
	}
	return 0
}

// retry runs op, which creates base in pd; if something is in the way it
// removes it and runs op once more.
func (a *applier) retry(pd dirEnt, name, base string, op func() error) error {
	err := op()
	if err != unix.EEXIST {
		return err
	}
	if err := a.clear(pd, name, base); err != nil {
		return err
	}
	return op()
}

// clear removes name (base in pd), recursively if it is a directory.
func (a *applier) clear(pd dirEnt, name, base string) error {
	wasDir, err := removeAt(pd.fd, base)
	if wasDir {
		a.forget(name)
	}
	return err
}

// forget closes the cached fds of directory rel and everything under it.
// The fd of rel's parent stays valid.
func (a *applier) forget(rel string) {
	for k, d := range a.dirs {
		if k == rel || (len(k) > len(rel) && k[len(rel)] == '/' && strings.HasPrefix(k, rel)) {
			unix.Close(d.fd)
			delete(a.dirs, k)
		}
	}
}

// trimCache empties the directory cache when it is full. It runs only
// between entries, so no fd handed out for the current entry is closed.
func (a *applier) trimCache() {
	if len(a.dirs) <= maxCachedDirs {
		return
	}
	for k, d := range a.dirs {
		unix.Close(d.fd)
		delete(a.dirs, k)
	}
}

// created records that this layer made name (native mode needs it for
// opaque markers).
func (a *applier) created(name string) {
	if a.layer != nil {
		a.layer[name] = struct{}{}
	}
}

// needChown reports whether an entry just created in pd needs a chown:
// unless the parent is setgid, a new inode belongs to the effective UID and
// GID, and tars usually say just that (0:0).
func (a *applier) needChown(hdr *tar.Header, pd dirEnt) bool {
	return pd.setgid || hdr.Uid != a.euid || hdr.Gid != a.egid
}

// xattrs applies the member's SCHILY.xattr records except trusted.*, best
// effort, through fd if it is open or else through pd and base.
func (a *applier) xattrs(hdr *tar.Header, name string, fd int, pd dirEnt, base string) {
	for k, v := range hdr.PAXRecords {
		attr, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok || strings.HasPrefix(attr, "trusted.") {
			continue
		}
		var err error
		if fd >= 0 {
			err = unix.Fsetxattr(fd, attr, []byte(v), 0)
		} else {
			// There is no lsetxattrat(2) before Linux 6.13; the magic link
			// names the directory fd, and lsetxattr does not follow base.
			err = unix.Lsetxattr("/proc/self/fd/"+strconv.Itoa(pd.fd)+"/"+base, attr, []byte(v), 0)
		}
		if err != nil {
			log.G(a.ctx).Debug("layer xattr not applied", "entry", name, "xattr", attr, "error", err)
		}
	}
}

// setDirTimes sets the times of every directory member, now that nothing
// more is created in them. A directory removed or replaced by a later
// member is skipped.
func (a *applier) setDirTimes() error {
	for i := range a.times {
		t := &a.times[i]
		a.trimCache()
		d, err := a.dir(t.rel, false)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, errdefs.ErrInvalidArgument) {
			continue
		}
		if err != nil {
			return a.fail(t.rel, "open directory", err)
		}
		if err := futimens(d.fd, &t.ts); err != nil {
			return a.fail(t.rel, "set times", err)
		}
	}
	return nil
}

// close releases every fd the applier holds.
func (a *applier) close() {
	for k, d := range a.dirs {
		unix.Close(d.fd)
		delete(a.dirs, k)
	}
	unix.Close(a.root.fd)
}

// fail wraps a system error with the member and the step that failed.
func (a *applier) fail(name, step string, err error) error {
	return fmt.Errorf("layer entry %s: %s: %w", quote(name), step, err)
}

// timespecs returns the member's access and modification times. Times
// before 1970 become 1970.
func timespecs(hdr *tar.Header) [2]unix.Timespec {
	at := hdr.AccessTime
	if at.IsZero() {
		at = hdr.ModTime
	}
	return [2]unix.Timespec{toTimespec(at), toTimespec(hdr.ModTime)}
}

func toTimespec(t time.Time) unix.Timespec {
	s := t.Unix()
	if s < 0 {
		return unix.Timespec{}
	}
	return unix.Timespec{Sec: s, Nsec: int64(t.Nanosecond())}
}

// writeAll writes b to fd, continuing after short writes.
func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}
