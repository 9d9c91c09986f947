package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/crid-dev/crid/cni"
)

// DefaultConfigPath is where crid reads its configuration unless --config
// says otherwise. Drop-in files in config.d/ beside it are applied in lexical
// order after it, each overriding only the fields it sets.
const DefaultConfigPath = "/etc/crid/config.toml"

// Config is crid's configuration file. Every field is optional: a missing
// field keeps its default (see defaultConfig and `crid config default`).
type Config struct {
	// Root holds persistent data: images, layers, snapshots.
	Root string `toml:"root" comment:"Persistent data: images, layers, snapshots (0700)."`
	// State holds runtime data that does not survive a reboot.
	State string `toml:"state" comment:"Runtime state that does not survive a reboot (0711)."`
	// Listen is the path of the CRI gRPC unix socket.
	Listen string `toml:"listen" comment:"Path of the CRI gRPC unix socket (0600)."`
	// LogLevel is debug, info, warn or error.
	LogLevel string `toml:"log_level" comment:"debug, info, warn or error."`
	// LogFormat is text or json.
	LogFormat string `toml:"log_format" comment:"text or json."`

	Image     ImageConfig     `toml:"image"`
	Runtime   RuntimeConfig   `toml:"runtime"`
	Streaming StreamingConfig `toml:"streaming"`
	CNI       CNIConfig       `toml:"cni"`
}

// CNIConfig is the [cni] table: where the pod network is configured.
type CNIConfig struct {
	ConfDir  string   `toml:"conf_dir" comment:"Network configs; the first valid one (lexical order, *.conflist, *.conf, *.json) is the pod network. Re-read when its files change: no restart needed."`
	BinDirs  []string `toml:"bin_dirs" comment:"Where CNI plugins are searched, in order."`
	CacheDir string   `toml:"cache_dir" comment:"libcni's cache of attachments: what each pod was attached with, so that it is detached (and garbage-collected after a crash) with the same config."`
}

// StreamingConfig configures the CRI streaming server (exec, attach,
// port-forward), whose URLs kubelet and crictl connect to.
type StreamingConfig struct {
	Address string `toml:"address" comment:"host:port of the streaming (exec, attach, port-forward) server; port 0 picks a free port. Keep it on loopback unless the API server must reach it directly."`
}

// RuntimeConfig configures how containers run.
type RuntimeConfig struct {
	DefaultRuntime string `toml:"default_runtime" comment:"Handler used when a pod names none."`
	CgroupDriver   string `toml:"cgroup_driver" comment:"cgroupfs or systemd; must match kubelet's cgroupDriver."`
	Conmon         string `toml:"conmon" comment:"The per-container monitor (conmon)."`
	PausePath      string `toml:"pause_path" comment:"Holder of a pod's shared PID namespace (crid-pause). When missing, crid-pause beside the crid binary, else crid itself re-executed (much larger)."`
	// Handlers are the OCI runtimes by handler name (RuntimeClass handler).
	Handlers map[string]HandlerConfig `toml:"handlers" comment:"OCI runtimes by handler name (a RuntimeClass's handler). A handler whose binary is missing is left out at start."`
}

// HandlerConfig is one OCI runtime.
type HandlerConfig struct {
	Path string `toml:"path" comment:"runc- or crun-compatible binary: an absolute path, or a name looked up in $PATH at start (so a newer runtime installed in /usr/local/sbin wins over the distribution's)."`
	Root string `toml:"root,omitempty" comment:"The runtime's --root; default <state>/runtime/<handler>."`
}

// ImageConfig configures image pulls and storage.
type ImageConfig struct {
	Snapshotter            string   `toml:"snapshotter" comment:"overlay, native (copy-based) or auto (overlay when the root's filesystem supports it)."`
	RegistryConfigPath     string   `toml:"registry_config_path" comment:"Directory of per-registry hosts.toml files (containerd's format): <path>/<host>/hosts.toml."`
	MaxConcurrentDownloads int      `toml:"max_concurrent_downloads" comment:"Layers downloaded at once per pull."`
	PullProgressTimeout    Duration `toml:"pull_progress_timeout" comment:"A pull that receives no bytes for this long fails."`
	MaxLayerSize           int64    `toml:"max_layer_size" comment:"Largest uncompressed layer accepted, in bytes."`
	GzipDecompressor       string   `toml:"gzip_decompressor" comment:"How gzip layers are inflated: auto (igzip from ISA-L when installed, else built in), builtin, or the path of an igzip- or unpigz-compatible program (run as '-d -c', as nobody)."`
	SandboxImage           string   `toml:"sandbox_image" comment:"Image reported pinned so kubelet's image GC keeps it."`
	PinnedImages           []string `toml:"pinned_images" comment:"More images reported pinned."`
}

// Duration is a time.Duration written as "1m30s" in TOML.
type Duration time.Duration

func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	if v < 0 {
		return fmt.Errorf("negative duration %q", b)
	}
	*d = Duration(v)
	return nil
}

