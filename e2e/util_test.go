//go:build e2e

package e2e

import (
	"context"
	"os/exec"
	goruntime "runtime"
)

func hostArch() string { return goruntime.GOARCH }

func execCombined(ctx context.Context, bin string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	return string(out), err
}
