package spec

import (
	"fmt"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// namespaces builds Linux.Namespaces. A namespace absent from the list is
// the host's (runc's rule). It reports whether the container gets a new UTS
// namespace, the only case in which Spec.Hostname may be set.
//
//	ns     NODE / host      POD                  CONTAINER  TARGET
//	mount  -                new                  new        -
//	net    host             Sandbox.NetNS        (= POD)    (= POD)
//	ipc    host             Sandbox.IPCNS        new        (= POD)
//	uts    host if hostnet  Sandbox.UTSNS or new -          -
//	pid    host             Sandbox.PIDNS        new        TargetPIDNSPath
//	cgroup new on cgroup v2 only
func namespaces(in Input) ([]specs.LinuxNamespace, bool, error) {
	sb := in.Sandbox
	o := in.Linux.Security.Namespaces
	ns := []specs.LinuxNamespace{{Type: specs.MountNamespace}}
	join := func(t specs.LinuxNamespaceType, path, what string) error {
		if path == "" {
			return fmt.Errorf("%s namespace of sandbox %s has no path: %w", what, in.SandboxID, errdefs.ErrInvalidArgument)
		}
		ns = append(ns, specs.LinuxNamespace{Type: t, Path: path})
		return nil
	}

	hostNet := sb.HostNetwork || o.Network == NamespaceNode
	if !hostNet {
		if err := join(specs.NetworkNamespace, sb.NetNS, "network"); err != nil {
			return nil, false, err
		}
	}

	switch {
	case o.IPC == NamespaceNode || sb.HostIPC:
	case o.IPC == NamespaceContainer:
		ns = append(ns, specs.LinuxNamespace{Type: specs.IPCNamespace})
	case o.IPC == NamespacePod || o.IPC == NamespaceTarget:
		if err := join(specs.IPCNamespace, sb.IPCNS, "ipc"); err != nil {
			return nil, false, err
		}
	default:
		return nil, false, fmt.Errorf("unknown ipc namespace mode %d: %w", o.IPC, errdefs.ErrInvalidArgument)
	}

	newUTS := false
	switch {
	case hostNet:
	case sb.UTSNS != "":
		ns = append(ns, specs.LinuxNamespace{Type: specs.UTSNamespace, Path: sb.UTSNS})
	default:
		ns = append(ns, specs.LinuxNamespace{Type: specs.UTSNamespace})
		newUTS = true
	}

	switch o.PID {
	case NamespaceNode:
	case NamespacePod:
		if !sb.HostPID {
			if err := join(specs.PIDNamespace, sb.PIDNS, "pid"); err != nil {
				return nil, false, err
			}
		}
	case NamespaceContainer:
		ns = append(ns, specs.LinuxNamespace{Type: specs.PIDNamespace})
	case NamespaceTarget:
		if o.TargetPIDNSPath == "" {
			return nil, false, fmt.Errorf("pid namespace target %q has no resolved path: %w", o.TargetID, errdefs.ErrInvalidArgument)
		}
		ns = append(ns, specs.LinuxNamespace{Type: specs.PIDNamespace, Path: o.TargetPIDNSPath})
	default:
		return nil, false, fmt.Errorf("unknown pid namespace mode %d: %w", o.PID, errdefs.ErrInvalidArgument)
	}

	if in.Host.CgroupV2 {
		ns = append(ns, specs.LinuxNamespace{Type: specs.CgroupNamespace})
	}
	return ns, newUTS, nil
}

// hasPrivateNS reports whether the spec has a non-host namespace of type t.
func hasPrivateNS(s *specs.Spec, t specs.LinuxNamespaceType) bool {
	for _, n := range s.Linux.Namespaces {
		if n.Type == t {
			return true
		}
	}
	return false
}
