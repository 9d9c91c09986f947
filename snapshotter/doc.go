// Package snapshotter stores the layered filesystems that image layers and
// container root filesystems are made of.
//
// It owns everything under its root directory. Two implementations share one
// interface and one conformance suite (snapshotter/testsuite): overlay, the
// default, which keeps each layer as its own directory and assembles a
// container's rootfs with an overlay mount; and native, a copy-based fallback
// for filesystems without overlay support, which copies the parent for every
// child.
//
// Layer tars are unpacked by the archive subpackage, which treats every byte
// as hostile.
//
// Subpackages:
//
//	archive/           apply a layer tar to a directory (overlay or native whiteouts)
//	overlay/           the overlay snapshotter (and Supported, for choosing one)
//	native/            the copy-based snapshotter
//	mount/             perform and undo the []Mount a snapshotter returns
//	testsuite/         the conformance suite both snapshotters pass
//	internal/storage/  on-disk layout, metadata, crash recovery and locking shared by both
//	internal/tartest/  in-memory tar builder for tests
//
// Locking: each snapshotter holds one RWMutex over its metadata (in
// internal/storage) and never holds it while files are copied, extracted or
// measured.
//
// Imports: internal/* only.
package snapshotter
