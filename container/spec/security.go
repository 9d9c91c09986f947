package spec

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// allCaps lists every capability by number (capability.h up to
// CAP_CHECKPOINT_RESTORE).
var allCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
	"CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP",
	"CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
	"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
	"CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
	"CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
	"CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD",
	"CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP",
	"CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
	"CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
	"CAP_CHECKPOINT_RESTORE",
}

// DefaultCaps is the capability set of an unprivileged container, the same
// as containerd's and Docker's.
var DefaultCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
	"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// DefaultMaskedPaths are hidden from unprivileged containers (containerd's list).
var DefaultMaskedPaths = []string{
	"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
	"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
	"/proc/sched_debug", "/proc/scsi", "/sys/firmware",
	"/sys/devices/virtual/powercap",
}

// DefaultReadonlyPaths are read-only in unprivileged containers.
var DefaultReadonlyPaths = []string{
	"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
}

// maxSeccompProfileSize caps a Localhost seccomp profile.
const maxSeccompProfileSize = 4 << 20

// setSecurity sets capabilities, masked/readonly paths, seccomp and AppArmor.
func setSecurity(s *specs.Spec, in Input) error {
	sec := in.Linux.Security
	known := knownCaps(in.Host.LastCap)
	if sec.Privileged {
		caps := grantable(known, in.Host.CapBnd)
		s.Process.Capabilities = &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps}
		// Privileged: no masked or read-only paths, no seccomp, no AppArmor.
		return nil
	}
	caps, err := capabilities(sec.Capabilities, known, in.Host.CapBnd)
	if err != nil {
		return err
	}
	pc := &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps}
	if len(sec.Capabilities.AddAmbient) > 0 {
		amb, err := normalizeCaps(sec.Capabilities.AddAmbient, known)
		if err != nil {
			return err
		}
		// An ambient capability must also be permitted and inheritable.
		all := sortCaps(append(slices.Clone(caps), amb...))
		amb = sortCaps(amb)
		pc = &specs.LinuxCapabilities{Bounding: all, Effective: all, Permitted: all, Inheritable: amb, Ambient: amb}
	}
	s.Process.Capabilities = pc

	s.Linux.MaskedPaths = DefaultMaskedPaths
	if sec.MaskedPaths != nil {
		s.Linux.MaskedPaths = sec.MaskedPaths
	}
	s.Linux.MaskedPaths = slices.Clone(s.Linux.MaskedPaths)
	s.Linux.ReadonlyPaths = DefaultReadonlyPaths
	if sec.ReadonlyPaths != nil {
		s.Linux.ReadonlyPaths = sec.ReadonlyPaths
	}
	s.Linux.ReadonlyPaths = slices.Clone(s.Linux.ReadonlyPaths)

	switch sec.Seccomp.Type {
	case ProfileUnconfined:
	case ProfileRuntimeDefault:
		s.Linux.Seccomp = DefaultSeccomp(pc.Bounding)
	case ProfileLocalhost:
		p, err := LoadSeccompProfile(sec.Seccomp.LocalhostRef)
		if err != nil {
			return err
		}
		s.Linux.Seccomp = p
	default:
		return fmt.Errorf("unknown seccomp profile type %d: %w", sec.Seccomp.Type, errdefs.ErrInvalidArgument)
	}

	return setAppArmor(s, sec.Apparmor, in.Host)
}

// setAppArmor: see doc.go for how crid treats AppArmor on hosts without it.
func setAppArmor(s *specs.Spec, p SecurityProfile, h Host) error {
	switch p.Type {
	case ProfileUnconfined:
		return nil
	case ProfileRuntimeDefault:
		if !h.AppArmorEnabled {
			return nil
		}
		if h.AppArmorDefaultProfile == "" {
			return fmt.Errorf("apparmor runtime/default: no default profile configured: %w", errdefs.ErrNotImplemented)
		}
		s.Process.ApparmorProfile = h.AppArmorDefaultProfile
	case ProfileLocalhost:
		if p.LocalhostRef == "" || p.LocalhostRef == "unconfined" {
			return nil
		}
		if !h.AppArmorEnabled {
			return fmt.Errorf("apparmor profile %q requested but apparmor is not enabled on this host: %w", p.LocalhostRef, errdefs.ErrInvalidArgument)
		}
		s.Process.ApparmorProfile = p.LocalhostRef
	default:
		return fmt.Errorf("unknown apparmor profile type %d: %w", p.Type, errdefs.ErrInvalidArgument)
	}
	return nil
}

