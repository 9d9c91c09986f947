// Package standin holds the sources of the tiny static programs that stand
// in for upstream binaries in imagebuild's "critest" image set: pause (the
// registry.k8s.io/pause image), nginx (a front for busybox httpd that looks
// like nginx to critest) and nnp (the setuid program of the nonewprivs test
// image). Each is a main package using the standard library only.
//
// imagebuild embeds these sources and builds them with the Go toolchain
// (CGO_ENABLED=0, -trimpath, empty build ID), so the binaries, and so the
// image digests, are the same on every run with the same toolchain. They
// also build as part of crid's module, which keeps them vetted.
package standin
