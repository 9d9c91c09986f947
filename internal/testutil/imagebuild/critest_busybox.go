package imagebuild

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// The critest busybox is Debian's dynamically linked busybox package, not
// busybox-static: the static build's shell runs applets in-process, so a
// masked /bin/ls would still run and critest's masked-paths spec could not
// pass. With the dynamic build the shell executes /bin/ls like any shell.
// Debian's busybox package conflicts with busybox-static, so it is never
// installed: its .deb is downloaded with apt-get and unpacked into a cache.

// critestInputsEnv overrides where the critest set's inputs (the unpacked
// busybox package and the built stand-in programs) are cached.
const critestInputsEnv = "CRID_CRITEST_INPUTS"

// critestInputsDir returns the cache of the critest set's inputs:
// $CRID_CRITEST_INPUTS, or <user cache dir>/crid/critest-inputs.
func critestInputsDir() string {
	if d := os.Getenv(critestInputsEnv); d != "" {
		return d
	}
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	return filepath.Join(base, "crid", "critest-inputs")
}

// debianBusybox returns the path of Debian's dynamically linked busybox,
// unpacked under dir from the package apt-get downloads (once: later calls
// reuse it, so digests stay the same until the cache is removed).
func debianBusybox(ctx context.Context, dir string) (string, error) {
	final := filepath.Join(dir, "debian-busybox")
	bin := filepath.Join(final, "bin", "busybox")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(dir, ".debian-busybox-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	dl := exec.CommandContext(ctx, "apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", "busybox")
	dl.Dir = tmp
	if out, err := dl.CombinedOutput(); err != nil {
		return "", fmt.Errorf("apt-get download busybox (run apt-get update first?): %w\n%s", err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "busybox_*.deb"))
	if len(debs) != 1 {
		return "", fmt.Errorf("apt-get download busybox: want one .deb, found %v", debs)
	}
	root := filepath.Join(tmp, "root")
	if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", debs[0], root).CombinedOutput(); err != nil {
		return "", fmt.Errorf("unpack %s: %w\n%s", debs[0], err, out)
	}
	if err := os.Rename(root, final); err != nil {
		// Another build unpacked it meanwhile.
		if _, statErr := os.Stat(bin); statErr == nil {
			return bin, nil
		}
		return "", fmt.Errorf("store unpacked busybox: %w", err)
	}
	return bin, nil
}

// dynamicBinaryArch checks that p is a dynamically linked ELF executable
// and returns its architecture as a GOARCH name.
func dynamicBinaryArch(p string) (string, error) {
	f, err := elf.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if !slices.ContainsFunc(f.Progs, func(prog *elf.Prog) bool { return prog.Type == elf.PT_INTERP }) {
		return "", fmt.Errorf("%s is statically linked; want Debian's dynamically linked busybox", p)
	}
	arch, ok := elfArch[f.Machine]
	if !ok {
		return "", fmt.Errorf("%s: unsupported ELF machine %s", p, f.Machine)
	}
	return arch, nil
}

// sharedLibraries returns the absolute paths ldd reports for bin: its
// libraries and its ELF interpreter.
func sharedLibraries(ctx context.Context, bin string) ([]string, error) {
	out, err := exec.CommandContext(ctx, "ldd", bin).Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w", bin, err)
	}
	var libs []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		// "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or
		// "/lib64/ld-linux-x86-64.so.2 (0x…)"; the vDSO has no path.
		line := strings.TrimSpace(sc.Text())
		if _, after, ok := strings.Cut(line, "=> "); ok {
			line = after
		}
		p, _, _ := strings.Cut(line, " ")
		if strings.HasPrefix(p, "/") {
			libs = append(libs, p)
		}
	}
	if len(libs) == 0 {
		return nil, fmt.Errorf("ldd %s: no libraries found in %q", bin, out)
	}
	slices.Sort(libs)
	return slices.Compact(libs), nil
}

// busyboxApplets lists the applets bin was built with.
func busyboxApplets(ctx context.Context, bin string) ([]string, error) {
	out, err := exec.CommandContext(ctx, bin, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list: %w", bin, err)
	}
	var applets []string
	for a := range strings.FieldsSeq(string(out)) {
		if a != "busybox" && !strings.Contains(a, "/") {
			applets = append(applets, a)
		}
	}
	if len(applets) == 0 {
		return nil, errors.New("busybox lists no applets")
	}
	slices.Sort(applets)
	return applets, nil
}

// critestPasswd and critestGroup are those of the upstream busybox image,
// which critest's images are built on (www-data 33 and nobody 65534 are
// used by name).
const (
	critestPasswd = `root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
`
	critestGroup = `root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
kmem:x:9:
wheel:x:10:root
cdrom:x:11:
dialout:x:18:
floppy:x:19:
video:x:28:
audio:x:29:
tape:x:32:
www-data:x:33:
operator:x:37:
utmp:x:43:
plugdev:x:46:
staff:x:50:
netdev:x:82:
users:x:100:
nogroup:x:65534:
`
	// glibc looks users and groups up through NSS; name the files source
	// explicitly rather than rely on its built-in default.
	critestNsswitch = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"
)

