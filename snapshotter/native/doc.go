// Package native is the copy-based snapshotter, for root filesystems
// without overlay support: every active or unpacked snapshot holds a full
// copy of its parent's files.
//
// # What it owns
//
// Everything under its root, laid out by snapshotter/internal/storage
// (snapshots/<key>/{meta.json,fs/} and tmp/; no work dirs, no links).
//
//   - Prepare copies the parent's tree into the new snapshot; Unpack copies
//     it and then applies the layer with snapshotter/archive in native
//     whiteout mode (whiteouts delete from the copy). The copy keeps hard
//     links within the tree, extended attributes, ownership, modes, times
//     and device nodes, and skips sockets. Data goes through
//     copy_file_range, so filesystems with reflinks share blocks.
//   - A view copies nothing: it is a read-only bind of its parent, which
//     cannot be removed while the view exists.
//   - Mounts are always one bind mount: rbind, rw for active snapshots and
//     ro otherwise.
//   - ParallelUnpack is false: a layer needs its parent's files.
//
// Usage: an Unpack records what the layer itself wrote (as overlay does,
// so image sizes agree); an active snapshot, and a Commit, measure the
// whole tree, copied files included, since they are this snapshot's disk
// use.
//
// # Locking
//
// The store's single RWMutex (see storage). A snapshot's parent cannot be
// removed while the snapshot is being created, so copies read it unlocked.
//
// # Imports
//
// snapshotter, snapshotter/archive, snapshotter/internal/storage,
// internal/*, errdefs, x/sys.
package native
