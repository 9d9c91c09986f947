package spec

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// capSysResource is CAP_SYS_RESOURCE's bit in /proc/self/status CapEff.
const capSysResource = 24

// ProbeHost reads what Generate needs to know about this host: cgroup
// version, hugetlb controller, the lowest oom_score_adj crid may set, the
// RLIMIT_NOFILE ceiling, cap_last_cap and whether AppArmor is enabled. Call it
// once at start-up.
func ProbeHost() (Host, error) {
	return probeHost("/")
}

func probeHost(root string) (Host, error) {
	var h Host
	read := func(p string) ([]byte, error) { return os.ReadFile(root + p) }

	if ctrls, err := read("sys/fs/cgroup/cgroup.controllers"); err == nil {
		h.CgroupV2 = true
		h.HugetlbAvailable = hasField(string(ctrls), "hugetlb")
	} else if !errors.Is(err, fs.ErrNotExist) {
		return Host{}, fmt.Errorf("probe cgroup v2: %w", err)
	} else {
		// cgroup v1 (or hybrid, where runc uses the v1 controllers):
		// hugetlb is usable only if a v1 hierarchy carries it.
		data, err := read("proc/self/cgroup")
		if err != nil {
			return Host{}, fmt.Errorf("probe cgroups: %w", err)
		}
		h.HugetlbAvailable = v1HasController(data, "hugetlb")
	}

	sysResource, err := hasCapEff(read, capSysResource)
	if err != nil {
		return Host{}, err
	}
	if h.CapBnd, err = capBnd(read); err != nil {
		return Host{}, err
	}
	h.OOMScoreAdjMin = -1000
	if !sysResource {
		data, err := read("proc/self/oom_score_adj")
		if err != nil {
			return Host{}, fmt.Errorf("probe oom_score_adj: %w", err)
		}
		v, err := strconv.Atoi(strings.TrimSpace(string(data)))
		if err != nil {
			return Host{}, fmt.Errorf("parse oom_score_adj: %w", err)
		}
		h.OOMScoreAdjMin = v
		var rl unix.Rlimit
		if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
			return Host{}, fmt.Errorf("get RLIMIT_NOFILE: %w", err)
		}
		h.NofileMax = rl.Max
	}

	if data, err := read("proc/sys/kernel/cap_last_cap"); err == nil {
		if v, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil {
			h.LastCap = v
		}
	}
	if data, err := read("sys/module/apparmor/parameters/enabled"); err == nil {
		h.AppArmorEnabled = strings.HasPrefix(string(data), "Y")
	}
	return h, nil
}

func hasField(s, want string) bool {
	for _, f := range strings.Fields(s) {
		if f == want {
			return true
		}
	}
	return false
}

// v1HasController reports whether /proc/self/cgroup lists a v1 hierarchy
// (non-zero ID) with the controller.
func v1HasController(data []byte, ctrl string) bool {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 || parts[0] == "0" {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == ctrl {
				return true
			}
		}
	}
	return false
}

// capBnd reads crid's own capability bounding set (/proc/self/status).
func capBnd(read func(string) ([]byte, error)) (uint64, error) {
	data, err := read("proc/self/status")
	if err != nil {
		return 0, fmt.Errorf("probe capabilities: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapBnd:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return 0, fmt.Errorf("parse CapBnd: %w", err)
			}
			return mask, nil
		}
	}
	return 0, errors.New("spec: no CapBnd in /proc/self/status")
}

func hasCapEff(read func(string) ([]byte, error), bit uint) (bool, error) {
	data, err := read("proc/self/status")
	if err != nil {
		return false, fmt.Errorf("probe capabilities: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapEff:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return false, fmt.Errorf("parse CapEff: %w", err)
			}
			return mask&(1<<bit) != 0, nil
		}
	}
	return false, errors.New("spec: no CapEff in /proc/self/status")
}
