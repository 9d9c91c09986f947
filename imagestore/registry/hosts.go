package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/pelletier/go-toml/v2"
	tomlu "github.com/pelletier/go-toml/v2/unstable"

	"github.com/crid-dev/crid/internal/log"
)

// DefaultConfigPath is the directory that holds one directory per registry
// host, each with an optional hosts.toml (containerd's layout).
const DefaultConfigPath = "/etc/crid/certs.d"

// defaultDirName is the directory consulted for a registry that has none of
// its own.
const defaultDirName = "_default"

// capabilities are the operations a host may be used for.
type capabilities uint8

const (
	capPull capabilities = 1 << iota
	capResolve
	capPush

	capAll = capPull | capResolve | capPush
)

func (c capabilities) has(want capabilities) bool { return c&want == want }

func (c capabilities) String() string {
	var names []string
	for _, n := range []struct {
		c    capabilities
		name string
	}{{capPull, "pull"}, {capResolve, "resolve"}, {capPush, "push"}} {
		if c.has(n.c) {
			names = append(names, n.name)
		}
	}
	return strings.Join(names, ",")
}

// hostConfig is one host of a registry as its hosts.toml describes it,
// before defaults are applied. An empty host stands for the registry's
// default server.
type hostConfig struct {
	scheme string
	host   string
	path   string
	caps   capabilities

	caFiles     []string
	clientPairs [][2]string // certificate file, key file ("" when the key is in the certificate file)
	skipVerify  *bool
	dialTimeout time.Duration

	header http.Header

	// fallbackHTTP makes an https host retry as plain http after a TLS
	// handshake that got an HTTP answer (loopback registries).
	fallbackHTTP bool
}

// explicitTLS reports whether the file configured TLS for this host.
func (h *hostConfig) explicitTLS() bool {
	return h.caFiles != nil || h.clientPairs != nil || h.skipVerify != nil
}

// hostFileEntry holds the keys a host table (or the top level) of hosts.toml
// may carry.
type hostFileEntry struct {
	// Capabilities: any of "pull", "resolve", "push"; empty means all.
	Capabilities []string `toml:"capabilities"`
	// CA is a file or a list of files of PEM certificates, relative to
	// the host directory unless absolute.
	CA any `toml:"ca"`
	// Client is a file holding certificate and key, a list of such files,
	// or a list of [certificate, key] pairs.
	Client any `toml:"client"`
	// SkipVerify disables verification of the server's certificate.
	SkipVerify *bool `toml:"skip_verify"`
	// Header lists extra headers: a string or a list of strings each.
	Header map[string]any `toml:"header"`
	// OverridePath makes the URL's path the API root instead of <path>/v2.
	OverridePath bool `toml:"override_path"`
	// DialTimeout bounds a TCP connect ("5s").
	DialTimeout string `toml:"dial_timeout"`
}

// hostsFile is the whole hosts.toml.
type hostsFile struct {
	hostFileEntry
	// Server is the upstream, tried after every [host."…"] entry.
	Server string `toml:"server"`
	// Host holds the mirrors, tried in file order.
	Host map[string]hostFileEntry `toml:"host"`
}

