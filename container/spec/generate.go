package spec

import (
	"fmt"
	"log/slog"
	"maps"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// DefaultPath is $PATH when neither the image nor the request sets it.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// defaultNofile is RLIMIT_NOFILE for containers, as containerd sets it.
const defaultNofile = 1048576

// Generate builds the OCI runtime spec for in. Bad requests and hostile image
// content return errors wrapping errdefs.ErrInvalidArgument.
func Generate(in Input) (*specs.Spec, error) {
	if in.ID == "" {
		return nil, fmt.Errorf("container id is empty: %w", errdefs.ErrInvalidArgument)
	}
	if in.RootfsPath == "" || !filepath.IsAbs(in.RootfsPath) {
		return nil, fmt.Errorf("rootfs path %q must be absolute: %w", in.RootfsPath, errdefs.ErrInvalidArgument)
	}
	log := in.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("containerid", in.ID)
	sec := in.Linux.Security

	args, err := processArgs(in)
	if err != nil {
		return nil, err
	}
	env, err := processEnv(in)
	if err != nil {
		return nil, err
	}
	cwd, err := processCwd(in)
	if err != nil {
		return nil, err
	}
	user, err := resolveUser(in.RootfsPath, in.Image.User, sec)
	if err != nil {
		return nil, err
	}

	s := &specs.Spec{
		Version: specs.Version,
		Root:    &specs.Root{Path: in.RootfsPath, Readonly: sec.ReadonlyRootfs},
		Process: &specs.Process{
			Terminal:        in.TTY,
			User:            user,
			Args:            args,
			Env:             env,
			Cwd:             cwd,
			NoNewPrivileges: sec.NoNewPrivs,
			Rlimits: []specs.POSIXRlimit{{
				Type: "RLIMIT_NOFILE", Hard: nofile(in.Host), Soft: nofile(in.Host),
			}},
		},
		Linux: &specs.Linux{
			CgroupsPath: in.Linux.CgroupsPath,
			Resources: &specs.LinuxResources{
				// Deny everything; runc appends its default allow-list
				// (null, zero, full, tty, random, urandom, ptmx, pts).
				Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
			},
		},
	}
	if len(in.Annotations) > 0 {
		s.Annotations = maps.Clone(in.Annotations)
	}

	ns, newUTS, err := namespaces(in)
	if err != nil {
		return nil, err
	}
	s.Linux.Namespaces = ns
	if newUTS {
		s.Hostname = in.Hostname
	}

	if err := setResources(s, in, log); err != nil {
		return nil, err
	}
	if err := setMounts(s, in); err != nil {
		return nil, err
	}
	if err := setDevices(s, in); err != nil {
		return nil, err
	}
	if err := setSecurity(s, in); err != nil {
		return nil, err
	}
	if err := setSysctls(s, in); err != nil {
		return nil, err
	}
	return s, nil
}

func nofile(h Host) uint64 {
	if h.NofileMax > 0 && h.NofileMax < defaultNofile {
		return h.NofileMax
	}
	return defaultNofile
}

// processArgs merges the request and image command the Docker/kubelet way:
// Command replaces Entrypoint, Args replace Cmd, and a Command without Args
// drops the image Cmd (it belonged to the image's Entrypoint).
func processArgs(in Input) ([]string, error) {
	var args []string
	switch {
	case len(in.Command) > 0:
		args = append(append(args, in.Command...), in.Args...)
	case len(in.Args) > 0:
		args = append(append(args, in.Image.Entrypoint...), in.Args...)
	default:
		args = append(append(args, in.Image.Entrypoint...), in.Image.Cmd...)
	}
	if len(args) == 0 {
		return nil, fmt.Errorf("no command specified: %w", errdefs.ErrInvalidArgument)
	}
	for _, a := range args {
		if strings.ContainsRune(a, 0) {
			return nil, fmt.Errorf("command argument contains a NUL byte: %w", errdefs.ErrInvalidArgument)
		}
	}
	return args, nil
}

// processEnv is HOSTNAME, then the image env, then the request env, later
// keys replacing earlier ones in place; PATH is added when nobody set it.
func processEnv(in Input) ([]string, error) {
	var keys []string
	vals := map[string]string{}
	set := func(k, v string) {
		if _, ok := vals[k]; !ok {
			keys = append(keys, k)
		}
		vals[k] = v
	}
	if in.Hostname != "" {
		set("HOSTNAME", in.Hostname)
	}
	for _, kv := range in.Image.Env {
		k, v, _ := strings.Cut(kv, "=")
		if err := checkEnv(k, v); err != nil {
			return nil, fmt.Errorf("image env: %w", err)
		}
		set(k, v)
	}
	for _, kv := range in.Env {
		if err := checkEnv(kv.Key, kv.Value); err != nil {
			return nil, err
		}
		set(kv.Key, kv.Value)
	}
	if _, ok := vals["PATH"]; !ok {
		set("PATH", DefaultPath)
	}
	env := make([]string, 0, len(keys))
	for _, k := range keys {
		env = append(env, k+"="+vals[k])
	}
	return env, nil
}

func checkEnv(k, v string) error {
	if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
		return fmt.Errorf("invalid env variable %q: %w", k, errdefs.ErrInvalidArgument)
	}
	return nil
}

func processCwd(in Input) (string, error) {
	cwd := in.WorkingDir
	if cwd == "" {
		cwd = in.Image.WorkingDir
	}
	if cwd == "" {
		return "/", nil
	}
	if !filepath.IsAbs(cwd) || strings.ContainsRune(cwd, 0) {
		return "", fmt.Errorf("working dir %q must be absolute: %w", cwd, errdefs.ErrInvalidArgument)
	}
	return filepath.Clean(cwd), nil
}
