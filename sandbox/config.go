package sandbox

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/containerd/errdefs"
)

// NamespaceMode says where a pod's namespace of one kind comes from. The
// zero value means POD, as the zero value of CRI's NamespaceMode does.
type NamespaceMode string

const (
	// NamespacePod gives the pod a namespace of its own, shared by its
	// containers.
	NamespacePod NamespaceMode = "POD"
	// NamespaceNode uses the host's namespace.
	NamespaceNode NamespaceMode = "NODE"
	// NamespaceContainer (PID only) gives each container its own PID
	// namespace; it is a container-level decision, so the sandbox creates
	// nothing for it.
	NamespaceContainer NamespaceMode = "CONTAINER"
	// NamespaceTarget (PID only) makes a container join another
	// container's PID namespace; like CONTAINER, nothing at pod level.
	NamespaceTarget NamespaceMode = "TARGET"
)

// isPod reports whether m asks for a pod-level namespace ("" is POD).
func (m NamespaceMode) isPod() bool { return m == "" || m == NamespacePod }

// Metadata names a sandbox the way kubelet does. Name, Namespace and UID
// identify the pod; Attempt counts kubelet's re-creations of its sandbox.
type Metadata struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	UID       string `json:"uid"`
	Attempt   uint32 `json:"attempt"`
}

// Key is the name reserved for the sandbox: <name>_<namespace>_<uid>_<attempt>.
// At most one sandbox holds a key at a time.
func (m Metadata) Key() string {
	return fmt.Sprintf("%s_%s_%s_%d", m.Name, m.Namespace, m.UID, m.Attempt)
}

// DNSConfig is the pod's resolver configuration. When all three are empty
// the sandbox's resolv.conf is a copy of the host's /etc/resolv.conf.
type DNSConfig struct {
	Servers  []string `json:"servers,omitempty"`  // IP addresses
	Searches []string `json:"searches,omitempty"` // search domains
	Options  []string `json:"options,omitempty"`  // e.g. "ndots:5"
}

// PortMapping is stored for the network plugin (server passes it to CNI's
// portmap capability); the sandbox does nothing with it.
type PortMapping struct {
	Protocol      string `json:"protocol"` // "TCP", "UDP", "SCTP"
	ContainerPort int32  `json:"containerPort"`
	HostPort      int32  `json:"hostPort,omitempty"`
	HostIP        string `json:"hostIP,omitempty"`
}

// NamespaceOptions chooses the pod's namespaces. Network NODE also means the
// host's UTS namespace (kubelet's host-network pods see the node's
// hostname).
type NamespaceOptions struct {
	Network NamespaceMode `json:"network,omitempty"` // POD or NODE
	PID     NamespaceMode `json:"pid,omitempty"`     // POD, NODE, CONTAINER or TARGET
	IPC     NamespaceMode `json:"ipc,omitempty"`     // POD or NODE
}

