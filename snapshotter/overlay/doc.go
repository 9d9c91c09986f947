// Package overlay is the default snapshotter: each snapshot is a directory
// of its own files, and a container's root filesystem is an overlay mount
// of its committed ancestors (lower) and its own directory (upper).
//
// # What it owns
//
// Everything under its root, laid out by snapshotter/internal/storage:
// snapshots/<key>/{meta.json,fs/,work/}, tmp/ and the short links l/<id>.
// Layers are unpacked with snapshotter/archive in overlay whiteout mode
// into a fresh fs/, so unpacks do not depend on each other and may run in
// parallel and in any order (ParallelUnpack is true); an ancestor only has
// to exist when a snapshot is mounted, and Mounts fails with ErrNotFound
// while one is missing.
//
// # Mounts
//
//   - no ancestors: a bind mount of fs/ (rbind, rw; ro for a view);
//   - a view or a committed snapshot of a single layer: a read-only bind;
//   - otherwise overlay with lowerdir= the committed chain (nearest first)
//     and, for an active snapshot, upperdir= its fs/ and workdir= its work/.
//
// lowerdir entries are the short links <root>/l/<13 chars> (as Docker's
// overlay2 does), not the fs/ paths, so that the mount helper
// (internal/mount) can fit more than 100 layers in the page-sized
// option string by mounting from <root>/l with relative names. index=off
// is added for upper mounts when the kernel knows the option, since the
// same layers are mounted under many uppers.
//
// New checks with a small test mount that overlay works on the root's
// filesystem; Supported exposes that check so cmd/crid can choose between
// overlay and native.
//
// # Locking
//
// The store's single RWMutex (see storage); nothing here holds a lock
// while unpacking or measuring.
//
// # Imports
//
// snapshotter, snapshotter/archive, snapshotter/internal/storage,
// internal/*, errdefs, x/sys.
package overlay
