package mount

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Info is one line of /proc/self/mountinfo.
type Info struct {
	// Root is the path within the mounted filesystem that forms the mount's
	// root ("/" for a filesystem, a subdirectory for a bind mount of one).
	Root string
	// Mountpoint is where it is mounted.
	Mountpoint string
}

// Mounts returns the current mounts in mountinfo order (a mount stacked on
// the same mount point comes after the one it covers), keeping those for
// which keep returns true (nil keeps all).
func Mounts(keep func(Info) bool) ([]Info, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	defer f.Close()
	var out []Info
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		in := Info{Root: unescape(fields[3]), Mountpoint: unescape(fields[4])}
		if keep == nil || keep(in) {
			out = append(out, in)
		}
	}
	return out, sc.Err()
}

// Under reports whether m is mounted on dir or below it.
func (m Info) Under(dir string) bool {
	return m.Mountpoint == dir || strings.HasPrefix(m.Mountpoint, strings.TrimSuffix(dir, "/")+"/")
}

// unescape undoes the kernel's octal escapes in mountinfo (\040 for a
// space, \134 for a backslash, …).
func unescape(s string) string {
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
