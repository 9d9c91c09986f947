package imagebuild

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
)

// standinSources are the stand-in programs of the critest set; see package
// standin.
//
//go:embed standin
var standinSources embed.FS

// standinFormat versions how stand-ins are built; bump it when the build
// command changes.
const standinFormat = "imagebuild-standin/v1"

// buildStandins builds the named programs of package standin for linux/arch
// and returns the path of each binary, cached under dir by a hash of the
// sources, the toolchain version and the target.
func buildStandins(ctx context.Context, dir, arch string, names ...string) (map[string]string, error) {
	gobin, err := goTool()
	if err != nil {
		return nil, err
	}
	version, err := exec.CommandContext(ctx, gobin, "env", "GOVERSION").Output()
	if err != nil {
		return nil, fmt.Errorf("go env GOVERSION: %w", err)
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\nlinux/%s\n", standinFormat, strings.TrimSpace(string(version)), arch)
	err = fs.WalkDir(standinSources, "standin", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := standinSources.ReadFile(p)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %d\n", p, len(data))
		h.Write(data)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("hash stand-in sources: %w", err)
	}
	out := filepath.Join(dir, "standin", hex.EncodeToString(h.Sum(nil))[:32])
	paths := map[string]string{}
	var missing []string
	for _, n := range names {
		paths[n] = filepath.Join(out, n)
		if _, err := os.Stat(paths[n]); err != nil {
			missing = append(missing, n)
		}
	}
	if len(missing) == 0 {
		return paths, nil
	}

	src, err := os.MkdirTemp("", "imagebuild-standin-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(src)
	err = fs.WalkDir(standinSources, "standin", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		target := filepath.Join(src, filepath.FromSlash(p))
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		data, err := standinSources.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o644)
	})
	if err != nil {
		return nil, fmt.Errorf("write stand-in sources: %w", err)
	}
	// A module of its own, so the build needs nothing but the standard
	// library and does not depend on where crid's sources are.
	if err := os.WriteFile(filepath.Join(src, "standin", "go.mod"), []byte("module standin\n\ngo 1.22\n"), 0o644); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, fmt.Errorf("create stand-in cache: %w", err)
	}
	for _, n := range missing {
		tmp := paths[n] + ".tmp"
		cmd := exec.CommandContext(ctx, gobin, "build", "-trimpath", "-ldflags=-s -w -buildid=", "-o", tmp, "./"+path.Clean(n))
		cmd.Dir = filepath.Join(src, "standin")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch,
			"GOFLAGS=", "GOWORK=off", "GO111MODULE=on", "GOTOOLCHAIN=local")
		if msg, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("build stand-in %s: %w\n%s", n, err, msg)
		}
		if err := os.Rename(tmp, paths[n]); err != nil {
			return nil, err
		}
	}
	return paths, nil
}

// goTool finds the go command: on PATH, else at /usr/local/go.
func goTool() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/local/go/bin/go"); err == nil {
		return "/usr/local/go/bin/go", nil
	}
	return "", fmt.Errorf("the go command is needed to build the critest stand-ins: %w", exec.ErrNotFound)
}
