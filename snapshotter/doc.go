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
// Imports: internal/* only.
package snapshotter