// findHostDir returns the directory configuring registry host, or "" when
// there is none. Like containerd it tries "<host:port>", "<host_port_>" and
// then "_default"; the first directory that exists wins.
func findHostDir(root, host string) (string, error) {
	if host == "" || host == "." || host == ".." || strings.ContainsAny(host, `/\`) {
		return "", fmt.Errorf("registry host %q: %w", host, errdefs.ErrInvalidArgument)
	}
	candidates := []string{host}
	if i := strings.LastIndex(host, ":"); i > 0 {
		candidates = append(candidates, host[:i]+"_"+host[i+1:]+"_")
	}
	candidates = append(candidates, defaultDirName)
	for _, c := range candidates {
		dir := filepath.Join(root, c)
		fi, err := os.Stat(dir)
		switch {
		case err == nil && fi.IsDir():
			return dir, nil
		case err == nil, errors.Is(err, fs.ErrNotExist):
			continue
		default:
			return "", fmt.Errorf("look up host directory: %w", err)
		}
	}
	return "", nil
}

// loadHostDir reads dir/hosts.toml. Without one it falls back to Docker's
// certificate layout (*.crt CAs, *.cert/*.key client pairs) for the default
// server, as containerd does.
func loadHostDir(ctx context.Context, dir string) ([]hostConfig, error) {
	file := filepath.Join(dir, "hosts.toml")
	data, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return loadCertFiles(dir)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	hosts, unknown, err := parseHostsFile(dir, data)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", file, err)
	}
	if len(unknown) > 0 {
		log.G(ctx).Warn("ignoring unknown keys in hosts.toml", "file", file, "keys", unknown)
	}
	return hosts, nil
}

// parseHostsFile parses a hosts.toml whose relative paths are based at dir.
// It returns the [host."…"] entries in file order followed by the top-level
// server, and the keys it did not know.
func parseHostsFile(dir string, data []byte) (hosts []hostConfig, unknown []string, err error) {
	var f hostsFile
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		var strict *toml.StrictMissingError
		if !errors.As(err, &strict) {
			return nil, nil, tomlError(err)
		}
		for _, e := range strict.Errors {
			unknown = append(unknown, strings.Join(e.Key(), "."))
		}
		f = hostsFile{}
		if err := toml.Unmarshal(data, &f); err != nil {
			return nil, nil, tomlError(err)
		}
	}
	order, err := hostOrder(data)
	if err != nil {
		return nil, nil, tomlError(err)
	}
	// Every [host] key is in order; keep any the scan could not place,
	// sorted, rather than dropping it.
	var rest []string
	for name := range f.Host {
		if !slices.Contains(order, name) {
			rest = append(rest, name)
		}
	}
	slices.Sort(rest)
	order = append(order, rest...)

	for _, name := range order {
		if name == "" {
			return nil, nil, fmt.Errorf("empty host name: %w", errdefs.ErrFailedPrecondition)
		}
		h, err := parseHostEntry(name, dir, f.Host[name])
		if err != nil {
			return nil, nil, fmt.Errorf("host %q: %w", name, err)
		}
		hosts = append(hosts, h)
	}
	h, err := parseHostEntry(f.Server, dir, f.hostFileEntry)
	if err != nil {
		return nil, nil, fmt.Errorf("server: %w", err)
	}
	return append(hosts, h), unknown, nil
}

// tomlError turns a decoder error into one that names the position and
// wraps ErrFailedPrecondition: a broken configuration file, not a bad
// request.
func tomlError(err error) error {
	var de *toml.DecodeError
	if errors.As(err, &de) {
		line, col := de.Position()
		return fmt.Errorf("line %d column %d: %s: %w", line, col,
			strings.TrimPrefix(de.Error(), "toml: "), errdefs.ErrFailedPrecondition)
	}
	var pe *tomlu.ParserError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Message, errdefs.ErrFailedPrecondition)
	}
	return fmt.Errorf("%w: %w", err, errdefs.ErrFailedPrecondition)
}

// hostOrder lists the keys of the host table in the order they first appear
// in data, whatever the syntax: [host."a"], [host."a".header], [host] then
// "a".k = v, dotted top-level keys host."a".k = v, or an inline host table.
func hostOrder(data []byte) ([]string, error) {
	var (
		order []string
		table []string // the current table header's key
	)
	add := func(name string) {
		if !slices.Contains(order, name) {
			order = append(order, name)
		}
	}
	addPath := func(key []string, value *tomlu.Node) {
		if len(key) >= 2 && key[0] == "host" {
			add(key[1])
			return
		}
		if len(key) == 1 && key[0] == "host" && value != nil && value.Kind == tomlu.InlineTable {
			for it := value.Children(); it.Next(); {
				kv := it.Node()
				if kv.Kind != tomlu.KeyValue {
					continue
				}
				if k := keyParts(kv); len(k) > 0 {
					add(k[0])
				}
			}
		}
	}
	p := tomlu.Parser{}
	p.Reset(data)
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case tomlu.Table, tomlu.ArrayTable:
			table = keyParts(e)
			addPath(table, nil)
		case tomlu.KeyValue:
			addPath(append(slices.Clone(table), keyParts(e)...), e.Value())
		}
	}
	return order, p.Error()
}

func keyParts(n *tomlu.Node) []string {
	var parts []string
	for it := n.Key(); it.Next(); {
		parts = append(parts, string(it.Node().Data))
	}
	return parts
}

// parseHostEntry validates one host entry. server is the host's URL ("" for
// the top level without a server key).
func parseHostEntry(server, dir string, e hostFileEntry) (hostConfig, error) {
	var h hostConfig
	if server != "" {
		if !strings.Contains(server, "://") {
			server = "https://" + server
		}
		u, err := url.Parse(server)
		if err != nil {
			return hostConfig{}, fmt.Errorf("parse url %q: %w", server, errdefs.ErrFailedPrecondition)
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			return hostConfig{}, fmt.Errorf("url %q: scheme must be http or https: %w", server, errdefs.ErrFailedPrecondition)
		}
		if u.Host == "" {
			return hostConfig{}, fmt.Errorf("url %q has no host: %w", server, errdefs.ErrFailedPrecondition)
		}
		if u.User != nil {
			return hostConfig{}, fmt.Errorf("url of host %s must not carry credentials: %w", u.Host, errdefs.ErrFailedPrecondition)
		}
		h.scheme, h.host = u.Scheme, u.Host
		h.path = apiRoot(u.Path, e.OverridePath)
	}

	h.caps = capAll
	if len(e.Capabilities) > 0 {
		h.caps = 0
		for _, c := range e.Capabilities {
			switch strings.ToLower(c) {
			case "pull":
				h.caps |= capPull
			case "resolve":
				h.caps |= capResolve
			case "push":
				h.caps |= capPush
			default:
				return hostConfig{}, fmt.Errorf("unknown capability %q: %w", c, errdefs.ErrFailedPrecondition)
			}
		}
	}

	h.skipVerify = e.SkipVerify
	var err error
	if h.caFiles, err = parseCA(e.CA, dir); err != nil {
		return hostConfig{}, err
	}
	if h.clientPairs, err = parseClient(e.Client, dir); err != nil {
		return hostConfig{}, err
	}
	if h.header, err = parseHeader(e.Header); err != nil {
		return hostConfig{}, err
	}
	if e.DialTimeout != "" {
		d, err := time.ParseDuration(e.DialTimeout)
		if err != nil || d <= 0 {
			return hostConfig{}, fmt.Errorf("dial_timeout %q is not a positive duration: %w", e.DialTimeout, errdefs.ErrFailedPrecondition)
		}
		h.dialTimeout = d
	}
	return h, nil
}

// apiRoot is the path requests are made under: <p>/v2, or p itself with
// override_path.
func apiRoot(p string, override bool) string {
	p = strings.TrimRight(p, "/")
	if p != "" {
		p = path.Clean("/" + p)
	}
	if override || strings.HasSuffix(p, "/v2") {
		return p
	}
	return p + "/v2"
}

func parseCA(v any, dir string) ([]string, error) {
	switch ca := v.(type) {
	case nil:
		return nil, nil
	case string:
		return []string{absPath(ca, dir)}, nil
	case []any:
		files, err := stringList(ca, "ca")
		if err != nil {
			return nil, err
		}
		for i := range files {
			files[i] = absPath(files[i], dir)
		}
		return files, nil
	default:
		return nil, fmt.Errorf("ca must be a string or a list of strings, not %T: %w", v, errdefs.ErrFailedPrecondition)
	}
}

func parseClient(v any, dir string) ([][2]string, error) {
	switch c := v.(type) {
	case nil:
		return nil, nil
	case string:
		return [][2]string{{absPath(c, dir), ""}}, nil
	case []any:
		var pairs [][2]string
		for _, item := range c {
			switch p := item.(type) {
			case string:
				pairs = append(pairs, [2]string{absPath(p, dir), ""})
			case []any:
				files, err := stringList(p, "client")
				if err != nil {
					return nil, err
				}
				if len(files) != 2 {
					return nil, fmt.Errorf("client pair %v must be [certificate, key]: %w", p, errdefs.ErrFailedPrecondition)
				}
				pairs = append(pairs, [2]string{absPath(files[0], dir), absPath(files[1], dir)})
			default:
				return nil, fmt.Errorf("client entry must be a string or a pair, not %T: %w", item, errdefs.ErrFailedPrecondition)
			}
		}
		return pairs, nil
	default:
		return nil, fmt.Errorf("client must be a string or a list, not %T: %w", v, errdefs.ErrFailedPrecondition)
	}
}

func parseHeader(m map[string]any) (http.Header, error) {
	if m == nil {
		return nil, nil
	}
	h := http.Header{}
	for k, v := range m {
		switch val := v.(type) {
		case string:
			h.Add(k, val)
		case []any:
			vals, err := stringList(val, "header "+k)
			if err != nil {
				return nil, err
			}
			for _, s := range vals {
				h.Add(k, s)
			}
		default:
			return nil, fmt.Errorf("header %q must be a string or a list of strings, not %T: %w", k, v, errdefs.ErrFailedPrecondition)
		}
	}
	return h, nil
}

func stringList(l []any, what string) ([]string, error) {
	out := make([]string, 0, len(l))
	for _, v := range l {
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("%s: %v is not a string: %w", what, v, errdefs.ErrFailedPrecondition)
		}
		out = append(out, s)
	}
	return out, nil
}

func absPath(p, dir string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

// loadCertFiles configures the default server from Docker's certs.d layout.
func loadCertFiles(dir string) ([]hostConfig, error) {
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read %s: %w", dir, err)
	}
	h := hostConfig{caps: capAll}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		name := e.Name()
		switch {
		case strings.HasSuffix(name, ".crt"):
			h.caFiles = append(h.caFiles, filepath.Join(dir, name))
		case strings.HasSuffix(name, ".cert"):
			pair := [2]string{filepath.Join(dir, name), ""}
			key := filepath.Join(dir, strings.TrimSuffix(name, ".cert")+".key")
			if _, err := os.Stat(key); err == nil {
				pair[1] = key
			}
			h.clientPairs = append(h.clientPairs, pair)
		}
	}
	return []hostConfig{h}, nil
}

// applyDefaultServer fills in the upstream of registry when hosts.toml
// named none (or there is no hosts.toml), as containerd does:
//   - docker.io is served by https://registry-1.docker.io;
//   - a loopback registry on port 80 is plain HTTP; on another explicit port
//     HTTPS is tried first (without verification) and plain HTTP after a
//     TLS handshake that got an HTTP answer; without a port, or on 443, it
//     is HTTPS without verification;
//   - anything else is https://<registry>.
func applyDefaultServer(h *hostConfig, registry string) {
	h.path = "/v2"
	switch {
	case registry == "docker.io":
		h.scheme, h.host = "https", "registry-1.docker.io"
	case isLoopback(registry):
		h.scheme, h.host = "https", registry
		_, port, _ := net.SplitHostPort(registry)
		if port == "80" {
			h.scheme = "http"
			return
		}
		if h.skipVerify == nil {
			skip := true
			h.skipVerify = &skip
		}
		h.fallbackHTTP = port != "" && port != "443"
	default:
		h.scheme, h.host = "https", registry
	}
}

// isLoopback reports whether host (with or without a port) is localhost or
// a loopback address.
func isLoopback(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
