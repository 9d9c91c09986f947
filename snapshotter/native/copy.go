package native

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

const dirFlags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC

// inode identifies a file across the names of its hard links.
type inode struct{ dev, ino uint64 }

// copier copies one tree. The source is a snapshot of this snapshotter,
// which nothing changes while it is copied; still, every step works on
// directory fds and never follows a symlink.
type copier struct {
	ctx   context.Context
	dst   int              // fd of the destination root
	links map[inode]string // first copy of each multiply-linked file, relative to dst
	buf   []byte           // for filesystems without copy_file_range
}

// copyTree copies the tree under src into the existing, empty directory
// dst, root attributes included.
func copyTree(ctx context.Context, src, dst string) error {
	sfd, err := unix.Open(src, dirFlags, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", src, err)
	}
	defer unix.Close(sfd)
	dfd, err := unix.Open(dst, dirFlags, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", dst, err)
	}
	defer unix.Close(dfd)
	c := &copier{ctx: ctx, dst: dfd, links: map[inode]string{}}
	if err := c.dir(sfd, dfd, ""); err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstat(sfd, &st); err != nil {
		return err
	}
	if err := c.fdMeta(sfd, dfd, &st); err != nil {
		return err
	}
	return unix.UtimesNanoAt(unix.AT_FDCWD, dst, []unix.Timespec{st.Atim, st.Mtim}, 0)
}

// dir copies the entries of the open directory sfd into dfd.
func (c *copier) dir(sfd, dfd int, rel string) error {
	names, err := readNames(sfd)
	if err != nil {
		return fmt.Errorf("read %s: %w", rel, err)
	}
	for _, name := range names {
		if err := c.ctx.Err(); err != nil {
			return err
		}
		if err := c.entry(sfd, dfd, rel, name); err != nil {
			return fmt.Errorf("copy %s: %w", path.Join(rel, name), err)
		}
	}
	return nil
}

// entry copies name from the directory sfd into dfd.
func (c *copier) entry(sfd, dfd int, rel, name string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(sfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	times := []unix.Timespec{st.Atim, st.Mtim}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		if err := unix.Mkdirat(dfd, name, 0o700); err != nil {
			return err
		}
		if err := c.subdir(sfd, dfd, rel, name, &st); err != nil {
			return err
		}
	case unix.S_IFREG:
		if st.Nlink > 1 {
			id := inode{uint64(st.Dev), st.Ino}
			if first, ok := c.links[id]; ok {
				return unix.Linkat(c.dst, first, dfd, name, 0)
			}
			c.links[id] = path.Join(rel, name)
		}
		if err := c.file(sfd, dfd, name, &st); err != nil {
			return err
		}
	case unix.S_IFLNK:
		buf := make([]byte, unix.PathMax)
		n, err := unix.Readlinkat(sfd, name, buf)
		if err != nil {
			return err
		}
		if err := unix.Symlinkat(string(buf[:n]), dfd, name); err != nil {
			return err
		}
		if err := c.pathMeta(sfd, dfd, name, &st, false); err != nil {
			return err
		}
	case unix.S_IFCHR, unix.S_IFBLK, unix.S_IFIFO:
		if err := unix.Mknodat(dfd, name, st.Mode, int(st.Rdev)); err != nil {
			return err
		}
		if err := c.pathMeta(sfd, dfd, name, &st, true); err != nil {
			return err
		}
	default: // sockets belong to the process that made them
		return nil
	}
	return unix.UtimesNanoAt(dfd, name, times, unix.AT_SYMLINK_NOFOLLOW)
}

// subdir copies directory name and then its attributes (after its
// children, so that they do not change its times).
func (c *copier) subdir(sfd, dfd int, rel, name string, st *unix.Stat_t) error {
	cs, err := unix.Openat(sfd, name, dirFlags, 0)
	if err != nil {
		return err
	}
	defer unix.Close(cs)
	cd, err := unix.Openat(dfd, name, dirFlags, 0)
	if err != nil {
		return err
	}
	defer unix.Close(cd)
	if err := c.dir(cs, cd, path.Join(rel, name)); err != nil {
		return err
	}
	return c.fdMeta(cs, cd, st)
}

