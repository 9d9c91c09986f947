// Package testsuite is the conformance suite every crid snapshotter passes:
// Prepare, View, Commit, Unpack, Remove, Walk, Stat, Usage and Mounts, their
// errdefs error classes, what a container sees on top of several layers
// (whiteouts and opaque directories across layers), isolation of an active
// snapshot from its parent, crash leftovers and, for snapshotters with
// ParallelUnpack, layers unpacked out of order.
//
// It mounts what the snapshotter returns (internal/mount), so it needs
// root; every mount is undone in t.Cleanup. It assumes the on-disk layout
// of snapshotter/internal/storage (<root>/tmp, <root>/snapshots) to fake a
// crash.
//
// Imports: snapshotter, internal/mount, snapshotter/internal/tartest,
// internal/testutil, errdefs, testify.
package testsuite
