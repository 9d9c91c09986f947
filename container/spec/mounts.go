package spec

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	securejoin "github.com/cyphar/filepath-securejoin"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

const (
	etcHostname   = "/etc/hostname"
	etcHosts      = "/etc/hosts"
	etcResolvConf = "/etc/resolv.conf"
	devShm        = "/dev/shm"
)

// systemMounts are the kernel filesystems every container gets (containerd's
// populateDefaultUnixSpec). Their targets must not be symlinks in the image.
func systemMounts(privileged bool) []specs.Mount {
	sysOpt, cgOpt := "ro", "ro"
	if privileged {
		sysOpt, cgOpt = "rw", "rw"
	}
	return []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", sysOpt}},
		{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", cgOpt}},
	}
}

// mountOptionFlags are the CRI mount_options crid applies to a bind mount,
// the ones the Kubernetes API allows for a volume mount (bindMountOptions):
// each only restricts what the container can do through the mount (the
// runtime remounts the bind with the flag).
var mountOptionFlags = map[string]bool{"noexec": true, "nosuid": true, "nodev": true}

// setMounts fills s.Mounts and Linux.RootfsPropagation.
//
// Order: kernel filesystems, then /dev/shm, the sandbox's /etc files and the
// CRI mounts, shallowest target first so parents are mounted before children.
// A CRI mount replaces a default with the same target (or a parent target).
func setMounts(s *specs.Spec, in Input) error {
	sec := in.Linux.Security
	var (
		extra    []specs.Mount
		userDest = map[string]bool{}
		rootProp string
	)
	for _, m := range in.Mounts {
		dst, err := containerPath("mount", m.ContainerPath)
		if err != nil {
			return err
		}
		src, err := mountSource(m.HostPath)
		if err != nil {
			return err
		}
		opts := []string{"rbind"}
		switch m.Propagation {
		case PropagationPrivate:
			opts = append(opts, "rprivate")
		case PropagationHostToContainer:
			opts = append(opts, "rslave")
			if rootProp != "rshared" {
				rootProp = "rslave"
			}
		case PropagationBidirectional:
			opts = append(opts, "rshared")
			rootProp = "rshared"
		default:
			return fmt.Errorf("mount %s: unknown propagation %d: %w", dst, m.Propagation, errdefs.ErrInvalidArgument)
		}
		if m.Readonly {
			opts = append(opts, "ro")
		} else {
			opts = append(opts, "rw")
		}
		if m.RecursiveReadOnly {
			if !m.Readonly || m.Propagation != PropagationPrivate {
				return fmt.Errorf("mount %s: recursive read-only needs a read-only mount with private propagation: %w", dst, errdefs.ErrInvalidArgument)
			}
			opts = append(opts, "rro")
		}
		if m.ImageVolume {
			if !m.Readonly {
				return fmt.Errorf("mount %s: an image volume must be read-only: %w", dst, errdefs.ErrInvalidArgument)
			}
			opts = append(opts, "nosuid", "nodev")
		}
		for _, o := range m.Options {
			if !mountOptionFlags[o] {
				return fmt.Errorf("mount %s: mount option %q is not allowed (allowed: noexec, nosuid, nodev): %w",
					dst, o, errdefs.ErrInvalidArgument)
			}
			if !slices.Contains(opts, o) {
				opts = append(opts, o)
			}
		}
		userDest[dst] = true
		extra = append(extra, specs.Mount{Destination: dst, Type: "bind", Source: src, Options: opts})
	}

	etcOpt := "rw"
	if sec.ReadonlyRootfs {
		etcOpt = "ro"
	}
	for _, f := range []struct{ dst, src string }{
		{etcHostname, in.Sandbox.HostnamePath},
		{etcHosts, in.Sandbox.HostsPath},
		{etcResolvConf, in.Sandbox.ResolvConfPath},
	} {
		if f.src == "" || userDest[f.dst] {
			continue
		}
		extra = append(extra, specs.Mount{Destination: f.dst, Type: "bind", Source: f.src, Options: []string{"rbind", "rprivate", etcOpt}})
	}

	system := systemMounts(sec.Privileged)
	if !userDest[devShm] {
		switch {
		case sec.Namespaces.IPC == NamespaceNode || in.Sandbox.HostIPC:
			extra = append(extra, specs.Mount{Destination: devShm, Type: "bind", Source: devShm, Options: []string{"rbind", "rprivate", "rw"}})
		case in.Sandbox.ShmPath != "":
			extra = append(extra, specs.Mount{Destination: devShm, Type: "bind", Source: in.Sandbox.ShmPath, Options: []string{"rbind", "rprivate", "rw"}})
		default:
			system = append(system, specs.Mount{Destination: devShm, Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}})
		}
	}
	system = slices.DeleteFunc(system, func(m specs.Mount) bool {
		for d := range userDest {
			if m.Destination == d || d == "/" || strings.HasPrefix(m.Destination, d+"/") {
				return true
			}
		}
		return false
	})
	for _, m := range system {
		if err := checkNoSymlink(in.RootfsPath, m.Destination); err != nil {
			return err
		}
	}
	// Resolve targets against the image only where the image is what runc
	// will find there: not under /dev, /proc or /sys (fresh kernel/tmpfs
	// mounts) nor under another mount's target (runc resolves those in the
	// live mount tree itself).
	parents := []string{"/dev", "/proc", "/sys"}
	for _, m := range extra {
		parents = append(parents, m.Destination)
	}
	for i := range extra {
		if underAny(extra[i].Destination, parents) {
			continue
		}
		dst, err := resolveInRoot(in.RootfsPath, extra[i].Destination)
		if err != nil {
			return err
		}
		extra[i].Destination = dst
	}
	slices.SortStableFunc(extra, func(a, b specs.Mount) int {
		return depth(a.Destination) - depth(b.Destination)
	})
	s.Mounts = append(system, extra...)
	s.Linux.RootfsPropagation = rootProp
	return nil
}

