package sandbox

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/crid-dev/crid/internal/atomicfile"
)

const (
	hostHostsFile      = "/etc/hosts"
	hostResolvConfFile = "/etc/resolv.conf"
	hostShm            = "/dev/shm"
	// shmOptions match what containerd and CRI-O mount for a pod's /dev/shm.
	shmData = "mode=1777,size=65536k"
)

// hostsContent is the pod's /etc/hosts: the loopback names, and the pod's
// hostname on its IP once CNI gave it one.
func hostsContent(hostname, ip string) []byte {
	var b strings.Builder
	b.WriteString("127.0.0.1\tlocalhost\n")
	b.WriteString("::1\tlocalhost ip6-localhost ip6-loopback\n")
	b.WriteString("fe00::0\tip6-localnet\n")
	b.WriteString("fe00::0\tip6-mcastprefix\n")
	b.WriteString("fe00::1\tip6-allnodes\n")
	b.WriteString("fe00::2\tip6-allrouters\n")
	if ip != "" {
		fmt.Fprintf(&b, "%s\t%s\n", ip, hostname)
	}
	return []byte(b.String())
}

// resolvConfContent renders a validated DNSConfig.
func resolvConfContent(d DNSConfig) []byte {
	var b strings.Builder
	if len(d.Searches) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(d.Searches, " "))
	}
	for _, s := range d.Servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if len(d.Options) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(d.Options, " "))
	}
	return []byte(b.String())
}

// writeFiles writes hostname, hosts and resolv.conf for sb.
func writeFiles(sb *Sandbox) error {
	if err := atomicfile.WriteFile(sb.HostnamePath, []byte(sb.Hostname+"\n"), 0o644); err != nil {
		return fmt.Errorf("write hostname file: %w", err)
	}
	hosts := hostsContent(sb.Hostname, "")
	if sb.Config.hostNetwork() {
		b, err := os.ReadFile(hostHostsFile)
		if err != nil {
			return fmt.Errorf("read host hosts file: %w", err)
		}
		hosts = b
	}
	if err := atomicfile.WriteFile(sb.HostsPath, hosts, 0o644); err != nil {
		return fmt.Errorf("write hosts file: %w", err)
	}
	resolv := resolvConfContent(sb.Config.DNS)
	if sb.Config.DNS.empty() {
		b, err := os.ReadFile(hostResolvConfFile)
		if err != nil {
			return fmt.Errorf("read host resolv.conf: %w", err)
		}
		resolv = b
	}
	if err := atomicfile.WriteFile(sb.ResolvConfPath, resolv, 0o644); err != nil {
		return fmt.Errorf("write resolv.conf: %w", err)
	}
	return nil
}

// rewriteHosts rewrites the hosts file in place (not by rename): containers
// bind-mount the file, and a rename would leave them the old inode.
func rewriteHosts(sb *Sandbox) error {
	if sb.Config.hostNetwork() {
		return nil
	}
	if err := os.WriteFile(sb.HostsPath, hostsContent(sb.Hostname, sb.IP), 0o644); err != nil {
		return fmt.Errorf("rewrite hosts file: %w", err)
	}
	return nil
}

// mountShm mounts the pod's /dev/shm tmpfs on path.
func mountShm(path string) error {
	if err := os.Mkdir(path, 0o755); err != nil {
		return fmt.Errorf("create shm dir: %w", err)
	}
	if err := unix.Mount("shm", path, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, shmData); err != nil {
		return fmt.Errorf("mount shm tmpfs: %w", err)
	}
	return nil
}
