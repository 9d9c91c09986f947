package sandbox

import (
	"fmt"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/crid-dev/crid/internal/mount"
)

// mountPoints returns the mount points for which keep returns true.
func mountPoints(keep func(string) bool) ([]string, error) {
	ms, err := mount.Mounts(func(m mount.Info) bool { return keep(m.Mountpoint) })
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(ms))
	for _, m := range ms {
		out = append(out, m.Mountpoint)
	}
	return out, nil
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
	ms, err := mount.Mounts(func(m mount.Info) bool { return m.Mountpoint == dir })
	if err != nil || len(ms) == 0 {
		return false, err
	}
	return ms[len(ms)-1].Root != "/", nil // the last one stacked wins
}
