package registry

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
)

func boolPtr(b bool) *bool { return &b }

func TestParseHostsFile(t *testing.T) {
	const dir = "/etc/crid/certs.d/reg.example"
	for _, tc := range []struct {
		desc        string
		toml        string
		want        []hostConfig
		wantUnknown []string
		wantErr     string
	}{
		{
			desc: "empty file: the default server",
			want: []hostConfig{{caps: capAll}},
		},
		{
			desc: "server only",
			toml: `server = "https://upstream.example:5000"`,
			want: []hostConfig{{scheme: "https", host: "upstream.example:5000", path: "/v2", caps: capAll}},
		},
		{
			desc: "server without scheme is https",
			toml: `server = "upstream.example"`,
			want: []hostConfig{{scheme: "https", host: "upstream.example", path: "/v2", caps: capAll}},
		},
		{
			desc: "mirrors in file order, then the server",
			toml: `
server = "https://registry-1.docker.io"
[host."https://zz.example"]
  capabilities = ["pull", "resolve"]
[host."http://aa.example:5000"]
  capabilities = ["pull"]
  skip_verify = true
[host."https://mm.example/some/path"]
`,
			want: []hostConfig{
				{scheme: "https", host: "zz.example", path: "/v2", caps: capPull | capResolve},
				{scheme: "http", host: "aa.example:5000", path: "/v2", caps: capPull, skipVerify: boolPtr(true)},
				{scheme: "https", host: "mm.example", path: "/some/path/v2", caps: capAll},
				{scheme: "https", host: "registry-1.docker.io", path: "/v2", caps: capAll},
			},
		},
		{
			desc: "order survives subtables and dotted keys",
			toml: `
host."https://c.example".capabilities = ["pull"]
[host."https://b.example".header]
  x-a = "1"
[host."https://a.example"]
`,
			want: []hostConfig{
				{scheme: "https", host: "c.example", path: "/v2", caps: capPull},
				{scheme: "https", host: "b.example", path: "/v2", caps: capAll, header: http.Header{"X-A": {"1"}}},
				{scheme: "https", host: "a.example", path: "/v2", caps: capAll},
				{caps: capAll},
			},
		},
		{
			desc: "keys under a [host] table",
			toml: `
[host]
  "https://d.example" = { capabilities = ["resolve"] }
  "https://a.example".capabilities = ["pull"]
`,
			want: []hostConfig{
				{scheme: "https", host: "d.example", path: "/v2", caps: capResolve},
				{scheme: "https", host: "a.example", path: "/v2", caps: capPull},
				{caps: capAll},
			},
		},
		{
			desc: "inline host table keeps its order",
			toml: `host = { "https://y.example" = {}, "https://x.example" = {} }`,
			want: []hostConfig{
				{scheme: "https", host: "y.example", path: "/v2", caps: capAll},
				{scheme: "https", host: "x.example", path: "/v2", caps: capAll},
				{caps: capAll},
			},
		},
		{
			desc: "override_path",
			toml: `
[host."https://mirror.example/custom/api"]
  override_path = true
[host."https://root.example"]
  override_path = true
`,
			want: []hostConfig{
				{scheme: "https", host: "mirror.example", path: "/custom/api", caps: capAll},
				{scheme: "https", host: "root.example", path: "", caps: capAll},
				{caps: capAll},
			},
		},
		{
			desc: "tls files relative to the host directory",
			toml: `
server = "https://reg.example"
ca = "ca.pem"
client = [["client.cert", "/abs/client.key"], "both.pem"]
[host."https://m.example"]
  ca = ["/abs/ca1.pem", "ca2.pem"]
  client = "single.pem"
  dial_timeout = "3s"
`,
			want: []hostConfig{
				{
					scheme: "https", host: "m.example", path: "/v2", caps: capAll,
					caFiles:     []string{"/abs/ca1.pem", dir + "/ca2.pem"},
					clientPairs: [][2]string{{dir + "/single.pem", ""}},
					dialTimeout: 3 * time.Second,
				},
				{
					scheme: "https", host: "reg.example", path: "/v2", caps: capAll,
					caFiles:     []string{dir + "/ca.pem"},
					clientPairs: [][2]string{{dir + "/client.cert", "/abs/client.key"}, {dir + "/both.pem", ""}},
				},
			},
		},
		{
			desc: "headers",
			toml: `
server = "https://reg.example"
[header]
  x-one = "1"
  x-many = ["a", "b"]
`,
			want: []hostConfig{{scheme: "https", host: "reg.example", path: "/v2", caps: capAll, header: http.Header{"X-One": {"1"}, "X-Many": {"a", "b"}}}},
		},
		{
			desc:        "unknown keys are reported, not fatal",
			toml:        "server = \"https://reg.example\"\nskip_verfy = true\n[host.\"https://m.example\"]\n  capabilites = [\"pull\"]\n",
			want:        []hostConfig{{scheme: "https", host: "m.example", path: "/v2", caps: capAll}, {scheme: "https", host: "reg.example", path: "/v2", caps: capAll}},
			wantUnknown: []string{"skip_verfy", "host.https://m.example.capabilites"},
		},
		{desc: "malformed toml", toml: "server = \"https://reg.example\"\n[host.\"https://m.example\"\n", wantErr: "line 2"},
		{desc: "unterminated string", toml: "server = \"https://reg.example\n", wantErr: "line 1"},
		{desc: "unknown capability", toml: `capabilities = ["pull", "fly"]`, wantErr: `unknown capability "fly"`},
		{desc: "wrong type", toml: `skip_verify = "yes"`, wantErr: "line 1"},
		{desc: "ca of the wrong type", toml: `ca = 3`, wantErr: "ca must be"},
		{desc: "ca list with a number", toml: `ca = ["a.pem", 3]`, wantErr: "not a string"},
		{desc: "client pair of three", toml: `client = [["a", "b", "c"]]`, wantErr: "[certificate, key]"},
		{desc: "header of the wrong type", toml: "[header]\nx = 1\n", wantErr: `header "x"`},
		{desc: "bad scheme", toml: `server = "ftp://reg.example"`, wantErr: "scheme must be http or https"},
		{desc: "credentials in url", toml: `server = "https://u:p@reg.example"`, wantErr: "must not carry credentials"},
		{desc: "bad dial timeout", toml: `dial_timeout = "soon"`, wantErr: "dial_timeout"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			got, unknown, err := parseHostsFile(dir, []byte(tc.toml))
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				require.ErrorIs(t, err, errdefs.ErrFailedPrecondition)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
			require.ElementsMatch(t, tc.wantUnknown, unknown)
		})
	}
}

