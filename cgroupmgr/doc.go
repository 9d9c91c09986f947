// Package cgroupmgr places pods and containers in cgroups under the parent
// kubelet names, for the cgroupfs and systemd drivers, on cgroup v1 and v2.
//
// Today it decides paths: the OCI runtime (runc, crun) creates, limits and
// removes the cgroups from the path in the spec. Resource updates, stats and
// OOM reporting on containerd/cgroups/v3 come with the cgroup issue.
//
// [Reader] reads a container cgroup's files: [Reader.Stats], the few
// figures of CRI ContainerStats, and [Reader.Metrics], the detail cadvisor
// exports (CRI ListPodSandboxMetrics), including the file descriptors its
// processes hold (from /proc).
//
// Imports: internal/* only.
package cgroupmgr
