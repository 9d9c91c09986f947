package spec

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// maxIDFileSize caps how much of the image's /etc/passwd or /etc/group is read.
const maxIDFileSize = 1 << 20

// maxID is the largest UID/GID crid accepts. Anything larger must never wrap
// around to 0 (CVE-2024-40635).
const maxID = math.MaxInt32

type passwdEntry struct {
	name     string
	uid, gid uint32
}

type groupEntry struct {
	name    string
	gid     uint32
	members []string
}

// resolveUser picks the process user: RunAsUser, else RunAsUsername, else
// the image USER; RunAsGroup overrides the primary group. Names are looked up
// in the rootfs's /etc/passwd and /etc/group, read inside the rootfs.
func resolveUser(rootfs, imageUser string, sec Security) (specs.User, error) {
	var (
		pw       []passwdEntry
		pwLoaded bool
		grp      []groupEntry
		grLoaded bool
	)
	passwd := func() ([]passwdEntry, error) {
		if !pwLoaded {
			data, err := readRootFile(rootfs, "/etc/passwd")
			if err != nil {
				return nil, err
			}
			pw, pwLoaded = parsePasswd(data), true
		}
		return pw, nil
	}
	group := func() ([]groupEntry, error) {
		if !grLoaded {
			data, err := readRootFile(rootfs, "/etc/group")
			if err != nil {
				return nil, err
			}
			grp, grLoaded = parseGroup(data), true
		}
		return grp, nil
	}
	byUID := func(uid uint32) (*passwdEntry, error) {
		entries, err := passwd()
		if err != nil {
			return nil, err
		}
		for i := range entries {
			if entries[i].uid == uid {
				return &entries[i], nil
			}
		}
		return nil, nil
	}
	byName := func(name string) (*passwdEntry, error) {
		entries, err := passwd()
		if err != nil {
			return nil, err
		}
		for i := range entries {
			if entries[i].name == name {
				return &entries[i], nil
			}
		}
		return nil, fmt.Errorf("user %s not found in /etc/passwd: %w", name, errdefs.ErrInvalidArgument)
	}

	var (
		uid, gid uint32
		entry    *passwdEntry
		err      error
	)
	switch {
	case sec.RunAsUser != nil:
		if uid, err = checkID64("uid", *sec.RunAsUser); err != nil {
			return specs.User{}, err
		}
		if entry, err = byUID(uid); err != nil {
			return specs.User{}, err
		}
	case sec.RunAsUsername != "":
		if entry, err = byName(sec.RunAsUsername); err != nil {
			return specs.User{}, err
		}
		uid = entry.uid
	default:
		u, g, hasGroup := strings.Cut(imageUser, ":")
		switch {
		case u == "":
			uid = 0
			if entry, err = byUID(0); err != nil {
				return specs.User{}, err
			}
		case isNumeric(u):
			if uid, err = parseID("uid", u); err != nil {
				return specs.User{}, err
			}
			if entry, err = byUID(uid); err != nil {
				return specs.User{}, err
			}
		default:
			if entry, err = byName(u); err != nil {
				return specs.User{}, err
			}
			uid = entry.uid
		}
		if hasGroup && g != "" {
			if isNumeric(g) {
				if gid, err = parseID("gid", g); err != nil {
					return specs.User{}, err
				}
			} else {
				groups, err := group()
				if err != nil {
					return specs.User{}, err
				}
				i := slices.IndexFunc(groups, func(e groupEntry) bool { return e.name == g })
				if i < 0 {
					return specs.User{}, fmt.Errorf("group %s not found in /etc/group: %w", g, errdefs.ErrInvalidArgument)
				}
				gid = groups[i].gid
			}
			entry = withGID(entry, gid)
		}
	}
	if entry != nil {
		gid = entry.gid
	}
	if sec.RunAsGroup != nil {
		if sec.RunAsUser == nil && sec.RunAsUsername == "" {
			// CRI: run_as_group may only be given with run_as_user or
			// run_as_username (the image's USER does not count).
			return specs.User{}, fmt.Errorf("run as group is set without run as user or run as username: %w", errdefs.ErrInvalidArgument)
		}
		if gid, err = checkID64("gid", *sec.RunAsGroup); err != nil {
			return specs.User{}, err
		}
	}

	gids := []uint32{gid}
	if sec.SupplementalGroupsPolicy != SupplementalGroupsStrict && entry != nil && entry.name != "" {
		groups, err := group()
		if err != nil {
			return specs.User{}, err
		}
		for _, g := range groups {
			if slices.Contains(g.members, entry.name) {
				gids = append(gids, g.gid)
			}
		}
	}
	for _, g := range sec.SupplementalGroups {
		id, err := checkID64("supplemental gid", g)
		if err != nil {
			return specs.User{}, err
		}
		gids = append(gids, id)
	}
	slices.Sort(gids[1:])
	gids = slices.Compact(gids)
	if i := slices.Index(gids[1:], gid); i >= 0 {
		gids = slices.Delete(gids, i+1, i+2)
	}
	return specs.User{UID: uid, GID: gid, AdditionalGids: gids}, nil
}

