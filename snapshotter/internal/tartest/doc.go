// Package tartest builds small layer tars in memory for the snapshotter's
// tests (archive's breakout corpus, the conformance suite). It writes
// exactly the headers it is given (no cleaning, no added parents), so tests
// can craft hostile archives.
//
// Imports: standard library only.
package tartest
