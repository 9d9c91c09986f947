// Command crid is a Kubernetes container runtime: a CRI gRPC server on a
// unix socket. main parses the configuration, builds every component by hand
// (wire.go), serves, and shuts down gracefully on SIGTERM or SIGINT.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/crid-dev/crid/container"
	"github.com/crid-dev/crid/sandbox"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	// The pause process of a pod with a shared PID namespace is crid itself,
	// re-executed: it sleeps and reaps orphans until it is killed.
	if len(os.Args) == 2 && os.Args[1] == "pause" {
		sandbox.PauseMain()
	}
	// ExecSync's helper: runs a detached runtime exec and waits for the
	// command as its subreaper.
	if len(os.Args) > 1 && os.Args[1] == "exec-wait" {
		container.ExecWaitMain(os.Args[2:])
	}
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "crid:", err)
		os.Exit(1)
	}
}

// options are the command line flags; each one overrides the config file.
type options struct {
	configPath string
	root       string
	state      string
	listen     string
	logLevel   string
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("crid", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.configPath, "config", DefaultConfigPath, "configuration file (drop-ins are read from config.d/ beside it)")
	fs.StringVar(&o.root, "root", "", "directory for persistent data (overrides root)")
	fs.StringVar(&o.state, "state", "", "directory for runtime state (overrides state)")
	fs.StringVar(&o.listen, "listen", "", "path of the CRI unix socket (overrides listen)")
	fs.StringVar(&o.logLevel, "log-level", "", "debug, info, warn or error (overrides log_level)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: crid [flags]\n       crid config default\n       crid version\n       crid pause (internal: a pod's PID-namespace holder)\n       crid exec-wait (internal: ExecSync's helper)\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	switch rest := fs.Args(); {
	case len(rest) == 0:
	case len(rest) == 2 && rest[0] == "config" && rest[1] == "default":
		b, err := marshalConfig(defaultConfig())
		if err != nil {
			return err
		}
		_, err = stdout.Write(b)
		return err
	case len(rest) == 1 && rest[0] == "version":
		fmt.Fprintf(stdout, "crid %s\n", version)
		return nil
	default:
		fs.Usage()
		return fmt.Errorf("unknown command %q", rest)
	}

	explicit := false
	fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "config" })
	cfg, err := loadConfig(o.configPath, explicit)
	if err != nil {
		return err
	}
	cfg.override(o)
	if err := cfg.validate(); err != nil {
		return err
	}
	logger, err := newLogger(cfg, stderr)
	if err != nil {
		return err
	}
	slog.SetDefault(logger)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return serve(ctx, cfg, logger)
}

func (c *Config) override(o options) {
	if o.root != "" {
		c.Root = o.root
	}
	if o.state != "" {
		c.State = o.state
	}
	if o.listen != "" {
		c.Listen = o.listen
	}
	if o.logLevel != "" {
		c.LogLevel = o.logLevel
	}
}

func newLogger(cfg Config, w io.Writer) (*slog.Logger, error) {
	lvl, err := parseLevel(cfg.LogLevel)
	if err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}
