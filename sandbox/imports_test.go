package sandbox

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestImportRule enforces STYLE §1: sandbox is a leaf that imports only
// internal/* of crid and never CRI.
func TestImportRule(t *testing.T) {
	out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "list", "-deps", ".").CombinedOutput()
	require.NoError(t, err, string(out))
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "k8s.io/cri-api") || strings.HasPrefix(dep, "google.golang.org/grpc") {
			t.Errorf("sandbox depends on %s", dep)
		}
		if rest, ok := strings.CutPrefix(dep, "github.com/crid-dev/crid/"); ok &&
			rest != "sandbox" && !strings.HasPrefix(rest, "internal/") {
			t.Errorf("sandbox depends on crid package %s", dep)
		}
	}
}
