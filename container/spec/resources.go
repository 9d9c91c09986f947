package spec

import (
	"fmt"
	"log/slog"
	"maps"
	"regexp"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

var pageSizeRE = regexp.MustCompile(`^[0-9]+[KMGTP]?B$`)

// setResources maps CRI resources and the OOM score. The OOM score is always
// set (clamped to what the host lets crid set), even without Resources.
func setResources(s *specs.Spec, in Input, log *slog.Logger) error {
	r := in.Linux.Resources
	if r == nil {
		r = &Resources{}
	}
	adj := clampOOM(r.OOMScoreAdj, in.Host.OOMScoreAdjMin)
	s.Process.OOMScoreAdj = &adj
	return addResources(s.Linux.Resources, r, in.Host, log)
}

// LinuxResources maps CRI resources to the OCI form, for
// UpdateContainerResources: the same rules as Generate (hugepage limits
// dropped without hugetlb, unified keys dropped on cgroup v1).
func LinuxResources(r *Resources, h Host, log *slog.Logger) (*specs.LinuxResources, error) {
	if log == nil {
		log = slog.Default()
	}
	lr := &specs.LinuxResources{}
	if r == nil {
		return lr, nil
	}
	if err := addResources(lr, r, h, log); err != nil {
		return nil, err
	}
	return lr, nil
}

func addResources(lr *specs.LinuxResources, r *Resources, h Host, log *slog.Logger) error {
	cpu := &specs.LinuxCPU{Cpus: r.CpusetCpus, Mems: r.CpusetMems}
	if r.CPUShares < 0 || r.CPUPeriod < 0 {
		return fmt.Errorf("negative cpu shares or period: %w", errdefs.ErrInvalidArgument)
	}
	if r.CPUShares > 0 {
		v := uint64(r.CPUShares)
		cpu.Shares = &v
	}
	if r.CPUQuota != 0 {
		v := r.CPUQuota
		cpu.Quota = &v
	}
	if r.CPUPeriod > 0 {
		v := uint64(r.CPUPeriod)
		cpu.Period = &v
	}
	if *cpu != (specs.LinuxCPU{}) {
		lr.CPU = cpu
	}

	mem := &specs.LinuxMemory{}
	if r.MemoryLimitInBytes > 0 {
		v := r.MemoryLimitInBytes
		mem.Limit = &v
	}
	if r.MemorySwapLimitInBytes > 0 {
		v := r.MemorySwapLimitInBytes
		mem.Swap = &v
	}
	if mem.Limit != nil || mem.Swap != nil {
		lr.Memory = mem
	}
	if r.PidsLimit > 0 {
		v := r.PidsLimit
		lr.Pids = &specs.LinuxPids{Limit: &v}
	}

	if len(r.HugepageLimits) > 0 {
		if !h.HugetlbAvailable {
			log.Warn("hugetlb controller is absent, dropping hugepage limits", "limits", len(r.HugepageLimits))
		} else {
			for _, h := range r.HugepageLimits {
				if !pageSizeRE.MatchString(h.PageSize) {
					return fmt.Errorf("invalid hugepage size %q: %w", h.PageSize, errdefs.ErrInvalidArgument)
				}
				lr.HugepageLimits = append(lr.HugepageLimits, specs.LinuxHugepageLimit{Pagesize: h.PageSize, Limit: h.Limit})
			}
		}
	}
	if len(r.Unified) > 0 {
		if !h.CgroupV2 {
			log.Warn("cgroup v1 host, dropping unified resources", "keys", len(r.Unified))
		} else {
			lr.Unified = maps.Clone(r.Unified)
		}
	}
	return nil
}

// clampOOM keeps v within [min, 1000] and the kernel's [-1000, 1000]: root
// without CAP_SYS_RESOURCE cannot go below its own score, and runc then fails
// with an opaque error.
func clampOOM(v int64, lowest int) int {
	lo := max(int64(lowest), -1000)
	return int(min(max(v, lo), 1000))
}