// pgrepScript stands in for procps pgrep, which Debian's busybox lacks
// (critest runs "pgrep sleep"). It matches process names only (no -f), so
// it never matches its own helpers: its subshells are named pgrep and the
// matching is done by one awk after /proc has been read.
const pgrepScript = `#!/bin/sh
# pgrep stand-in (Debian's busybox has no pgrep): prints the PID of every
# process whose name (/proc/PID/comm) matches the extended regular
# expression PATTERN, and exits 1 when none does, like procps pgrep.
if [ $# -ne 1 ] || [ "${1#-}" != "$1" ]; then
	echo "usage: pgrep PATTERN (crid test stand-in: no options)" >&2
	exit 2
fi
list=
for d in /proc/[0-9]*; do
	pid=${d#/proc/}
	[ "$pid" = "$$" ] && continue
	{ read -r name < "$d/comm"; } 2>/dev/null || continue
	list="$list$pid $name
"
done
printf '%s' "$list" | awk -v pat="$1" '
{ n = $0; sub(/^[0-9]+ /, "", n); if (n ~ pat) { print $1; found = 1 } }
END { exit !found }'
`

// ipcsScript stands in for util-linux ipcs, which Debian's busybox lacks
// (critest runs "ipcs -m" to tell a host IPC namespace from a pod's). It
// reads /proc/sysvipc, which shows the caller's IPC namespace.
const ipcsScript = `#!/bin/sh
# ipcs stand-in (Debian's busybox has no ipcs): lists the System V IPC
# objects of this IPC namespace from /proc/sysvipc in util-linux's layout.
# -m shared memory, -q message queues, -s semaphore arrays; all by default.
m= q= s=
[ $# -eq 0 ] && m=1 q=1 s=1
for a in "$@"; do
	case $a in
	-m) m=1 ;;
	-q) q=1 ;;
	-s) s=1 ;;
	-a) m=1 q=1 s=1 ;;
	*) echo "ipcs: unsupported option $a (crid test stand-in: -m -q -s -a)" >&2; exit 1 ;;
	esac
done
# list FILE TITLE HEADER FORMAT FIELDS: one table; FIELDS are the columns of
# FILE after key, id and owner (owner is derived from the uid column UIDCOL).
list() {
	printf '\n------ %s --------\n' "$2"
	printf '%s\n' "$3"
	awk -v uidcol="$4" -v cols="$5" '
	# hex formats a key: %x of busybox awk stops at 2^31.
	function hex(n,    s, k) {
		if (n < 0) n += 4294967296
		for (k = 0; k < 8; k++) { s = substr("0123456789abcdef", n % 16 + 1, 1) s; n = int(n / 16) }
		return "0x" s
	}
	BEGIN { while ((getline l < "/etc/passwd") > 0) { split(l, f, ":"); user[f[3]] = f[1] } }
	NR > 1 {
		owner = ($uidcol in user) ? user[$uidcol] : $uidcol
		line = sprintf("%s %-10s %-10s", hex($1), $2, owner)
		n = split(cols, c, ",")
		for (i = 1; i <= n; i++) line = line sprintf(" %-10s", $c[i])
		print line
	}' "$1"
	echo
}
[ -n "$m" ] && list /proc/sysvipc/shm "Shared Memory Segments" \
	"key        shmid      owner      perms      bytes      nattch" 8 3,4,7
[ -n "$q" ] && list /proc/sysvipc/msg "Message Queues" \
	"key        msqid      owner      perms      used-bytes messages" 8 3,4,5
[ -n "$s" ] && list /proc/sysvipc/sem "Semaphore Arrays" \
	"key        semid      owner      perms      nsems" 5 3,4
exit 0
`

// critestBusyboxLayer is the root filesystem of critest's busybox-based
// images: Debian's dynamic /bin/busybox with every applet as a hard link in
// /bin (a symlink would make a masked /bin/ls mask busybox itself), the
// glibc files ldd names at the same paths, pgrep and ipcs stand-ins, the
// upstream busybox image's users and groups, and the usual directories.
func critestBusyboxLayer(ctx context.Context, inputs string) (Layer, string, error) {
	bin, err := debianBusybox(ctx, inputs)
	if err != nil {
		return Layer{}, "", err
	}
	arch, err := dynamicBinaryArch(bin)
	if err != nil {
		return Layer{}, "", err
	}
	libs, err := sharedLibraries(ctx, bin)
	if err != nil {
		return Layer{}, "", err
	}
	applets, err := busyboxApplets(ctx, bin)
	if err != nil {
		return Layer{}, "", err
	}
	entries := []Entry{
		HostFile("bin/busybox", bin, 0o755),
		Dir("dev", 0o755),
		Dir("etc", 0o755),
		File("etc/passwd", critestPasswd, 0o644),
		File("etc/group", critestGroup, 0o644),
		File("etc/nsswitch.conf", critestNsswitch, 0o644),
		File("etc/hosts", busyboxHosts, 0o644),
		Dir("home", 0o755),
		Dir("proc", 0o555),
		Dir("root", 0o700),
		Dir("sys", 0o555),
		Dir("tmp", 0o777|fs.ModeSticky),
		Dir("usr/sbin", 0o755),
		Dir("var/run", 0o755),
		Dir("var/spool/mail", 0o755),
		Dir("var/www", 0o755),
	}
	for _, a := range applets {
		entries = append(entries, Hardlink("bin/"+a, "bin/busybox"))
	}
	// Stand-ins only where this busybox lacks the applet.
	for _, s := range []struct{ name, script string }{{"ipcs", ipcsScript}, {"pgrep", pgrepScript}} {
		if !slices.Contains(applets, s.name) {
			entries = append(entries, File("bin/"+s.name, s.script, 0o755))
		}
	}
	for _, l := range libs {
		real, err := filepath.EvalSymlinks(l)
		if err != nil {
			return Layer{}, "", fmt.Errorf("library %s: %w", l, err)
		}
		entries = append(entries, HostFile(l, real, 0o755))
	}
	return Layer{Entries: entries}, arch, nil
}