// underAny reports whether p is strictly below one of dirs.
func underAny(p string, dirs []string) bool {
	for _, d := range dirs {
		if d != "/" && strings.HasPrefix(p, d+"/") {
			return true
		}
	}
	return false
}

func depth(p string) int {
	if p == "/" {
		return 0
	}
	return strings.Count(p, "/")
}

// containerPath validates a path inside the container: absolute, without
// ".." elements or NUL bytes. It returns the cleaned path.
func containerPath(what, p string) (string, error) {
	if p == "" || !filepath.IsAbs(p) || strings.ContainsRune(p, 0) {
		return "", fmt.Errorf("%s target %q must be an absolute path: %w", what, p, errdefs.ErrInvalidArgument)
	}
	if slices.Contains(strings.Split(p, "/"), "..") {
		return "", fmt.Errorf("%s target %q must not contain \"..\": %w", what, p, errdefs.ErrInvalidArgument)
	}
	if p = filepath.Clean(p); p == "/" {
		return "", fmt.Errorf("%s target must not be the container root: %w", what, errdefs.ErrInvalidArgument)
	}
	return p, nil
}

// mountSource checks a host path (trusted: it comes from kubelet) exists and
// resolves its symlinks, like containerd does.
func mountSource(p string) (string, error) {
	if p == "" || !filepath.IsAbs(p) {
		return "", fmt.Errorf("mount source %q must be an absolute path: %w", p, errdefs.ErrInvalidArgument)
	}
	src, err := filepath.EvalSymlinks(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("mount source %s does not exist: %w", p, errdefs.ErrInvalidArgument)
		}
		return "", fmt.Errorf("resolve mount source %s: %w", p, err)
	}
	return src, nil
}

// resolveInRoot resolves dst inside rootfs as if rootfs were "/", so an image
// symlink (e.g. /var/run -> /run, or a hostile /data -> /etc) is followed
// within the rootfs and never to the host (CVE-2026-41579). It returns the
// container path runc should mount on.
func resolveInRoot(rootfs, dst string) (string, error) {
	p, err := securejoin.SecureJoin(rootfs, dst)
	if err != nil {
		return "", fmt.Errorf("resolve mount target %s in rootfs: %v: %w", dst, err, errdefs.ErrInvalidArgument)
	}
	rel, err := filepath.Rel(filepath.Clean(rootfs), p)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", fmt.Errorf("mount target %s escapes the rootfs: %w", dst, errdefs.ErrInvalidArgument)
	}
	return filepath.Join("/", rel), nil
}

// checkNoSymlink refuses a runtime-owned target (/proc, /dev, /sys, ...) when
// the image made it, or one of its parents, a symlink: runc must mount those
// exactly where the kernel expects them, and a symlinked /dev once let runc
// touch host files (CVE-2026-41579). Missing components are fine: runc
// creates them.
func checkNoSymlink(rootfs, dst string) error {
	cur := rootfs
	for _, c := range strings.Split(strings.TrimPrefix(dst, "/"), "/") {
		cur = filepath.Join(cur, c)
		fi, err := os.Lstat(cur)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return fmt.Errorf("check mount target %s: %w", dst, err)
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			rel, _ := filepath.Rel(rootfs, cur)
			return fmt.Errorf("mount target %s: /%s is a symlink in the image rootfs: %w", dst, rel, errdefs.ErrInvalidArgument)
		}
		if !fi.IsDir() {
			return fmt.Errorf("mount target %s: /%s is not a directory in the image rootfs: %w", dst, filepath.Base(cur), errdefs.ErrInvalidArgument)
		}
	}
	return nil
}
