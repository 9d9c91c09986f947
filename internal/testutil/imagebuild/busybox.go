package imagebuild

import (
	"debug/elf"
	"fmt"
	"io/fs"
)

// BusyboxPath is where Debian's busybox-static package installs its binary.
const BusyboxPath = "/bin/busybox"

// BusyboxApplets are the applets linked to /bin/busybox in [BusyboxLayer].
var BusyboxApplets = []string{
	"cat", "date", "df", "du", "echo", "env", "false", "grep", "head", "hostname",
	"httpd", "id", "ip", "ls", "mkdir", "mount", "nc", "ping", "printf", "ps",
	"rm", "sed", "sh", "sleep", "stty", "tee", "test", "top", "touch", "true",
	"wc", "whoami",
}

// BusyboxEnvPath is the PATH set in the busybox image config.
const BusyboxEnvPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Users and groups of the busybox image's /etc/passwd and /etc/group.
const (
	busyboxPasswd = `root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
alice:x:1000:1000:alice:/home/alice:/bin/sh
bob:x:1001:1001:bob:/home/bob:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
`
	busyboxGroup = `root:x:0:
daemon:x:1:
wheel:x:10:root,alice
users:x:100:alice,bob
alice:x:1000:
bob:x:1001:
shared:x:2000:alice,bob
nogroup:x:65534:
`
	busyboxHosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
)

// elfArch maps ELF machines to GOARCH names.
var elfArch = map[elf.Machine]string{
	elf.EM_X86_64:  "amd64",
	elf.EM_AARCH64: "arm64",
	elf.EM_386:     "386",
	elf.EM_ARM:     "arm",
	elf.EM_PPC64:   "ppc64le",
	elf.EM_S390:    "s390x",
	elf.EM_RISCV:   "riscv64",
}

// staticBinaryArch checks that p is a statically linked ELF executable and
// returns its architecture as a GOARCH name.
func staticBinaryArch(p string) (string, error) {
	f, err := elf.Open(p)
	if err != nil {
		return "", fmt.Errorf("%s (install the busybox-static package): %w", p, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return "", fmt.Errorf("%s is dynamically linked: install busybox-static, not busybox", p)
		}
	}
	if libs, err := f.ImportedLibraries(); err == nil && len(libs) > 0 {
		return "", fmt.Errorf("%s needs shared libraries %v: install busybox-static, not busybox", p, libs)
	}
	arch, ok := elfArch[f.Machine]
	if !ok {
		return "", fmt.Errorf("%s: unsupported ELF machine %s", p, f.Machine)
	}
	return arch, nil
}

// BusyboxLayer is a root filesystem built around the host's static
// /bin/busybox: the binary, hard links for [BusyboxApplets], a relative
// symlink /usr/bin/env, /etc/passwd and /etc/group (root 0, daemon 1, alice
// 1000, bob 1001, nobody 65534; alice and bob share group "shared" 2000),
// /etc/hosts, /tmp (1777), /root (0700), /home/alice and /home/bob owned by
// their users, and empty /dev, /proc, /sys. It also returns the binary's
// architecture. It fails if busybox is missing or dynamically linked.
func BusyboxLayer() (Layer, string, error) {
	arch, err := staticBinaryArch(BusyboxPath)
	if err != nil {
		return Layer{}, "", err
	}
	entries := []Entry{
		HostFile("bin/busybox", BusyboxPath, 0o755),
		Dir("dev", 0o755),
		Dir("etc", 0o755),
		File("etc/passwd", busyboxPasswd, 0o644),
		File("etc/group", busyboxGroup, 0o644),
		File("etc/hosts", busyboxHosts, 0o644),
		Dir("home", 0o755),
		Dir("home/alice", 0o755).Owner(1000, 1000),
		Dir("home/bob", 0o755).Owner(1001, 1001),
		Dir("proc", 0o555),
		Dir("root", 0o700),
		Dir("sys", 0o555),
		Dir("tmp", 0o777|fs.ModeSticky),
		Dir("usr/sbin", 0o755),
		Dir("var", 0o755),
		Symlink("usr/bin/env", "../../bin/busybox"),
	}
	for _, a := range BusyboxApplets {
		entries = append(entries, Hardlink("bin/"+a, "bin/busybox"))
	}
	return Layer{Entries: entries}, arch, nil
}

// Busybox is a single-layer image of [BusyboxLayer] with Cmd ["sh"] and a
// standard PATH, for the host busybox's architecture.
func Busybox() (Image, error) {
	l, arch, err := BusyboxLayer()
	if err != nil {
		return Image{}, err
	}
	return Image{
		Layers:   []Layer{l},
		Config:   Config{Cmd: []string{"sh"}, Env: []string{BusyboxEnvPath}},
		Platform: Platform{OS: "linux", Architecture: arch},
	}, nil
}
