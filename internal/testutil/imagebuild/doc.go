// Package imagebuild builds container images for crid's tests from a
// declarative description and pushes them to a real registry with plain
// net/http, speaking the distribution API.
//
// # What it owns
//
//   - The description types: [Image], [Layer], [Entry], [Config], [Index].
//   - [Builder], which turns a description into blobs (layer tars, config,
//     manifest) stored in a cache directory, and reports every digest a test
//     may want to assert on: manifest digest, config digest (the image ID),
//     compressed layer digests and diff IDs.
//   - [Pusher], a minimal distribution-API client (HEAD, cross-repo mount,
//     POST+PUT monolithic uploads, manifest PUT) with optional basic auth.
//   - Ready-made images ([Busybox], [Bench]) and named sets of them
//     ([Set]) shared by the e2e tests and the pushimages command
//     (e2e/cmd/pushimages).
//   - The "critest" set ([CritestTargets]): every image critest pulls, as
//     stand-ins pushed under their upstream repository paths, and
//     [WriteMirrorConfig], the hosts.toml files that make the upstream names
//     resolve to the local registry. Building it runs apt-get download and
//     dpkg-deb (Debian's dynamic busybox), ldd, and the go command (the
//     stand-in programs of package standin); their outputs are cached.
//   - [BuiltImage.WriteOCILayout] and [BuiltIndex.WriteOCILayout], for tests
//     that read an OCI image layout instead of a registry.
//
// # Determinism
//
// The same description always yields the same bytes, hence the same digests:
// every tar header carries the fixed modification time [Epoch], no user or
// group names, and is written in a fixed order (entries are sorted by path,
// missing parent directories are added, hard links follow their targets,
// unless [Layer.Verbatim] is set). Gzip streams carry no name and no mtime;
// compressors run with fixed settings. Config and manifests are marshalled
// from structs and sorted maps. Pseudo-random content comes from seeded
// ChaCha8 generators.
//
// Built layers are cached under the builder's directory, keyed by a hash of
// the layer description (host files are hashed by content) plus a format
// version and the compressor's module version, so re-runs do not rebuild
// hundreds of MiB of bench layers.
//
// # Imports
//
// Standard library, go-digest, image-spec types, klauspost/compress,
// x/sync, and internal/atomicfile; its tests also use
// internal/testutil/registry to run the real Distribution server. No crid
// domain package: this is a leaf under internal/testutil and may be used by
// any test, by e2e code and by commands, never by the daemon.
//
// # Concurrency
//
// A [Builder] and a [Pusher] are safe for concurrent use. Layers of an image
// are built in parallel (bounded by GOMAXPROCS) and identical layers built
// concurrently are built once.
package imagebuild
