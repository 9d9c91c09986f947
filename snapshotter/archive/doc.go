// Package archive applies uncompressed OCI/Docker layer tars to a directory,
// treating every byte of the tar as hostile.
//
// # What it owns
//
// [Apply] and the rules below. Nothing else in crid extracts layer tars.
//
// # Containment
//
//   - Names are taken relative to the root: leading "/" and "./" are
//     stripped (as GNU tar does), trailing "/" dropped, "." and empty
//     segments removed. A name with a ".." segment anywhere is refused, as is
//     a name longer than PATH_MAX or holding a NUL byte. The same rules apply
//     to hard link targets. Symlink targets are stored verbatim: they are
//     data, never followed.
//   - Paths are resolved one component at a time from the root directory's
//     file descriptor with O_NOFOLLOW|O_DIRECTORY, and every change is made
//     with a *at(2) call on the parent directory's fd and the last component,
//     never following a symlink in the last component either. A symlink or a
//     non-directory in the middle of a name is refused: a layer can never
//     write through a symlink, whether the symlink came from the layer itself
//     or from the tree below. Resolved directory fds are cached (by relative
//     path) while the tar is applied; tars list entries in walk order, so
//     nearly every entry needs exactly one openat(2) per new directory and
//     none per file. The per-component walk behaves the same on every kernel
//     (openat2's RESOLVE_NO_SYMLINKS would need 5.6+ and save nothing once
//     the parent is cached).
//   - An existing entry in the way of a new one is unlinked (recursively for
//     a directory replaced by a non-directory) before the new one is
//     created with O_EXCL; an existing directory met by a directory entry is
//     kept and gets the entry's metadata.
//   - Hard link targets must exist inside the root. In overlay mode the root
//     is a fresh layer directory, so a hard link can only name a file of the
//     same layer (which tar requires anyway: a link's target is an earlier
//     member); a link to a file of a lower layer is refused.
//   - Device nodes: block devices are refused; character devices only as the
//     standard set (null 1:3, zero 1:5, full 1:7, random 1:8, urandom 1:9,
//     tty 5:0, console 5:1, ptmx 5:2). FIFOs are allowed. Unknown entry types
//     are refused.
//   - Extended attributes come from PAX SCHILY.xattr.* records. trusted.*
//     is dropped (a layer must not forge overlay whiteouts, opaque markers or
//     redirects); the rest is applied best effort and failures are logged at
//     debug level.
//   - UIDs and GIDs must fit a uid_t and not be (uid_t)-1.
//
// Refusals wrap errdefs.ErrInvalidArgument and name the entry. A failed
// Apply leaves a partly written root; callers apply into a staging directory
// and delete it on error.
//
// # Whiteouts
//
// An entry named .wh.<name> deletes <name> from the layers below; an entry
// named .wh..wh..opq makes its directory opaque. Other .wh..wh.* names (AUFS
// metadata) are skipped. A whiteout can never name the root, "." or "..",
// and an opaque marker at the top level (which would wipe the whole image)
// is refused.
//
//   - [OverlayWhiteouts] (the root is a fresh overlay layer directory):
//     .wh.<name> becomes a 0:0 character device <name>, owned as the
//     whiteout entry; .wh..wh..opq sets trusted.overlay.opaque=y on the
//     directory. Missing parents are created (mode 0755) so the whiteout lands
//     where overlayfs looks for it.
//   - [NativeWhiteouts] (the root is a copy of the parent snapshot):
//     .wh.<name> removes <name> recursively; .wh..wh..opq removes everything
//     in the directory that this layer did not create, recursively. Entries
//     the layer created before the marker are remembered and kept; entries
//     after it are created after the removal. Either way only the layer's
//     own entries survive, which is what overlayfs shows for an opaque
//     directory. A whiteout whose parent does not exist is a no-op.
//
// # Metadata
//
// Ownership, permission bits (including setuid, setgid and sticky) and
// times are set exactly as the tar says, independently of the process umask:
// chown first (it clears setuid bits), then chmod, then extended attributes
// (chown clears security.capability), then times. chown and chmod are
// skipped only when the kernel's defaults already produce the right result.
// Directory times are set after the whole tar has been applied, so that
// creating their children does not change them. Nothing is fsynced.
//
// # Speed
//
// A regular file costs openat(O_CREAT|O_EXCL), its writes, utimensat and
// close in the common case. Data is copied through a pooled 1 MiB buffer.
// Sparse files are written in full (archive/tar expands holes).
//
// # Imports
//
// snapshotter (for Usage), internal/log, errdefs and x/sys.
package archive
