package spec

import "log/slog"

// Input is everything Generate needs for one container. server/convert.go
// fills it from the CRI CreateContainerRequest, the sandbox record and the
// image config; the field names mirror CRI's so the mapping stays obvious.
type Input struct {
	// ID and SandboxID are the container and pod sandbox IDs.
	ID, SandboxID string
	// Image is the untrusted part of the image config that shapes the spec.
	Image ImageConfig
	// Command replaces Image.Entrypoint and Args replaces Image.Cmd
	// (CRI ContainerConfig.command/args, Docker semantics).
	Command, Args []string
	// Env overrides Image.Env by key.
	Env []KeyValue
	// WorkingDir overrides Image.WorkingDir; both empty means "/".
	WorkingDir string
	// Mounts are the CRI mounts (kubelet volumes, /etc/hosts if it manages it, ...).
	Mounts []Mount
	// Devices are host devices to expose.
	Devices []Device
	// TTY gives the process a terminal. Stdin is recorded for the caller
	// (the OCI spec has no stdin flag).
	TTY, Stdin bool
	// Hostname is the pod's hostname: exported as $HOSTNAME, and set in the
	// UTS namespace only when the container gets a new one.
	Hostname string
	// Linux holds CRI LinuxContainerConfig.
	Linux Linux
	// Sandbox holds what the pod sandbox already set up.
	Sandbox SandboxPaths
	// RootfsPath is the mounted container rootfs (an absolute host path).
	RootfsPath string
	// Annotations are copied to the spec unchanged.
	Annotations map[string]string
	// Host describes what this host lets crid do; see ProbeHost.
	Host Host
	// Logger receives warnings about settings that were dropped (hugetlb,
	// unified on v1). nil means slog.Default().
	Logger *slog.Logger
}

// ImageConfig is the part of the OCI image config Generate uses. Everything
// in it is untrusted.
type ImageConfig struct {
	Entrypoint, Cmd []string
	// Env holds KEY=VALUE strings as in the image config.
	Env        []string
	WorkingDir string
	// User is the image's USER: "", "uid", "uid:gid", "name", "name:group".
	User string
	// Volumes are the image's VOLUMEs. Generate skips them (see doc.go).
	Volumes map[string]struct{}
	// StopSignal and Labels are not part of the OCI spec; they are carried
	// here so the caller has one image view.
	StopSignal string
	Labels     map[string]string
}

// KeyValue is one environment variable.
type KeyValue struct {
	Key, Value string
}

// Propagation is a CRI mount propagation mode.
type Propagation int

// Propagation modes, numbered like CRI's MountPropagation enum.
const (
	PropagationPrivate         Propagation = iota // rprivate
	PropagationHostToContainer                    // rslave
	PropagationBidirectional                      // rshared
)

// Mount is a CRI bind mount.
type Mount struct {
	ContainerPath, HostPath string
	Readonly                bool
	// SelinuxRelabel is accepted and ignored: SELinux is off on crid hosts.
	SelinuxRelabel bool
	Propagation    Propagation
	// RecursiveReadOnly asks for a recursively read-only mount ("rro");
	// it requires Readonly and PropagationPrivate, as CRI specifies.
	RecursiveReadOnly bool
	// ImageVolume says HostPath holds an image's files (CRI image volume,
	// KEP-4639): untrusted content, so the mount must be Readonly and is
	// also nosuid and nodev. It is not noexec: running the image's
	// binaries is what such volumes are for.
	ImageVolume bool
	// Options are CRI's mount_options: more restrictions for the bind
	// mount, from mountOptionFlags (noexec, nosuid, nodev, as the
	// Kubernetes API allows). Anything else is refused: read-only and
	// propagation have their own fields, and the rest would loosen or
	// redefine the mount.
	Options []string
}

// Device is a host device to expose to the container.
type Device struct {
	ContainerPath, HostPath string
	// Permissions is the cgroup access string, a subset of "rwm"; "" means "rwm".
	Permissions string
}

// Linux is CRI LinuxContainerConfig plus the cgroup parent and sysctls.
type Linux struct {
	// Resources may be nil (no limits).
	Resources *Resources
	Security  Security
	// CgroupsPath is copied to Linux.CgroupsPath.
	CgroupsPath string
	// Sysctls are namespaced sysctls; validated strictly (CVE-2022-0811).
	Sysctls map[string]string
}

// HugepageLimit limits one hugepage size, e.g. PageSize "2MB".
type HugepageLimit struct {
	PageSize string
	Limit    uint64
}

// Resources is CRI LinuxContainerResources. Zero means "not set" for every
// numeric field.
type Resources struct {
	CPUPeriod, CPUQuota, CPUShares             int64
	MemoryLimitInBytes, MemorySwapLimitInBytes int64
	// OOMScoreAdj is clamped to [Host.OOMScoreAdjMin, 1000].
	OOMScoreAdj            int64
	CpusetCpus, CpusetMems string
	HugepageLimits         []HugepageLimit
	// Unified is cgroup v2 key/values; dropped with a warning on v1.
	Unified   map[string]string
	PidsLimit int64
}

