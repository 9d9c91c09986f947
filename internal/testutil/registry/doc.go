// Package registry starts the real Distribution server (Debian's
// docker-registry) for integration tests: on 127.0.0.1 and a free port,
// with storage in the test's temporary directory, optionally behind
// htpasswd basic auth, stopped when the test ends.
//
// Tests that need it fail, never skip, when the server is not installed;
// the project's Makefile installs it.
//
// Imports: no crid package.
package registry
