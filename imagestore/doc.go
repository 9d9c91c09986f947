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
// Imports: imagestore/registry and internal/* only.
package imagestore
