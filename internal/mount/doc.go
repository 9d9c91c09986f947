// Package mount performs mounts described as data (a snapshotter's rootfs,
// a container's bundle) and undoes them.
//
// # What it owns
//
// [All] turns []Mount into mount(2) calls: option words that are
// mount flags (ro, rbind, nosuid, …) become flags, propagation words
// (rprivate, …) a second call, and the rest the data string. A bind mount
// with flags is remounted to apply them, as the kernel ignores them on the
// first call.
//
// Overlay options longer than the kernel's limit (one page) are compacted:
// the lowerdir entries' longest common directory is made the working
// directory of the mounting thread and the entries are made relative to it.
// The overlay snapshotter's lowerdirs are short links <root>/l/<13 chars>,
// so a page holds about 280 layers that way (the kernel allows 500). The
// thread unshares its filesystem attributes (CLONE_FS) before chdir and is
// never returned to the Go scheduler, so the process's working directory
// never changes.
//
// [Unmount] removes every mount stacked on a target, retrying while the
// mount is busy and detaching it lazily (MNT_DETACH) as a last resort.
//
// # Imports
//
// x/sys only: it is a leaf, used by snapshotter, sandbox and container.
package mount
