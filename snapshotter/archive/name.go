package archive

import (
	"fmt"
	"path"
	"strings"

	"github.com/containerd/errdefs"
)

const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	opaqueMarker   = ".wh..wh..opq"
	// pathMax is Linux's PATH_MAX, including the terminating NUL.
	pathMax = 4096
)

// cleanName turns a tar member name into a path relative to the root: ""
// for the root itself, otherwise "a/b/c" with no empty, "." or ".."
// segment. It refuses names with a ".." segment rather than guessing what
// they meant. The common shapes ("a/b", "./a/b", "a/b/") need no allocation.
func cleanName(name string) (string, error) {
	if len(name) >= pathMax {
		return "", refuse(name, "name longer than PATH_MAX")
	}
	if strings.IndexByte(name, 0) >= 0 {
		return "", refuse(name, "name contains a NUL byte")
	}
	rel := name
	for {
		if strings.HasPrefix(rel, "/") {
			rel = rel[1:]
		} else if strings.HasPrefix(rel, "./") {
			rel = rel[2:]
		} else {
			break
		}
	}
	rel = strings.TrimRight(rel, "/")
	if rel == "." {
		return "", nil
	}
	messy := false
	for seg := range strings.SplitSeq(rel, "/") {
		switch seg {
		case "..":
			return "", refuse(name, `name has a ".." segment`)
		case "", ".":
			messy = true
		}
	}
	if messy {
		rel = path.Clean(rel)
		if rel == "." {
			rel = ""
		}
	}
	return rel, nil
}

// splitName splits a cleaned name into its directory ("" for the root) and
// last component.
func splitName(rel string) (dir, base string) {
	i := strings.LastIndexByte(rel, '/')
	if i < 0 {
		return "", rel
	}
	return rel[:i], rel[i+1:]
}

// joinName joins a cleaned directory name and a component.
func joinName(dir, base string) string {
	if dir == "" {
		return base
	}
	return dir + "/" + base
}

// isAUFSMeta reports whether a cleaned name is, or lies under, AUFS
// metadata (.wh..wh.plnk and friends) other than the opaque marker.
func isAUFSMeta(rel string) bool {
	if !strings.Contains(rel, whiteoutMeta) {
		return false
	}
	for seg := range strings.SplitSeq(rel, "/") {
		if strings.HasPrefix(seg, whiteoutMeta) && seg != opaqueMarker {
			return true
		}
	}
	return false
}

// refuse is the error for a member the archive must not contain.
func refuse(name, why string) error {
	return fmt.Errorf("layer entry %s: %s: %w", quote(name), why, errdefs.ErrInvalidArgument)
}

// quote quotes a hostile name for an error message, cut to a readable size.
func quote(name string) string {
	const max = 200
	if len(name) > max {
		return fmt.Sprintf("%q…", name[:max])
	}
	return fmt.Sprintf("%q", name)
}
