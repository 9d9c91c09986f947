package cni

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"

	"github.com/crid-dev/crid/internal/log"
)

// timedExec logs every plugin run at debug level with its verb, pod and
// duration, so that an operator can see which plugin makes pod start-up
// or teardown slow (the plugins run one after another in a chain).
type timedExec struct {
	invoke.Exec
}

func (e timedExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	start := time.Now()
	out, err := e.Exec.ExecPlugin(ctx, pluginPath, stdin, environ)
	if !log.G(ctx).Enabled(ctx, slog.LevelDebug) {
		return out, err // no record to build on every pod start
	}
	l := log.G(ctx).With("plugin", filepath.Base(pluginPath), "command", envValue(environ, "CNI_COMMAND"),
		"podsandboxid", envValue(environ, "CNI_CONTAINERID"), "ifname", envValue(environ, "CNI_IFNAME"),
		"duration", time.Since(start))
	if err != nil {
		l.Debug("CNI plugin failed", "error", err)
	} else {
		l.Debug("CNI plugin done")
	}
	return out, err
}

// envValue returns the value of key in a KEY=VALUE list, or "".
func envValue(environ []string, key string) string {
	for i := len(environ) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(environ[i], key+"="); ok {
			return v
		}
	}
	return ""
}
