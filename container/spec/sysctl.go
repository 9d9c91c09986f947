package spec

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

var (
	sysctlNameRE  = regexp.MustCompile(`^[a-z0-9_]+([./][a-zA-Z0-9_-]+)+$`)
	sysctlValueRE = regexp.MustCompile(`^[A-Za-z0-9 ._:/-]{1,1000}$`)
)

// setSysctls copies validated sysctls. Only namespaced sysctls are allowed,
// and only when the container really has the namespace: net.* needs a
// private network namespace; kernel.shm*, kernel.msg*, kernel.sem and
// fs.mqueue.* a private IPC namespace; kernel.hostname/domainname a private
// UTS namespace. Values are restricted to [A-Za-z0-9 ._:/-] so nothing like
// "+" can smuggle a second assignment (CVE-2022-0811).
func setSysctls(s *specs.Spec, in Input) error {
	if len(in.Linux.Sysctls) == 0 {
		return nil
	}
	out := make(map[string]string, len(in.Linux.Sysctls))
	for k, v := range in.Linux.Sysctls {
		if !sysctlNameRE.MatchString(k) {
			return fmt.Errorf("invalid sysctl name %q: %w", k, errdefs.ErrInvalidArgument)
		}
		if !sysctlValueRE.MatchString(v) {
			return fmt.Errorf("invalid value for sysctl %s: %w", k, errdefs.ErrInvalidArgument)
		}
		name := dotted(k)
		var need specs.LinuxNamespaceType
		switch {
		case strings.HasPrefix(name, "net."):
			need = specs.NetworkNamespace
		case strings.HasPrefix(name, "kernel.shm"), strings.HasPrefix(name, "kernel.msg"),
			name == "kernel.sem", strings.HasPrefix(name, "fs.mqueue."):
			need = specs.IPCNamespace
		case name == "kernel.hostname", name == "kernel.domainname":
			need = specs.UTSNamespace
		default:
			return fmt.Errorf("sysctl %s is not namespaced: %w", k, errdefs.ErrInvalidArgument)
		}
		if !hasPrivateNS(s, need) {
			return fmt.Errorf("sysctl %s needs a private %s namespace: %w", k, need, errdefs.ErrInvalidArgument)
		}
		out[name] = v
	}
	s.Linux.Sysctl = out
	return nil
}

// dotted converts the slash form ("net/ipv4/conf/eth0.100/forwarding") to
// the dotted form runc validates ("net.ipv4.conf.eth0/100.forwarding"), the
// same swap kubelet does.
func dotted(name string) string {
	i := strings.IndexAny(name, "./")
	if i < 0 || name[i] == '.' {
		return name
	}
	return strings.Map(func(r rune) rune {
		switch r {
		case '.':
			return '/'
		case '/':
			return '.'
		}
		return r
	}, name)
}
