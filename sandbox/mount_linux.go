package sandbox

import (
	"bufio"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/crid-dev/crid/internal/mount"
)

// mountPoints returns the mount points in /proc/self/mountinfo for which
// keep returns true.
func mountPoints(keep func(string) bool) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		p := unescapeMountinfo(fields[4])
		if keep(p) {
			out = append(out, p)
		}
	}
	return out, sc.Err()
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for space, …).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isMountPoint(p string) (bool, error) {
	mps, err := mountPoints(func(m string) bool { return m == p })
	return len(mps) > 0, err
}

// unmountUnder unmounts every mount strictly below dir, deepest first.
func unmountUnder(dir string) error {
	prefix := strings.TrimSuffix(dir, "/") + "/"
	mps, err := mountPoints(func(m string) bool { return strings.HasPrefix(m, prefix) })
	if err != nil {
		return fmt.Errorf("read mountinfo: %w", err)
	}
	sort.Slice(mps, func(i, j int) bool { return len(mps[i]) > len(mps[j]) })
	for _, p := range mps {
		if err := mount.Unmount(p); err != nil {
			return err
		}
	}
	return nil
}

// makePrivateMount makes dir a mount point (a bind mount of itself) if it
// is not one, and gives it private propagation, so that what is mounted
// below it never propagates to peer mount namespaces.
func makePrivateMount(dir string) error {
	mp, err := isMountPoint(dir)
	if err != nil {
		return err
	}
	if !mp {
		if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s on itself: %w", dir, err)
		}
	}
	if err := unix.Mount("", dir, "", unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make %s private: %w", dir, err)
	}
	return nil
}

// isSelfBind reports whether the last mount on dir is a bind mount of a
// subdirectory (mountinfo's root field is not "/"), which is what
// makePrivateMount makes; a filesystem mounted on dir has root "/".
func isSelfBind(dir string) (bool, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	defer f.Close()
	self := false
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 5 && unescapeMountinfo(fields[4]) == dir {
			self = unescapeMountinfo(fields[3]) != "/" // the last one wins
		}
	}
	return self, sc.Err()
}
