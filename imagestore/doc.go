// Package imagestore keeps the node's images: it pulls them from registries
// (through the Resolver seam, implemented by imagestore/registry) and records
// them in a content-addressed store laid out like Docker's image store:
//
//	<root>/
//	  VERSION                              store format version ("1")
//	  blobs/sha256/<hex>                   manifests, indexes, configs, verified on write
//	  repositories.json                    {"Repositories": {name: {ref: image-id}}}
//	  imagedb/content/sha256/<image-id>    image config (image-id = digest of the config)
//	  imagedb/metadata/sha256/<image-id>/  manifest digest, repo digests, pulled time
//	  layerdb/sha256/<chain-id>/           diff, parent, size, cache-id (Docker's layerdb)
//	  distribution/diffid-by-digest/sha256/<blob-hex>   diff-id of a compressed layer blob
//	  tmp/                                 staging; emptied at start
//
// chain-id(L1) = diff-id(L1); chain-id(Ln) = sha256(chain-id(Ln-1) + " " + diff-id(Ln)).
//
// Every entry is written to tmp/ and renamed into place when complete, so a
// crash at any moment leaves either nothing or a whole entry. Layer files live
// in snapshots owned by the LayerUnpacker (the snapshotter, wired in by
// cmd/crid); cache-id names the snapshot.
//
// Layers are shared by images and reference-counted in memory (counts are
// rebuilt from imagedb at start); removing an image frees exactly what no
// other image uses.
//
// # File formats
//
// Files hold no trailing newline. VERSION is the decimal format version; a
// store with a newer one is refused. In layerdb, diff holds "sha256:<hex>",
// parent the parent's chain-id (absent for a bottom layer), size the decimal
// size Unpack returned for the layer (the uncompressed size of its files as
// the snapshotter counts it), cache-id 64 random hex characters.
// metadata.json is
//
//	{"version":1,"manifestDigest":…,"repoDigests":[…],"blobs":[…],"pulled":RFC 3339}
//
// where blobs lists the files of blobs/ the image owns (its indexes,
// manifests and config; a blob is deleted when no image lists it) and
// repoDigests are kept there too, since a digest always names the same
// image: recovery puts back one that repositories.json lost. The keys of
// repositories.json are normalized names; each maps "name:tag" and
// "name@digest" references to image IDs, the digest being the one the
// reference resolved to (an index for a multi-platform image). Only sha256
// digests are accepted.
//
// # Writes and their order
//
// A pull records, in this order: each new layer's layerdb entry, strictly
// bottom up (a layer is renamed into layerdb only after its parent's rename
// is fsynced); then, under Store.mu, the blobs, imagedb/content,
// imagedb/metadata and finally repositories.json. A failed pull removes the
// snapshots it created but did not record, and keeps the layers it
// recorded for a retry. Removing an image moves its metadata out first (an
// image without metadata is dropped at start), then its config,
// references, blobs, and the layerdb entries no one uses, top down; their
// snapshots are removed last, outside the lock. Recovery at New drops
// whatever a crash left inconsistent (see Store.recoverState) and the
// layers no image uses; the daemon removes snapshots whose cache-id is not
// in CacheIDs.
//
// A layer is streamed from the registry through the compressed-digest
// check, the decompressor (klauspost gzip or zstd) and the diff-id digester
// into Unpack, without landing on disk; a readahead goroutine runs the
// first half so that inflating and unpacking use two cores. When the
// LayerUnpacker cannot unpack a layer before its parent, a layer whose
// parent is not unpacked yet is downloaded to tmp/ meanwhile.
//
// # Locks
//
// Store.mu (RWMutex) guards the in-memory index: images, layers with their
// reference counts, references, and the cache-ids of snapshots being
// created. It is held for in-memory changes and for the small metadata files
// and renames that must agree with them; never across a Fetch, Resolve,
// Unpack or LayerUnpacker.Remove call.
//
// A chain lock (keyedMutex, by chain-id) is held by the pull creating that
// layer, from planning until the layer is recorded; a second pull needing the
// same layer waits and then finds it recorded. Pulls take chain locks bottom
// up; as the chains of two images share a prefix or nothing, no two pulls
// wait for each other crosswise. A pull holds (layerRecord.holds) every
// existing layer it builds on, so a concurrent Remove cannot free it.
//
// Lock order: chain locks (bottom up), then Store.mu. pullGroup.mu and
// keyedMutex.mu are leaves.
//
// Pulls of the same reference with the same credentials share one
// operation (pullGroup) that runs on a context detached from its callers
// and is cancelled when the last caller gives up.
//
// Imports: imagestore/registry and internal/* only.
package imagestore