// SupplementalGroupsPolicy is CRI's policy for the process's extra groups.
// Under either policy the spec's process.user.additionalGids starts with
// the primary GID (RunAsGroup, else the user's group from the image), so
// that getgroups(2), and `id -G`, list it as kubelet and containerd expect;
// the other GIDs follow sorted and without duplicates.
type SupplementalGroupsPolicy int

// Supplemental group policies.
const (
	// SupplementalGroupsMerge (CRI's default) adds to SupplementalGroups
	// every group of the image's /etc/group that lists the user (by the
	// name /etc/passwd gives its UID, or RunAsUsername) as a member, even
	// when RunAsGroup replaces the primary group.
	SupplementalGroupsMerge SupplementalGroupsPolicy = iota
	// SupplementalGroupsStrict uses only the primary group and
	// SupplementalGroups: nothing from the image's /etc/group.
	SupplementalGroupsStrict
)

// ProfileType is a CRI SecurityProfile type.
type ProfileType int

// Profile types. The zero value is Unconfined, which is what an empty CRI
// profile means.
const (
	ProfileUnconfined ProfileType = iota
	ProfileRuntimeDefault
	ProfileLocalhost
)

// SecurityProfile is a seccomp or AppArmor profile choice. For seccomp,
// LocalhostRef is the absolute path of an OCI LinuxSeccomp JSON file; for
// AppArmor it is the profile name.
type SecurityProfile struct {
	Type         ProfileType
	LocalhostRef string
}

// Capabilities is CRI Capability. Names may carry the CAP_ prefix or not, in
// any case; "ALL" means every capability.
type Capabilities struct {
	Add, Drop  []string
	AddAmbient []string
}

// SELinuxOptions is CRI SELinuxOption; ignored on hosts without SELinux.
type SELinuxOptions struct {
	User, Role, Type, Level string
}

// NamespaceMode is a CRI NamespaceMode.
type NamespaceMode int

// Namespace modes, numbered like CRI's enum.
const (
	NamespacePod       NamespaceMode = iota // share the sandbox's
	NamespaceContainer                      // a new one for this container
	NamespaceNode                           // the host's
	NamespaceTarget                         // another container's (PID only)
)

// NamespaceOptions is CRI NamespaceOption.
type NamespaceOptions struct {
	Network, PID, IPC NamespaceMode
	// TargetID is the container whose PID namespace NamespaceTarget joins;
	// TargetPIDNSPath is that namespace, resolved by the caller
	// (e.g. /proc/<pid>/ns/pid of its init).
	TargetID        string
	TargetPIDNSPath string
}

// Security is CRI LinuxContainerSecurityContext.
type Security struct {
	Privileged bool
	// RunAsUser wins over RunAsUsername, which wins over the image USER.
	RunAsUser                *int64
	RunAsUsername            string
	RunAsGroup               *int64
	SupplementalGroups       []int64
	SupplementalGroupsPolicy SupplementalGroupsPolicy
	ReadonlyRootfs           bool
	NoNewPrivs               bool
	Capabilities             Capabilities
	Seccomp                  SecurityProfile
	Apparmor                 SecurityProfile
	SelinuxOptions           *SELinuxOptions
	// MaskedPaths and ReadonlyPaths: nil means crid's defaults, an empty
	// non-nil slice means none (CRI's Unmasked procMount). Ignored when
	// Privileged.
	MaskedPaths, ReadonlyPaths []string
	Namespaces                 NamespaceOptions
}

// SandboxPaths is what the pod sandbox provides. A namespace path of ""
// means the host's namespace.
type SandboxPaths struct {
	NetNS, IPCNS, UTSNS, PIDNS string
	// HostnamePath, HostsPath and ResolvConfPath are bind-mounted at
	// /etc/hostname, /etc/hosts and /etc/resolv.conf unless a CRI mount
	// already targets them; "" skips the mount. ShmPath is bind-mounted at
	// /dev/shm; "" gives the container its own tmpfs.
	HostnamePath, HostsPath, ResolvConfPath, ShmPath string
	HostNetwork, HostIPC, HostPID                    bool
}

// Host describes the node. Build it once with ProbeHost.
type Host struct {
	// CgroupV2 is true on a unified (v2-only) hierarchy.
	CgroupV2 bool
	// HugetlbAvailable reports a usable hugetlb controller.
	HugetlbAvailable bool
	// OOMScoreAdjMin is the lowest oom_score_adj crid may give a container.
	OOMScoreAdjMin int
	// NofileMax caps RLIMIT_NOFILE when crid cannot raise its hard limit;
	// 0 means no cap.
	NofileMax uint64
	// LastCap is /proc/sys/kernel/cap_last_cap; 0 means every capability
	// crid knows.
	LastCap int
	// CapBnd is crid's own capability bounding set (bit n = capability n);
	// 0 means unknown (no limit). A container can never get a capability
	// outside it: "all capabilities" (privileged, add ALL) means all of
	// these, as containerd's WithAllCurrentCapabilities does.
	CapBnd uint64
	// AppArmorEnabled reports /sys/module/apparmor/parameters/enabled = Y.
	AppArmorEnabled bool
	// AppArmorDefaultProfile names the loaded profile used for
	// RuntimeDefault when AppArmor is enabled.
	AppArmorDefaultProfile string
}
