package server

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crid-dev/crid/container/spec"
	"github.com/crid-dev/crid/imagestore"
	"github.com/crid-dev/crid/sandbox"
)

// specInput gathers, from the CRI request, the sandbox and the image, what
// the spec generator needs.
func (s *RuntimeService) specInput(id, rootfs, cgroupsPath string, sb *sandbox.Sandbox,
	cfg *runtime.ContainerConfig, img imagestore.Image) (spec.Input, error) {
	ic := img.Config.Config
	in := spec.Input{
		ID: id, SandboxID: sb.ID,
		Image: spec.ImageConfig{
			Entrypoint: ic.Entrypoint, Cmd: ic.Cmd, Env: ic.Env, WorkingDir: ic.WorkingDir,
			User: ic.User, Volumes: ic.Volumes, StopSignal: ic.StopSignal, Labels: ic.Labels,
		},
		Command: cfg.GetCommand(), Args: cfg.GetArgs(), WorkingDir: cfg.GetWorkingDir(),
		TTY: cfg.GetTty(), Stdin: cfg.GetStdin(),
		Hostname:    sb.Hostname,
		RootfsPath:  rootfs,
		Annotations: cfg.GetAnnotations(),
		Host:        s.specHost,
		Sandbox: spec.SandboxPaths{
			NetNS: sb.NetNSPath, IPCNS: sb.IPCNSPath, UTSNS: sb.UTSNSPath, PIDNS: sb.PIDNSPath,
			HostnamePath: sb.HostnamePath, HostsPath: sb.HostsPath, ResolvConfPath: sb.ResolvConfPath,
			ShmPath:     sb.ShmPath,
			HostNetwork: sb.Config.Namespaces.Network == sandbox.NamespaceNode,
			HostIPC:     sb.Config.Namespaces.IPC == sandbox.NamespaceNode,
			HostPID:     sb.Config.Namespaces.PID == sandbox.NamespaceNode,
		},
	}
	for _, kv := range cfg.GetEnvs() {
		in.Env = append(in.Env, spec.KeyValue{Key: kv.GetKey(), Value: string(kv.GetValue())})
	}
	for _, m := range cfg.GetMounts() {
		if m.GetRecursiveReadOnly() {
			// A runtime that does not know "rro" might mount the volume
			// writable below its top: refuse instead.
			if h, _ := s.handler(sb.Config.RuntimeHandler); !h.RecursiveReadOnlyMounts {
				return spec.Input{}, fmt.Errorf("mount %s: recursive read-only mounts are not supported by runtime handler %q: %w",
					m.GetContainerPath(), sb.Config.RuntimeHandler, errdefs.ErrInvalidArgument)
			}
		}
		in.Mounts = append(in.Mounts, spec.Mount{
			ContainerPath: m.GetContainerPath(), HostPath: m.GetHostPath(), Readonly: m.GetReadonly(),
			SelinuxRelabel: m.GetSelinuxRelabel(), Propagation: spec.Propagation(m.GetPropagation()),
			RecursiveReadOnly: m.GetRecursiveReadOnly(),
			// The host path of an image volume is set once its view is
			// mounted (setImageVolumeSources).
			ImageVolume: m.GetImage() != nil,
			Options:     m.GetMountOptions(),
		})
	}
	for _, d := range cfg.GetDevices() {
		in.Devices = append(in.Devices, spec.Device{
			ContainerPath: d.GetContainerPath(), HostPath: d.GetHostPath(), Permissions: d.GetPermissions(),
		})
	}
	lc := cfg.GetLinux()
	in.Linux = spec.Linux{
		Resources:   resourcesFromCRI(lc.GetResources()),
		CgroupsPath: cgroupsPath,
	}
	sec, err := s.securityFromCRI(lc.GetSecurityContext())
	if err != nil {
		return spec.Input{}, err
	}
	in.Linux.Security = sec
	return in, nil
}

func resourcesFromCRI(r *runtime.LinuxContainerResources) *spec.Resources {
	if r == nil {
		return nil
	}
	out := &spec.Resources{
		CPUPeriod: r.GetCpuPeriod(), CPUQuota: r.GetCpuQuota(), CPUShares: r.GetCpuShares(),
		MemoryLimitInBytes: r.GetMemoryLimitInBytes(), MemorySwapLimitInBytes: r.GetMemorySwapLimitInBytes(),
		OOMScoreAdj: r.GetOomScoreAdj(), CpusetCpus: r.GetCpusetCpus(), CpusetMems: r.GetCpusetMems(),
		Unified: r.GetUnified(),
	}
	for _, h := range r.GetHugepageLimits() {
		out.HugepageLimits = append(out.HugepageLimits, spec.HugepageLimit{PageSize: h.GetPageSize(), Limit: h.GetLimit()})
	}
	return out
}

