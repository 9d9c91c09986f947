// Package storage keeps the snapshots' directories and metadata for both
// snapshotters (overlay and native), so that key rules, crash safety and
// locking are written once.
//
// # Layout
//
//	<root>/
//	  snapshots/<key>/meta.json    {"version":"v1","kind":…,"parent":…,"created":…,"usage":…,"link":…}
//	  snapshots/<key>/fs/          the snapshot's own files (a layer, an upper dir, or a full copy)
//	  snapshots/<key>/work/        overlay workdir (active overlay snapshots only)
//	  tmp/                         snapshots being made or removed; emptied by Open
//	  l/<link> -> ../snapshots/<key>/fs   short names of committed layers (WithLinks only)
//
// # Crash safety
//
//   - A snapshot is built in tmp/ and renamed into snapshots/ once its files
//     and meta.json (written with internal/atomicfile) are complete, so a
//     crash leaves either a whole snapshot or a leftover in tmp/ that Open
//     removes.
//   - Remove renames the snapshot into tmp/ (the commit point) and deletes it
//     from there; Open finishes an interrupted delete.
//   - Commit writes the committed metadata to <key>/commit.json, renames
//     snapshots/<key> to snapshots/<name> (the commit point) and renames
//     commit.json over meta.json. Open finishes the last step when the
//     directory already carries the committed name and drops commit.json
//     otherwise, so the active snapshot survives an interrupted Commit.
//   - A short link is created before the snapshot it names is renamed into
//     place; Open removes links whose snapshot does not exist and recreates
//     missing ones.
//   - Directories in snapshots/ that are not snapshots (bad name, missing
//     or unreadable meta.json, unknown version) are reported in the log and
//     left alone.
//
// # Locking
//
// One RWMutex guards the in-memory index (a copy of every meta.json) and
// the set of keys being created. It is held for lookups and for the renames
// that publish or retire a snapshot, never while files are copied,
// extracted or measured (Commit also writes its small intent file under
// it): concurrent Creates of different keys run in
// parallel. A key being created counts as existing for other Creates and
// as a child of its parent for Remove.
//
// # Imports
//
// snapshotter, internal/atomicfile, internal/log, errdefs.
package storage