func TestFindHostDir(t *testing.T) {
	root := t.TempDir()
	mkdir := func(name string) string {
		p := filepath.Join(root, name)
		require.NoError(t, os.MkdirAll(p, 0o755))
		return p
	}
	withPort := mkdir("reg.example:5000")
	containerdStyle := mkdir("other.example_5000_")
	plain := mkdir("plain.example")
	require.NoError(t, os.WriteFile(filepath.Join(root, "file.example"), nil, 0o644))

	for _, tc := range []struct {
		desc, host, want string
	}{
		{desc: "host:port", host: "reg.example:5000", want: withPort},
		{desc: "containerd's host_port_", host: "other.example:5000", want: containerdStyle},
		{desc: "plain host", host: "plain.example", want: plain},
		{desc: "port matters", host: "plain.example:5000", want: ""},
		{desc: "a file is not a directory", host: "file.example", want: ""},
		{desc: "nothing", host: "docker.io", want: ""},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			got, err := findHostDir(root, tc.host)
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}

	t.Run("_default", func(t *testing.T) {
		def := mkdir("_default")
		got, err := findHostDir(root, "docker.io")
		require.NoError(t, err)
		require.Equal(t, def, got)
		got, err = findHostDir(root, "reg.example:5000")
		require.NoError(t, err)
		require.Equal(t, withPort, got, "a registry's own directory wins")
	})
	t.Run("path traversal", func(t *testing.T) {
		for _, h := range []string{"..", "a/b", ""} {
			_, err := findHostDir(root, h)
			require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
		}
	})
}

func TestDefaultServer(t *testing.T) {
	for _, tc := range []struct {
		registry string
		want     hostConfig
	}{
		{registry: "docker.io", want: hostConfig{scheme: "https", host: "registry-1.docker.io", path: "/v2"}},
		{registry: "quay.io", want: hostConfig{scheme: "https", host: "quay.io", path: "/v2"}},
		{registry: "reg.example:5000", want: hostConfig{scheme: "https", host: "reg.example:5000", path: "/v2"}},
		{registry: "localhost:5000", want: hostConfig{scheme: "https", host: "localhost:5000", path: "/v2", skipVerify: boolPtr(true), fallbackHTTP: true}},
		{registry: "127.0.0.1:5000", want: hostConfig{scheme: "https", host: "127.0.0.1:5000", path: "/v2", skipVerify: boolPtr(true), fallbackHTTP: true}},
		{registry: "127.1.2.3:5000", want: hostConfig{scheme: "https", host: "127.1.2.3:5000", path: "/v2", skipVerify: boolPtr(true), fallbackHTTP: true}},
		{registry: "[::1]:5000", want: hostConfig{scheme: "https", host: "[::1]:5000", path: "/v2", skipVerify: boolPtr(true), fallbackHTTP: true}},
		{registry: "localhost", want: hostConfig{scheme: "https", host: "localhost", path: "/v2", skipVerify: boolPtr(true)}},
		{registry: "localhost:443", want: hostConfig{scheme: "https", host: "localhost:443", path: "/v2", skipVerify: boolPtr(true)}},
		{registry: "localhost:80", want: hostConfig{scheme: "http", host: "localhost:80", path: "/v2"}},
	} {
		t.Run(tc.registry, func(t *testing.T) {
			var h hostConfig
			applyDefaultServer(&h, tc.registry)
			require.Equal(t, tc.want, h)
		})
	}
}

func TestMalformedHostsTomlFailsResolve(t *testing.T) {
	r, dir := newTestResolver(t)
	writeHostsToml(t, dir, "reg.example", "server = \"https://reg.example\"\n\n[host.\"https://m.example\"\n  capabilities = [\"pull\"]\n")
	_, _, err := r.Resolve(t.Context(), mustRef(t, "reg.example/app:1"), nil)
	require.ErrorIs(t, err, errdefs.ErrFailedPrecondition)
	require.ErrorContains(t, err, filepath.Join(dir, "reg.example", "hosts.toml"))
	require.ErrorContains(t, err, "line 3")
}

func TestDefaultDirectoryApplies(t *testing.T) {
	img := newTestImage(t)
	f := newFakeRegistry(t)
	img.serve(f, "app", "1")
	r, dir := newTestResolver(t)
	// _default names no server: each registry keeps its own upstream,
	// behind the mirror listed there.
	mirror := newFakeRegistry(t)
	writeHostsToml(t, dir, "_default", "[host.\"http://"+mirror.host()+"\"]\n")
	_, _, err := r.Resolve(t.Context(), mustRef(t, f.host()+"/app:1"), nil)
	require.NoError(t, err)
	require.Len(t, mirror.seen(), 1)
	require.Len(t, f.seen(), 1)
}