// profileFromCRI: a nil profile is unconfined (CRI's RuntimeDefault is the
// enum's zero value, so it must be told apart from "not set").
func profileFromCRI(p *runtime.SecurityProfile) spec.SecurityProfile {
	if p == nil {
		return spec.SecurityProfile{Type: spec.ProfileUnconfined}
	}
	switch p.GetProfileType() {
	case runtime.SecurityProfile_RuntimeDefault:
		return spec.SecurityProfile{Type: spec.ProfileRuntimeDefault}
	case runtime.SecurityProfile_Localhost:
		return spec.SecurityProfile{Type: spec.ProfileLocalhost, LocalhostRef: p.GetLocalhostRef()}
	default:
		return spec.SecurityProfile{Type: spec.ProfileUnconfined}
	}
}

func (s *RuntimeService) securityFromCRI(sc *runtime.LinuxContainerSecurityContext) (spec.Security, error) {
	out := spec.Security{
		Privileged:         sc.GetPrivileged(),
		RunAsUsername:      sc.GetRunAsUsername(),
		SupplementalGroups: sc.GetSupplementalGroups(),
		ReadonlyRootfs:     sc.GetReadonlyRootfs(),
		NoNewPrivs:         sc.GetNoNewPrivs(),
		Capabilities: spec.Capabilities{
			Add: sc.GetCapabilities().GetAddCapabilities(), Drop: sc.GetCapabilities().GetDropCapabilities(),
			AddAmbient: sc.GetCapabilities().GetAddAmbientCapabilities(),
		},
		Seccomp:       profileFromCRI(sc.GetSeccomp()),
		Apparmor:      profileFromCRI(sc.GetApparmor()),
		MaskedPaths:   sc.GetMaskedPaths(),
		ReadonlyPaths: sc.GetReadonlyPaths(),
	}
	switch p := sc.GetSupplementalGroupsPolicy(); p {
	case runtime.SupplementalGroupsPolicy_Merge:
		out.SupplementalGroupsPolicy = spec.SupplementalGroupsMerge
	case runtime.SupplementalGroupsPolicy_Strict:
		out.SupplementalGroupsPolicy = spec.SupplementalGroupsStrict
	default:
		// A policy from a newer CRI must not silently become Merge: that
		// could give the process groups the pod asked to leave out.
		return spec.Security{}, fmt.Errorf("supplemental groups policy %d: %w", p, errdefs.ErrInvalidArgument)
	}
	// The deprecated string fields still come from older kubelets.
	if out.Seccomp.Type == spec.ProfileUnconfined && sc.GetSeccompProfilePath() != "" {
		switch p := sc.GetSeccompProfilePath(); {
		case p == "runtime/default" || p == "docker/default":
			out.Seccomp = spec.SecurityProfile{Type: spec.ProfileRuntimeDefault}
		case strings.HasPrefix(p, "localhost/"):
			out.Seccomp = spec.SecurityProfile{Type: spec.ProfileLocalhost, LocalhostRef: strings.TrimPrefix(p, "localhost/")}
		}
	}
	if u := sc.GetRunAsUser(); u != nil {
		v := u.GetValue()
		out.RunAsUser = &v
	}
	if g := sc.GetRunAsGroup(); g != nil {
		v := g.GetValue()
		out.RunAsGroup = &v
	}
	if so := sc.GetSelinuxOptions(); so != nil {
		out.SelinuxOptions = &spec.SELinuxOptions{User: so.GetUser(), Role: so.GetRole(), Type: so.GetType(), Level: so.GetLevel()}
	}
	nso := sc.GetNamespaceOptions()
	out.Namespaces = spec.NamespaceOptions{
		Network: spec.NamespaceMode(nso.GetNetwork()),
		PID:     spec.NamespaceMode(nso.GetPid()),
		IPC:     spec.NamespaceMode(nso.GetIpc()),
	}
	if nso.GetPid() == runtime.NamespaceMode_TARGET {
		target, err := s.containers.Get(nso.GetTargetId())
		if err != nil {
			return spec.Security{}, fmt.Errorf("target container %q of the PID namespace: %w", nso.GetTargetId(), err)
		}
		if target.Pid <= 0 {
			return spec.Security{}, fmt.Errorf("target container %s is not running: %w", target.ID, errdefs.ErrFailedPrecondition)
		}
		out.Namespaces.TargetID = target.ID
		out.Namespaces.TargetPIDNSPath = fmt.Sprintf("/proc/%d/ns/pid", target.Pid)
	}
	return out, nil
}

// stopSignal parses an image's STOPSIGNAL ("SIGTERM", "TERM", "15");
// 0 (SIGTERM) when empty or unknown.
func stopSignal(s string) int {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0
	}
	if n, err := strconv.Atoi(s); err == nil && n > 0 && n < 65 {
		return n
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	return int(unix.SignalNum(name))
}
