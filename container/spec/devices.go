package spec

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// setDevices adds the requested host devices (and, when privileged, every
// host device) with matching cgroup allow rules.
func setDevices(s *specs.Spec, in Input) error {
	seen := map[string]bool{}
	for _, d := range in.Devices {
		dst, err := containerPath("device", d.ContainerPath)
		if err != nil {
			return err
		}
		// Under /dev the target is in runc's fresh tmpfs, not the image.
		if !underAny(dst, []string{"/dev"}) {
			if dst, err = resolveInRoot(in.RootfsPath, dst); err != nil {
				return err
			}
		}
		perms := d.Permissions
		if perms == "" {
			perms = "rwm"
		}
		if strings.Trim(perms, "rwm") != "" {
			return fmt.Errorf("device %s: invalid permissions %q: %w", d.HostPath, perms, errdefs.ErrInvalidArgument)
		}
		dev, err := deviceFromPath(d.HostPath)
		if err != nil {
			return err
		}
		dev.Path = dst
		seen[dst] = true
		s.Linux.Devices = append(s.Linux.Devices, dev)
		s.Linux.Resources.Devices = append(s.Linux.Resources.Devices, specs.LinuxDeviceCgroup{
			Allow: true, Type: dev.Type, Major: &dev.Major, Minor: &dev.Minor, Access: perms,
		})
	}
	if !in.Linux.Security.Privileged {
		return nil
	}
	host, err := hostDevices("/dev")
	if err != nil {
		return err
	}
	for _, d := range host {
		if !seen[d.Path] {
			s.Linux.Devices = append(s.Linux.Devices, d)
		}
	}
	s.Linux.Resources.Devices = []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}
	return nil
}

// deviceFromPath stats a host device node (following symlinks, as kubelet's
// device plugins hand out /dev/disk/by-id style links).
func deviceFromPath(p string) (specs.LinuxDevice, error) {
	if !filepath.IsAbs(p) {
		return specs.LinuxDevice{}, fmt.Errorf("device %q must be an absolute host path: %w", p, errdefs.ErrInvalidArgument)
	}
	fi, err := os.Stat(p)
	if err != nil {
		return specs.LinuxDevice{}, fmt.Errorf("stat device %s: %v: %w", p, err, errdefs.ErrInvalidArgument)
	}
	return deviceFromInfo(p, fi)
}

func deviceFromInfo(p string, fi fs.FileInfo) (specs.LinuxDevice, error) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || fi.Mode()&fs.ModeDevice == 0 {
		return specs.LinuxDevice{}, fmt.Errorf("%s is not a device node: %w", p, errdefs.ErrInvalidArgument)
	}
	typ := "b"
	if fi.Mode()&fs.ModeCharDevice != 0 {
		typ = "c"
	}
	mode := fi.Mode().Perm()
	uid, gid := st.Uid, st.Gid
	rdev := uint64(st.Rdev) //nolint:unconvert // Rdev is uint64 on amd64/arm64 but not everywhere
	return specs.LinuxDevice{
		Path:     p,
		Type:     typ,
		Major:    int64(unix.Major(rdev)),
		Minor:    int64(unix.Minor(rdev)),
		FileMode: &mode,
		UID:      &uid,
		GID:      &gid,
	}, nil
}

// hostDevices lists the device nodes under dir, skipping what runc sets up
// itself or what belongs to the host's session (same skip list as runc's
// HostDevices).
func hostDevices(dir string) ([]specs.LinuxDevice, error) {
	var out []specs.LinuxDevice
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == dir {
				return err
			}
			return nil // a device vanished under us
		}
		if d.IsDir() {
			switch d.Name() {
			case "pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev":
				return filepath.SkipDir
			}
			return nil
		}
		if d.Name() == "console" || d.Name() == "ptmx" || d.Type()&fs.ModeDevice == 0 {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		dev, err := deviceFromInfo(p, fi)
		if err != nil {
			return nil
		}
		out = append(out, dev)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list host devices: %w", err)
	}
	return out, nil
}