// Config is what a sandbox is created from. It is stored verbatim in the
// checkpoint and never changes afterwards, except Extra through
// [Manager.Update].
type Config struct {
	Metadata Metadata `json:"metadata"`
	// Hostname of the pod; empty means Metadata.Name (truncated to 63
	// bytes, as kubelet does), or the node's hostname for host-network pods.
	Hostname     string            `json:"hostname,omitempty"`
	LogDirectory string            `json:"logDirectory,omitempty"` // stored; kubelet creates it
	DNS          DNSConfig         `json:"dns"`
	PortMappings []PortMapping     `json:"portMappings,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	CgroupParent string            `json:"cgroupParent,omitempty"` // stored; cgroupmgr creates it
	Namespaces   NamespaceOptions  `json:"namespaces"`
	// Sysctls are applied in the pod's namespaces; see validateSysctl for
	// what is allowed. Keys use "." or "/" separators.
	Sysctls        map[string]string `json:"sysctls,omitempty"`
	RuntimeHandler string            `json:"runtimeHandler,omitempty"`
	// Extra is opaque to this package: server persists whatever it needs to
	// rebuild its view after a restart (e.g. the CNI result).
	Extra map[string]string `json:"extra,omitempty"`
}

// hostNetwork reports whether the pod uses the node's network (and UTS)
// namespace.
func (c *Config) hostNetwork() bool { return !c.Namespaces.Network.isPod() }

// validate checks everything Run could reject, before anything is created.
func (c *Config) validate() error {
	md := c.Metadata
	if md.Name == "" || md.Namespace == "" || md.UID == "" {
		return fmt.Errorf("sandbox metadata needs name, namespace and uid: %w", errdefs.ErrInvalidArgument)
	}
	for _, s := range []string{md.Name, md.Namespace, md.UID} {
		if strings.ContainsAny(s, "_/") || hasControl(s) {
			return fmt.Errorf("sandbox metadata %q: '_', '/' and control characters are not allowed: %w", s, errdefs.ErrInvalidArgument)
		}
	}
	ns := c.Namespaces
	if err := checkMode("network", ns.Network, NamespacePod, NamespaceNode); err != nil {
		return err
	}
	if err := checkMode("ipc", ns.IPC, NamespacePod, NamespaceNode); err != nil {
		return err
	}
	if err := checkMode("pid", ns.PID, NamespacePod, NamespaceNode, NamespaceContainer, NamespaceTarget); err != nil {
		return err
	}
	if c.Hostname != "" {
		if err := validateHostname(c.Hostname); err != nil {
			return err
		}
	}
	if err := c.DNS.validate(); err != nil {
		return err
	}
	for k, v := range c.Sysctls {
		if _, err := validateSysctl(k, v, ns); err != nil {
			return err
		}
	}
	return nil
}

func checkMode(kind string, m NamespaceMode, allowed ...NamespaceMode) error {
	if m == "" {
		return nil
	}
	for _, a := range allowed {
		if m == a {
			return nil
		}
	}
	return fmt.Errorf("%s namespace mode %q: %w", kind, m, errdefs.ErrInvalidArgument)
}

// validateHostname accepts what sethostname(2) and a hosts file line can
// carry safely: 1 to 64 bytes of letters, digits, '.', '-' and '_'.
func validateHostname(h string) error {
	if len(h) == 0 || len(h) > 64 {
		return fmt.Errorf("hostname %q: length must be 1 to 64: %w", h, errdefs.ErrInvalidArgument)
	}
	for _, r := range h {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_') {
			return fmt.Errorf("hostname %q: character %q not allowed: %w", h, r, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// podHostname is the hostname the pod sees (kubelet's
// truncatePodHostnameIfNeeded for the Name fallback).
func (c *Config) podHostname(nodeHostname func() (string, error)) (string, error) {
	if c.Hostname != "" {
		return c.Hostname, nil
	}
	if c.hostNetwork() {
		return nodeHostname()
	}
	h := c.Metadata.Name
	if len(h) > 63 {
		h = strings.TrimRight(h[:63], "-.")
	}
	if err := validateHostname(h); err != nil {
		return "", err
	}
	return h, nil
}

// validate is lenient about counts (kubelet already limits them) and
// strict about what could break the file's syntax: servers must be IP
// addresses; searches and options carry no whitespace or control
// characters.
func (d *DNSConfig) validate() error {
	for _, s := range d.Servers {
		if _, err := netip.ParseAddr(s); err != nil {
			return fmt.Errorf("dns server %q: %w", s, errdefs.ErrInvalidArgument)
		}
	}
	for _, list := range [][]string{d.Searches, d.Options} {
		for _, s := range list {
			if s == "" || hasControl(s) || strings.ContainsAny(s, " \t") {
				return fmt.Errorf("dns search or option %q: empty or has whitespace or control characters: %w", s, errdefs.ErrInvalidArgument)
			}
		}
	}
	return nil
}

func (d *DNSConfig) empty() bool {
	return len(d.Servers) == 0 && len(d.Searches) == 0 && len(d.Options) == 0
}

func hasControl(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return true
		}
	}
	return false
}

// clone returns a deep copy of c.
func (c Config) clone() Config {
	c.DNS.Servers = cloneSlice(c.DNS.Servers)
	c.DNS.Searches = cloneSlice(c.DNS.Searches)
	c.DNS.Options = cloneSlice(c.DNS.Options)
	c.PortMappings = cloneSlice(c.PortMappings)
	c.Labels = cloneMap(c.Labels)
	c.Annotations = cloneMap(c.Annotations)
	c.Sysctls = cloneMap(c.Sysctls)
	c.Extra = cloneMap(c.Extra)
	return c
}

func cloneSlice[T any](s []T) []T {
	if s == nil {
		return nil
	}
	return append([]T(nil), s...)
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