// grantable keeps the capabilities of known that are in the bounding set
// (all of them when it is 0, unknown). Capability n is allCaps[n].
func grantable(known []string, bounding uint64) []string {
	if bounding == 0 {
		return slices.Clone(known)
	}
	out := make([]string, 0, len(known))
	for _, k := range known {
		if n := slices.Index(allCaps, k); n >= 0 && n < 64 && bounding&(1<<uint(n)) != 0 {
			out = append(out, k)
		}
	}
	return out
}

func knownCaps(lastCap int) []string {
	if lastCap > 0 && lastCap < len(allCaps) {
		return slices.Clone(allCaps[:lastCap+1])
	}
	return slices.Clone(allCaps)
}

// capabilities applies CRI add/drop to DefaultCaps in containerd's order:
// add ALL, drop ALL, individual adds, individual drops (drop wins).
func capabilities(c Capabilities, known []string, bounding uint64) ([]string, error) {
	isAll := func(s string) bool { return strings.EqualFold(s, "ALL") }
	set := map[string]bool{}
	for _, k := range DefaultCaps {
		set[k] = true
	}
	if slices.ContainsFunc(c.Add, isAll) {
		for _, k := range grantable(known, bounding) {
			set[k] = true
		}
	}
	if slices.ContainsFunc(c.Drop, isAll) {
		clear(set)
	}
	add, err := normalizeCaps(slices.DeleteFunc(slices.Clone(c.Add), isAll), known)
	if err != nil {
		return nil, err
	}
	drop, err := normalizeCaps(slices.DeleteFunc(slices.Clone(c.Drop), isAll), known)
	if err != nil {
		return nil, err
	}
	for _, k := range add {
		set[k] = true
	}
	for _, k := range drop {
		delete(set, k)
	}
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	return sortCaps(out), nil
}

// normalizeCaps upper-cases names, adds the CAP_ prefix and rejects unknown
// capabilities.
func normalizeCaps(names, known []string) ([]string, error) {
	out := make([]string, 0, len(names))
	for _, n := range names {
		k := strings.ToUpper(strings.TrimSpace(n))
		if !strings.HasPrefix(k, "CAP_") {
			k = "CAP_" + k
		}
		if !slices.Contains(known, k) {
			return nil, fmt.Errorf("unknown capability %q: %w", n, errdefs.ErrInvalidArgument)
		}
		out = append(out, k)
	}
	return out, nil
}

// sortCaps orders by capability number and removes duplicates.
func sortCaps(c []string) []string {
	slices.SortFunc(c, func(a, b string) int { return slices.Index(allCaps, a) - slices.Index(allCaps, b) })
	return slices.Compact(c)
}

// LoadSeccompProfile reads a Localhost seccomp profile: an OCI LinuxSeccomp
// JSON document (the format containerd loads) of at most 4 MiB.
func LoadSeccompProfile(path string) (*specs.LinuxSeccomp, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("seccomp profile path %q must be absolute: %w", path, errdefs.ErrInvalidArgument)
	}
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("seccomp profile %s not found: %w", path, errdefs.ErrInvalidArgument)
		}
		return nil, fmt.Errorf("open seccomp profile %s: %w", path, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxSeccompProfileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read seccomp profile %s: %w", path, err)
	}
	if len(data) > maxSeccompProfileSize {
		return nil, fmt.Errorf("seccomp profile %s is larger than %d bytes: %w", path, maxSeccompProfileSize, errdefs.ErrInvalidArgument)
	}
	var p specs.LinuxSeccomp
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("parse seccomp profile %s: %v: %w", path, err, errdefs.ErrInvalidArgument)
	}
	if p.DefaultAction == "" {
		return nil, fmt.Errorf("seccomp profile %s has no defaultAction: %w", path, errdefs.ErrInvalidArgument)
	}
	return &p, nil
}
