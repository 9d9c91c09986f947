// Package e2e holds tests that drive a running crid the way its clients do:
// crid is built and started as a process with its own root, state and socket,
// images come from a real Distribution server on 127.0.0.1 fed by
// internal/testutil/imagebuild, and the tests talk to crid through crictl and
// a Go CRI client. The tests are behind the e2e build tag (`make test` runs
// them) and need root.
package e2e
