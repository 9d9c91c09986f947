package cgroupmgr

import (
	"fmt"
	"path"
	"strings"

	"github.com/containerd/errdefs"
)

// Driver is how cgroups are named and created: directly in cgroupfs, or as
// systemd units.
type Driver string

const (
	Cgroupfs Driver = "cgroupfs"
	Systemd  Driver = "systemd"
)

// ParseDriver accepts "cgroupfs" and "systemd".
func ParseDriver(s string) (Driver, error) {
	switch d := Driver(s); d {
	case Cgroupfs, Systemd:
		return d, nil
	}
	return "", fmt.Errorf("cgroup driver %q: must be cgroupfs or systemd: %w", s, errdefs.ErrInvalidArgument)
}

// scopePrefix names crid's container cgroups (crid-<id>, crid-<id>.scope).
const scopePrefix = "crid"

// DefaultParent is used when a request names no cgroup parent.
func (d Driver) DefaultParent() string {
	if d == Systemd {
		return "system.slice"
	}
	return "/crid"
}

// ContainerPath is the cgroups path to put in a container's OCI spec
// (Linux.CgroupsPath) under parent, in the form the OCI runtime expects for
// the driver: "/parent/crid-<id>" for cgroupfs, "parent.slice:crid:<id>"
// for systemd. A parent that could escape the hierarchy is refused.
func (d Driver) ContainerPath(parent, id string) (string, error) {
	if id == "" || strings.ContainsAny(id, "/:") {
		return "", fmt.Errorf("container id %q: %w", id, errdefs.ErrInvalidArgument)
	}
	if parent == "" {
		parent = d.DefaultParent()
	}
	switch d {
	case Systemd:
		if !strings.HasSuffix(parent, ".slice") || strings.ContainsAny(parent, "/:") {
			return "", fmt.Errorf("cgroup parent %q: the systemd driver needs a slice name like kubepods-burstable.slice: %w",
				parent, errdefs.ErrInvalidArgument)
		}
		return parent + ":" + scopePrefix + ":" + id, nil
	default:
		if strings.HasSuffix(parent, ".slice") && !strings.Contains(parent, "/") {
			return "", fmt.Errorf("cgroup parent %q is a systemd slice but the driver is cgroupfs: %w", parent, errdefs.ErrInvalidArgument)
		}
		for _, elem := range strings.Split(parent, "/") {
			if elem == ".." {
				return "", fmt.Errorf("cgroup parent %q: %w", parent, errdefs.ErrInvalidArgument)
			}
		}
		return path.Join("/", parent, scopePrefix+"-"+id), nil
	}
}
