package imagebuild

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// runScript runs a stand-in script with the host's busybox shell, which has
// the applets the scripts use.
func runScript(t *testing.T, script string, args ...string) (string, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "script")
	require.NoError(t, os.WriteFile(path, []byte(script), 0o755))
	cmd := exec.Command(BusyboxPath, append([]string{"sh", path}, args...)...)
	out, err := cmd.Output()
	return string(out), err
}

func TestPgrepScript(t *testing.T) {
	// A process named sleep: busybox run through a link of that name.
	link := filepath.Join(t.TempDir(), "sleep")
	require.NoError(t, os.Symlink(BusyboxPath, link))
	sleep := exec.Command(link, "30")
	require.NoError(t, sleep.Start())
	t.Cleanup(func() { _ = sleep.Process.Kill(); _ = sleep.Wait() })

	out, err := runScript(t, pgrepScript, "^sle+p$")
	require.NoError(t, err)
	require.Contains(t, strings.Fields(out), strconv.Itoa(sleep.Process.Pid))

	out, err = runScript(t, pgrepScript, "no-such-process-name")
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit)
	require.Equal(t, 1, exit.ExitCode())
	require.Empty(t, out)
}

func TestIpcsScript(t *testing.T) {
	// A negative key is above 2^31 as ipcs prints it (unsigned hex).
	for _, k := range []int{0x7c1d0001, -0x35f71a69} {
		id, err := unix.SysvShmGet(k, 4096, unix.IPC_CREAT|0o600)
		require.NoError(t, err)
		t.Cleanup(func() { _, _ = unix.SysvShmCtl(id, unix.IPC_RMID, nil) })

		out, err := runScript(t, ipcsScript, "-m")
		require.NoError(t, err)
		want := "0x" + strconv.FormatUint(uint64(uint32(int32(k))), 16)
		want = "0x" + strings.Repeat("0", 10-len(want)) + want[2:]
		require.Contains(t, out, "------ Shared Memory Segments --------")
		require.Regexp(t, `(?m)^`+want+` +`+strconv.Itoa(id)+` +\S+ +600 +4096 `, out)
	}
}

func TestWriteMirrorConfig(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, WriteMirrorConfig(dir, "http://127.0.0.1:5000", []string{"gcr.io", "registry.k8s.io"}))
	b, err := os.ReadFile(filepath.Join(dir, "registry.k8s.io", "hosts.toml"))
	require.NoError(t, err)
	require.Contains(t, string(b), `server = "http://127.0.0.1:5000"`)
	require.Contains(t, string(b), `[host."http://127.0.0.1:5000"]`)
	require.Contains(t, string(b), `capabilities = ["pull", "resolve"]`)
	require.FileExists(t, filepath.Join(dir, "gcr.io", "hosts.toml"))
}

func TestUpstreamHosts(t *testing.T) {
	require.Equal(t, []string{"gcr.io", "registry.k8s.io"}, UpstreamHosts([]Target{
		{Upstream: "registry.k8s.io"}, {}, {Upstream: "gcr.io"}, {Upstream: "registry.k8s.io"},
	}))
}
