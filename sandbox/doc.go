// Package sandbox owns pod sandboxes: the name reservation that makes
// RunPodSandbox idempotent, the sandbox state machine, the per-sandbox
// lifecycle lock, the pod's kernel namespaces (created without a pause
// image and pinned by bind mounts), the files every container of the pod
// bind-mounts (hostname, hosts, resolv.conf, /dev/shm), the pod-level
// sysctls, the pause process that holds a pod PID namespace, and a
// versioned checkpoint per sandbox that New recovers.
//
// It knows nothing of CRI: server converts runtime.v1 requests to [Config]
// and [Sandbox] back. Networking (CNI) is done by server between [Manager.Run]
// and the first container, using [Sandbox.NetNSPath], and the result is
// recorded with [Manager.Update].
//
// # Imports
//
// internal/* and third-party libraries only (never k8s.io/cri-api, server,
// container, snapshotter, imagestore).
//
// # On-disk layout
//
//	<StateDir>/                 0700, a private bind mount of itself (see below)
//	  <id>/                     one directory per sandbox, 0700
//	    checkpoint.json         {"version":"v1","sandbox":{…}}, written atomically
//	    hostname hosts resolv.conf
//	    shm/                    tmpfs (size=64m,mode=1777,nosuid,nodev,noexec) when IPC is POD
//	    netns ipcns utsns       nsfs bind mounts pinning the pod's namespaces
//	  .removing-<id>/           a sandbox being deleted (renamed first, then RemoveAll)
//
// StateDir is made a mount point with private propagation before anything
// is mounted below it (as iproute2 and containerd do for their netns
// directories): a bind mount of a namespace made under a shared mount would
// be copied into every peer mount namespace, where nobody unmounts it and it
// keeps the namespace alive (containerd#6143). The StateDir mount itself is
// left in place by design, like /run/netns.
//
// # Crash consistency
//
// Run writes the checkpoint in state Created before acquiring anything and
// in state Ready when done. New drops (unmounts and deletes) a directory with
// no readable checkpoint or whose checkpoint says Created: that Run never
// finished and its caller got an error. A Ready record whose namespaces,
// shm or pause process are gone is marked NotReady; kubelet then stops and
// removes it.
//
// # Locks
//
// Lock order, outermost first:
//
//	entry.mu (sandbox lifecycle) → container locks (package container) → Manager.mu → entry.smu
//
// entry.mu serializes Stop, Remove and [Manager.WithReady] (which server
// holds while creating a container, so a container cannot be created in a
// sandbox being stopped). It is held across syscalls. Manager.mu guards the
// id and name maps only and is never held across a syscall or while taking
// another lock. entry.smu guards the record (state, IPs, Extra) and
// serializes checkpoint writes; nothing else is locked while it is held.
//
// # Namespace threads
//
// Namespaces are created, and sysctls applied, on a goroutine that calls
// runtime.LockOSThread and never unlocks, so the thread whose namespaces
// changed exits with the goroutine and no other goroutine ever runs on it.
// [DialInNetNS] (port forwarding) and [NetDevStats] (the pod's network
// counters) enter a pod's network namespace on such a thread too.
package sandbox
