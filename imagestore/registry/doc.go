// Package registry talks the OCI distribution protocol to image registries:
// it resolves a reference to a manifest descriptor and fetches manifests and
// blobs, trying the hosts configured for a registry (mirrors first, then the
// upstream) in containerd's hosts.toml format.
//
// It verifies nothing about the content it returns: the caller checks digests
// and sizes. It authenticates with the credentials a pull carries (basic
// auth, Docker v2 bearer tokens, identity and registry tokens).
//
// Imports: internal/* only.
package registry