// file copies a regular file's data and attributes.
func (c *copier) file(sfd, dfd int, name string, st *unix.Stat_t) error {
	in, err := unix.Openat(sfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(in)
	out, err := unix.Openat(dfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	err = c.data(in, out, st.Size)
	if err == nil {
		err = c.fdMeta(in, out, st)
	}
	if cerr := unix.Close(out); err == nil {
		err = cerr
	}
	return err
}

// data copies size bytes from in to out, in the kernel when it can.
func (c *copier) data(in, out int, size int64) error {
	for size > 0 {
		n, err := unix.CopyFileRange(in, nil, out, nil, int(min(size, 1<<30)), 0)
		if err == unix.EINTR {
			continue
		}
		if err == unix.EXDEV || err == unix.ENOSYS || err == unix.EINVAL || err == unix.EOPNOTSUPP {
			return c.readWrite(in, out)
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return nil // the source is shorter than it was
		}
		size -= int64(n)
	}
	return nil
}

func (c *copier) readWrite(in, out int) error {
	if c.buf == nil {
		c.buf = make([]byte, 1<<20)
	}
	for {
		n, err := unix.Read(in, c.buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			return err
		}
		for b := c.buf[:n]; len(b) > 0; {
			m, err := unix.Write(out, b)
			if err != nil && err != unix.EINTR {
				return err
			}
			b = b[max(m, 0):]
		}
	}
}

// fdMeta copies owner, mode and extended attributes between open files.
// chown comes first: it clears setuid bits and security.capability.
func (c *copier) fdMeta(in, out int, st *unix.Stat_t) error {
	if err := unix.Fchown(out, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	if err := unix.Fchmod(out, st.Mode&0o7777); err != nil {
		return err
	}
	return copyXattrs(fdXattrs(in), fdXattrs(out))
}

// pathMeta copies owner, mode (unless a symlink) and extended attributes
// of name, which was just created in dfd.
func (c *copier) pathMeta(sfd, dfd int, name string, st *unix.Stat_t, chmod bool) error {
	if err := unix.Fchownat(dfd, name, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	if chmod {
		if err := unix.Fchmodat(dfd, name, st.Mode&0o7777, 0); err != nil {
			return err
		}
	}
	return copyXattrs(pathXattrs(sfd, name), pathXattrs(dfd, name))
}

// xattrs reads and writes the extended attributes of one file, through an
// fd or, for symlinks and device nodes, through a directory fd and a name
// (lsetxattr and friends do not follow the last component).
type xattrs struct {
	fd   int
	path string
}

func fdXattrs(fd int) xattrs { return xattrs{fd: fd} }

func pathXattrs(dirfd int, name string) xattrs {
	return xattrs{fd: -1, path: "/proc/self/fd/" + strconv.Itoa(dirfd) + "/" + name}
}

func (x xattrs) list(buf []byte) (int, error) {
	if x.fd >= 0 {
		return unix.Flistxattr(x.fd, buf)
	}
	return unix.Llistxattr(x.path, buf)
}

func (x xattrs) get(attr string, buf []byte) (int, error) {
	if x.fd >= 0 {
		return unix.Fgetxattr(x.fd, attr, buf)
	}
	return unix.Lgetxattr(x.path, attr, buf)
}

func (x xattrs) set(attr string, val []byte) error {
	if x.fd >= 0 {
		return unix.Fsetxattr(x.fd, attr, val, 0)
	}
	return unix.Lsetxattr(x.path, attr, val, 0)
}

// copyXattrs copies every extended attribute of src to dst.
func copyXattrs(src, dst xattrs) error {
	size, err := src.list(nil)
	if errors.Is(err, unix.ENOTSUP) || size == 0 {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list xattrs: %w", err)
	}
	names := make([]byte, size)
	if size, err = src.list(names); err != nil {
		return fmt.Errorf("list xattrs: %w", err)
	}
	for attr := range strings.SplitSeq(strings.TrimRight(string(names[:size]), "\x00"), "\x00") {
		n, err := src.get(attr, nil)
		if err != nil {
			return fmt.Errorf("get xattr %s: %w", attr, err)
		}
		val := make([]byte, n)
		if n, err = src.get(attr, val); err != nil {
			return fmt.Errorf("get xattr %s: %w", attr, err)
		}
		if err := dst.set(attr, val[:n]); err != nil {
			return fmt.Errorf("set xattr %s: %w", attr, err)
		}
	}
	return nil
}

// readNames lists the directory open as fd through a new fd.
func readNames(fd int) ([]string, error) {
	dfd, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(dfd), ".")
	defer f.Close()
	return f.Readdirnames(-1)
}