// withGID returns a copy of e (possibly nil: an unnamed user) with gid.
func withGID(e *passwdEntry, gid uint32) *passwdEntry {
	c := passwdEntry{gid: gid}
	if e != nil {
		c = *e
		c.gid = gid
	}
	return &c
}

func isNumeric(s string) bool {
	return s != "" && strings.Trim(s, "0123456789") == ""
}

func parseID(what, s string) (uint32, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > maxID {
		return 0, fmt.Errorf("%s %q out of range 0..%d: %w", what, s, maxID, errdefs.ErrInvalidArgument)
	}
	return uint32(n), nil
}

func checkID64(what string, n int64) (uint32, error) {
	if n < 0 || n > maxID {
		return 0, fmt.Errorf("%s %d out of range 0..%d: %w", what, n, maxID, errdefs.ErrInvalidArgument)
	}
	return uint32(n), nil
}

// parseIDField is parseID for file content: invalid means "skip the line".
func parseIDField(s string) (uint32, bool) {
	if !isNumeric(s) {
		return 0, false
	}
	n, err := parseID("", s)
	return n, err == nil
}

// idFileRecords returns the colon-separated records of an /etc/passwd or
// /etc/group file that have at least minFields fields and a name, skipping
// blank lines, comments and NIS "+"/"-" entries.
func idFileRecords(data []byte, minFields int) [][]string {
	var out [][]string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), maxIDFileSize)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == '+' || line[0] == '-' {
			continue
		}
		if f := strings.Split(line, ":"); len(f) >= minFields && f[0] != "" {
			out = append(out, f)
		}
	}
	return out
}

func parsePasswd(data []byte) []passwdEntry {
	var out []passwdEntry
	for _, f := range idFileRecords(data, 4) {
		uid, ok1 := parseIDField(f[2])
		gid, ok2 := parseIDField(f[3])
		if ok1 && ok2 {
			out = append(out, passwdEntry{name: f[0], uid: uid, gid: gid})
		}
	}
	return out
}

func parseGroup(data []byte) []groupEntry {
	var out []groupEntry
	for _, f := range idFileRecords(data, 3) {
		gid, ok := parseIDField(f[2])
		if !ok {
			continue
		}
		e := groupEntry{name: f[0], gid: gid}
		if len(f) > 3 && f[3] != "" {
			for _, m := range strings.Split(f[3], ",") {
				if m = strings.TrimSpace(m); m != "" {
					e.members = append(e.members, m)
				}
			}
		}
		out = append(out, e)
	}
	return out
}

// readRootFile reads path inside rootfs. Symlinks are resolved as if rootfs
// were "/" (RESOLVE_IN_ROOT), only regular files are read (a FIFO would
// block), and at most maxIDFileSize bytes. A missing file reads as empty.
func readRootFile(rootfs, path string) ([]byte, error) {
	h, err := pathrs.OpenInRoot(rootfs, path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTDIR) {
			return nil, nil
		}
		return nil, fmt.Errorf("open %s in rootfs: %v: %w", path, err, errdefs.ErrInvalidArgument)
	}
	defer h.Close()
	st, err := h.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat %s in rootfs: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s in rootfs is not a regular file: %w", path, errdefs.ErrInvalidArgument)
	}
	if st.Size() > maxIDFileSize {
		return nil, fmt.Errorf("%s in rootfs is larger than %d bytes: %w", path, maxIDFileSize, errdefs.ErrInvalidArgument)
	}
	f, err := pathrs.Reopen(h, unix.O_RDONLY|unix.O_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("reopen %s in rootfs: %w", path, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxIDFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s in rootfs: %w", path, err)
	}
	if len(data) > maxIDFileSize {
		return nil, fmt.Errorf("%s in rootfs is larger than %d bytes: %w", path, maxIDFileSize, errdefs.ErrInvalidArgument)
	}
	return data, nil
}
