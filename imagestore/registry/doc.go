// Package registry talks the OCI distribution protocol to image registries:
// it resolves a reference to a manifest descriptor and fetches manifests and
// blobs, trying the hosts configured for a registry (mirrors first, then the
// upstream) in containerd's hosts.toml format.
//
// It verifies nothing about the content it returns: the caller checks digests
// and sizes. It authenticates with the credentials a pull carries (basic
// auth, Docker v2 bearer tokens, identity and registry tokens).
//
// # Host configuration
//
// For registry host H, <ConfigPath>/H/hosts.toml (H with its port, as
// "host:port"; containerd's "host_port_" spelling is accepted too; else
// <ConfigPath>/_default/hosts.toml) lists [host."<url>"] mirrors, tried in
// file order, then the top-level server (default https://H, and
// https://registry-1.docker.io for docker.io). Keys: server, capabilities
// (pull, resolve, push), ca, client, skip_verify, header, override_path,
// dial_timeout. A directory without hosts.toml is read in Docker's certs.d
// layout (*.crt, *.cert/*.key). The file is read anew for each Resolve.
// Differences from containerd: a malformed hosts.toml fails the pull (with
// the line and column) instead of being ignored, unknown keys are logged,
// and top-level capabilities apply to the default server too.
//
// Without a server, a loopback registry (localhost, 127.0.0.0/8, ::1) gets
// containerd's defaults: HTTPS without verification first and, on a port
// other than 443, plain HTTP once the TLS handshake gets an HTTP answer
// (remembered per host); port 80 is plain HTTP. An http:// host in
// hosts.toml is plain HTTP (HTTPS first if TLS keys were set for it).
//
// # Errors
//
// Every error wraps an errdefs class. A request that fails on every host
// returns an error naming each host and why, which unwraps to the error of
// the last host tried (the upstream, the authority): ErrNotFound,
// ErrUnauthenticated, ErrPermissionDenied, ErrUnavailable (connection
// problems, 5xx, 429), or *StatusError for other statuses. Failures of hosts
// that a later host made up for are logged at info level.
//
// # Credentials
//
// Credentials apply to every host of the registry being pulled. When
// ServerAddress is set, they apply only if it names that registry or the
// host contacted (containerd's CRI plugin matches it against the host).
// RegistryToken is sent as a bearer token as it is; IdentityToken is
// exchanged at the token server (OAuth2 refresh-token POST, GET on
// refusal); Username/Password (or Auth) answer Basic challenges and
// authenticate bearer token GETs. Tokens are cached per host, scope and
// credentials (a hash of them; secrets are never logged) until shortly
// before they expire.
//
// Imports: internal/* only. No locks are held across network calls;
// authCache.mu and transports.mu are leaves.
package registry
