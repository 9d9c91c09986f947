// Package spec builds the OCI runtime spec (runtime-spec specs-go) that runc
// runs for one CRI container.
//
// Generate is a function of its Input: it does not probe the host (the caller
// passes a Host, usually from ProbeHost once at start-up) and it keeps no
// state. The only I/O it does is read-only: /etc/passwd and /etc/group inside
// the container rootfs (opened with RESOLVE_IN_ROOT semantics through
// filepath-securejoin's pathrs-lite, size-capped, regular files only),
// lstat/readlink inside the rootfs to resolve mount targets, stat of host
// device nodes and mount sources, and a Localhost seccomp profile file.
//
// Imports: runtime-spec, errdefs, securejoin, x/sys and internal/* only. It
// must not import k8s.io/cri-api (server/convert.go maps CRI to Input) nor any
// other crid domain package. There are no locks.
//
// Where crid deliberately differs from containerd:
//   - Image VOLUMEs are skipped: no anonymous volume is created and nothing is
//     copied from the image or the host (CVE-2022-23648). kubelet mounts every
//     volume the pod needs explicitly.
//   - Mount sources must exist: containerd MkdirAll's a missing host path;
//     Generate is side-effect free and returns ErrInvalidArgument instead
//     (kubelet creates hostPath volumes itself).
//   - Mount targets are resolved inside the rootfs (CVE-2026-41579): a CRI
//     mount whose target path crosses a symlink in the image is rewritten to
//     the in-root resolution, so it can never land on the host; the runtime
//     owned targets (/proc, /sys, /dev, ...) are refused outright when the
//     image made them (or a parent) a symlink. Targets under /dev, /proc,
//     /sys or under another mount's target are not resolved against the
//     image (the image is not what runc finds there); runc resolves those
//     in the live mount tree.
//   - Numeric UIDs/GIDs (request, image USER, /etc/passwd, /etc/group) must be
//     in 0..2^31-1; anything else is an error, never a wrap-around to 0
//     (CVE-2024-40635).
//   - SupplementalGroupsPolicy Merge adds every image group that lists the
//     user, as initgroups(3) would; containerd's WithAdditionalGIDs skips a
//     group named like the user. Both put the primary GID first in
//     additionalGids (see SupplementalGroupsPolicy).
//   - Bad requests are ErrInvalidArgument, not plain errors (arrive as
//     InvalidArgument, not Unknown).
//   - AppArmor: containerd fails every non-Unconfined profile with "apparmor
//     is not supported" when AppArmor is off. crid accepts and ignores
//     RuntimeDefault there (there is no node default to apply), but still
//     refuses a named Localhost profile: the user asked for a specific
//     confinement crid cannot give. When AppArmor is on, RuntimeDefault uses
//     Host.AppArmorDefaultProfile (loaded by the caller) and fails with
//     ErrNotImplemented if none is configured, never silently unconfined.
//     Privileged containers get no profile, as in containerd.
//   - SELinux: this host has SELinux disabled; SelinuxOptions and mount
//     relabelling are accepted and ignored, as containerd's label package does
//     when SELinux is off.
//   - oom_score_adj is clamped to Host.OOMScoreAdjMin (containerd's
//     restrict_oom_score_adj, always on): without CAP_SYS_RESOURCE runc fails
//     opaquely on a value below its own.
//   - RLIMIT_NOFILE is 1048576 like containerd, but capped at Host.NofileMax
//     when crid may not raise its hard limit.
//   - Hugepage limits are dropped with a warning when the hugetlb controller
//     is absent (containerd's tolerate_missing_hugetlb_controller); Unified
//     resources are dropped with a warning on cgroup v1.
package spec