func defaultConfig() Config {
	return Config{
		Root:      "/var/lib/crid",
		State:     "/run/crid",
		Listen:    "/run/crid/crid.sock",
		LogLevel:  "info",
		LogFormat: "text",
		Image: ImageConfig{
			Snapshotter:            "auto",
			RegistryConfigPath:     "/etc/crid/certs.d",
			MaxConcurrentDownloads: 6,
			PullProgressTimeout:    Duration(time.Minute),
			MaxLayerSize:           64 << 30,
			GzipDecompressor:       "auto",
			SandboxImage:           "registry.k8s.io/pause:3.10",
			PinnedImages:           []string{},
		},
		Runtime: RuntimeConfig{
			DefaultRuntime: "runc",
			CgroupDriver:   "cgroupfs",
			Conmon:         "/usr/bin/conmon",
			PausePath:      "/usr/local/libexec/crid/crid-pause",
			Handlers: map[string]HandlerConfig{
				"runc": {Path: "runc"},
				"crun": {Path: "crun"},
			},
		},
		Streaming: StreamingConfig{Address: "127.0.0.1:0"},
		CNI: CNIConfig{
			ConfDir:  cni.DefaultConfDir,
			BinDirs:  append([]string(nil), cni.DefaultBinDirs...),
			CacheDir: cni.DefaultCacheDir,
		},
	}
}

// loadConfig reads path (a missing file is fine when it is the default path)
// and then its drop-ins, on top of the defaults.
func loadConfig(path string, explicit bool) (Config, error) {
	cfg := defaultConfig()
	if err := mergeFile(&cfg, path); err != nil {
		if !errors.Is(err, fs.ErrNotExist) || explicit {
			return Config{}, err
		}
	}
	dropins, err := filepath.Glob(filepath.Join(filepath.Dir(path), "config.d", "*.toml"))
	if err != nil {
		return Config{}, err
	}
	sort.Strings(dropins)
	for _, f := range dropins {
		if err := mergeFile(&cfg, f); err != nil {
			return Config{}, err
		}
	}
	return cfg, cfg.validate()
}

func mergeFile(cfg *Config, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	dec := toml.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(cfg); err != nil {
		var strict *toml.StrictMissingError
		if errors.As(err, &strict) {
			var keys []string
			for _, e := range strict.Errors {
				row, col := e.Position()
				keys = append(keys, fmt.Sprintf("%s (line %d, column %d)", strings.Join(e.Key(), "."), row, col))
			}
			return fmt.Errorf("config %s: unknown field %s", path, strings.Join(keys, ", "))
		}
		var derr *toml.DecodeError
		if errors.As(err, &derr) {
			row, col := derr.Position()
			key := strings.Join(derr.Key(), ".")
			return fmt.Errorf("config %s:%d:%d: %s: %w", path, row, col, key, err)
		}
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

func (c Config) validate() error {
	var errs []error
	for name, p := range map[string]string{"root": c.Root, "state": c.State, "listen": c.Listen} {
		if !filepath.IsAbs(p) {
			errs = append(errs, fmt.Errorf("%s must be an absolute path, got %q", name, p))
		}
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("log_format must be text or json, got %q", c.LogFormat))
	}
	switch c.Image.Snapshotter {
	case "auto", "overlay", "native":
	default:
		errs = append(errs, fmt.Errorf("image.snapshotter must be auto, overlay or native, got %q", c.Image.Snapshotter))
	}
	if _, _, err := net.SplitHostPort(c.Streaming.Address); err != nil {
		errs = append(errs, fmt.Errorf("streaming.address must be host:port, got %q", c.Streaming.Address))
	}
	if c.Image.MaxConcurrentDownloads < 1 {
		errs = append(errs, fmt.Errorf("image.max_concurrent_downloads must be at least 1"))
	}
	if c.Image.PullProgressTimeout <= 0 {
		errs = append(errs, fmt.Errorf("image.pull_progress_timeout must be positive"))
	}
	if d := c.Image.GzipDecompressor; d != "auto" && d != "builtin" && !filepath.IsAbs(d) {
		errs = append(errs, fmt.Errorf("image.gzip_decompressor must be auto, builtin or an absolute path, got %q", d))
	}
	if _, ok := c.Runtime.Handlers[c.Runtime.DefaultRuntime]; !ok {
		errs = append(errs, fmt.Errorf("runtime.default_runtime %q is not one of runtime.handlers", c.Runtime.DefaultRuntime))
	}
	if c.Runtime.CgroupDriver != "cgroupfs" && c.Runtime.CgroupDriver != "systemd" {
		errs = append(errs, fmt.Errorf("runtime.cgroup_driver must be cgroupfs or systemd, got %q", c.Runtime.CgroupDriver))
	}
	for name, h := range c.Runtime.Handlers {
		if !filepath.IsAbs(h.Path) && strings.ContainsRune(h.Path, '/') || h.Path == "" {
			errs = append(errs, fmt.Errorf("runtime.handlers.%s.path must be an absolute path or a command name looked up in $PATH, got %q", name, h.Path))
		}
	}
	for _, d := range append([]string{c.CNI.ConfDir, c.CNI.CacheDir}, c.CNI.BinDirs...) {
		if !filepath.IsAbs(d) {
			errs = append(errs, fmt.Errorf("cni directories must be absolute paths, got %q", d))
		}
	}
	if len(c.CNI.BinDirs) == 0 {
		errs = append(errs, fmt.Errorf("cni.bin_dirs must name at least one directory"))
	}
	if c.Image.MaxLayerSize <= 0 {
		errs = append(errs, fmt.Errorf("image.max_layer_size must be positive"))
	}
	return errors.Join(errs...)
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(s))); err != nil {
		return 0, fmt.Errorf("log_level must be debug, info, warn or error, got %q", s)
	}
	return l, nil
}

// marshalConfig renders c as TOML with comments, for `crid config default`.
func marshalConfig(c Config) ([]byte, error) {
	var buf bytes.Buffer
	enc := toml.NewEncoder(&buf)
	enc.SetIndentTables(true)
	if err := enc.Encode(c); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
