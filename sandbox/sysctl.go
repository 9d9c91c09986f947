package sandbox

import (
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
)

// sysctl is one validated sysctl: path is relative to /proc/sys.
type sysctl struct {
	name, path, value string
}

// validateSysctl accepts only namespaced sysctls whose namespace the pod
// owns: net.* with a pod network namespace; kernel.shm*, kernel.msg*,
// kernel.sem and fs.mqueue.* with a pod IPC namespace (the kubelet's "safe"
// and "unsafe but namespaced" sets). Everything else, kernel.core_pattern
// first, would change the host. Values are limited to [A-Za-z0-9 ._:/-]:
// CRI-O's CVE-2022-0811 smuggled a second sysctl through a '+' in a value.
//
// A name may use '.' or '/' separators; with '/', dots are part of a
// component (an interface name such as eth0.100), as in kubelet.
func validateSysctl(name, value string, ns NamespaceOptions) (sysctl, error) {
	bad := func(why string) (sysctl, error) {
		return sysctl{}, fmt.Errorf("sysctl %q=%q: %s: %w", name, value, why, errdefs.ErrInvalidArgument)
	}
	path := name
	if !strings.Contains(name, "/") {
		path = strings.ReplaceAll(name, ".", "/")
	}
	for _, comp := range strings.Split(path, "/") {
		if comp == "" || comp == "." || comp == ".." {
			return bad("empty or relative path component")
		}
		for _, r := range comp {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.') {
				return bad(fmt.Sprintf("character %q not allowed in name", r))
			}
		}
	}
	if value == "" || len(value) > 4096 {
		return bad("value must have 1 to 4096 bytes")
	}
	for _, r := range value {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(" ._:/-", r)) {
			return bad(fmt.Sprintf("character %q not allowed in value", r))
		}
	}
	// Classify on the slash form so that "kernel/shmmax" and
	// "kernel.shmmax" are the same sysctl.
	switch {
	case strings.HasPrefix(path, "net/"):
		if !ns.Network.isPod() {
			return bad("net.* needs a pod network namespace")
		}
	case path == "kernel/sem",
		strings.HasPrefix(path, "kernel/shm") && !strings.Contains(path[len("kernel/"):], "/"),
		strings.HasPrefix(path, "kernel/msg") && !strings.Contains(path[len("kernel/"):], "/"),
		strings.HasPrefix(path, "fs/mqueue/"):
		if !ns.IPC.isPod() {
			return bad("IPC sysctls need a pod IPC namespace")
		}
	default:
		return bad("not a namespaced sysctl the pod owns")
	}
	return sysctl{name: name, path: path, value: value}, nil
}
