package spec

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/crid-dev/crid/internal/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// busyboxRootfs builds a rootfs holding Debian's busybox-static and a few
// applet links, plus /etc/passwd and /etc/group.
func busyboxRootfs(t *testing.T) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "rootfs")
	require.NoError(t, os.MkdirAll(filepath.Join(root, "bin"), 0o755))
	src, err := os.Open("/bin/busybox")
	require.NoError(t, err, "install Debian's busybox-static")
	defer src.Close()
	dst, err := os.OpenFile(filepath.Join(root, "bin/busybox"), os.O_CREATE|os.O_WRONLY, 0o755)
	require.NoError(t, err)
	_, err = io.Copy(dst, src)
	require.NoError(t, err)
	require.NoError(t, dst.Close())
	for _, applet := range []string{"sh", "id", "cat", "wc", "echo"} {
		require.NoError(t, os.Symlink("busybox", filepath.Join(root, "bin", applet)))
	}
	writeFile(t, filepath.Join(root, "etc/passwd"), "root:x:0:0:root:/root:/bin/sh\napp:x:1234:1234::/:/bin/sh\n")
	writeFile(t, filepath.Join(root, "etc/group"), "root:x:0:\napp:x:1234:\nextra:x:555:app\n")
	return root
}

// TestRuncRun runs a generated spec with the real runc: the RunAsUser,
// RunAsGroup, supplemental groups and masked /proc/kcore must be what the
// process sees, and runc must accept the default seccomp profile, the
// capability set, the clamped oom_score_adj and the capped RLIMIT_NOFILE.
func TestRuncRun(t *testing.T) {
	testutil.RequiresRoot(t)
	runc, err := exec.LookPath("runc")
	require.NoError(t, err, "runc must be installed for the root tests")
	host, err := ProbeHost()
	require.NoError(t, err)

	rnd := make([]byte, 6)
	_, err = rand.Read(rnd)
	require.NoError(t, err)
	suffix := hex.EncodeToString(rnd)
	id := "spec-" + suffix
	cgParent := "/crid-test-" + suffix
	stateRoot := t.TempDir()
	bundle := t.TempDir()

	// A hostile image: /data is a symlink to a host directory. The CRI
	// mount at /data/m must land inside the rootfs, never in hostTarget.
	rootfs := busyboxRootfs(t)
	hostTarget := t.TempDir()
	require.NoError(t, os.Symlink(hostTarget, filepath.Join(rootfs, "data")))
	volume := t.TempDir()
	writeFile(t, filepath.Join(volume, "marker"), "from-volume\n")

	in := Input{
		ID:         id,
		SandboxID:  "sb-" + suffix,
		RootfsPath: rootfs,
		Mounts:     []Mount{{ContainerPath: "/data/m", HostPath: volume, Readonly: true}},
		Image:      ImageConfig{Entrypoint: []string{"/bin/sh", "-c"}, User: "root"},
		Args:       []string{`id; echo "kcore=$(cat /proc/kcore | wc -c)"; echo "nofile=$(ulimit -n)"; cat /data/m/marker`},
		Hostname:   "ignored-host-uts",
		Linux: Linux{
			CgroupsPath: cgParent + "/" + id,
			Resources:   &Resources{OOMScoreAdj: -998, PidsLimit: 64, MemoryLimitInBytes: 64 << 20},
			Security: Security{
				RunAsUser:          ptr[int64](1234),
				RunAsGroup:         ptr[int64](2000),
				SupplementalGroups: []int64{3000},
				NoNewPrivs:         true,
				Seccomp:            SecurityProfile{Type: ProfileRuntimeDefault},
				Namespaces:         NamespaceOptions{Network: NamespaceNode, IPC: NamespaceNode, PID: NamespaceContainer},
			},
		},
		Sandbox: SandboxPaths{HostNetwork: true, HostIPC: true},
		Host:    host,
	}
	s, err := Generate(in)
	require.NoError(t, err)
	data, err := json.MarshalIndent(s, "", "  ")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(bundle, "config.json"), data, 0o600))

	t.Cleanup(func() {
		out, err := exec.Command(runc, "--root", stateRoot, "delete", "--force", id).CombinedOutput()
		if err != nil && !strings.Contains(string(out), "does not exist") {
			t.Logf("runc delete: %v: %s", err, out)
		}
		removeTestCgroups(t, cgParent, id)
	})

	var stdout, stderr bytes.Buffer
	cmd := exec.Command(runc, "--root", stateRoot, "run", "--bundle", bundle, id)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "runc run: stderr=%s stdout=%s", stderr.String(), stdout.String())

	out := stdout.String()
	t.Logf("container output:\n%s", out)
	idLine, _, _ := strings.Cut(out, "\n")
	assert.Contains(t, idLine, "uid=1234(app)")
	assert.Contains(t, idLine, "gid=2000")
	assert.Contains(t, idLine, "555(extra)")
	assert.Contains(t, idLine, "3000")
	assert.Contains(t, out, "kcore=0\n", "/proc/kcore must be masked")
	assert.Contains(t, out, "nofile=")
	assert.Contains(t, out, "from-volume\n", "the volume is visible through the image's symlink")
	entries, err := os.ReadDir(hostTarget)
	require.NoError(t, err)
	assert.Empty(t, entries, "runc must not create mount targets outside the rootfs")
}

// removeTestCgroups removes <mount>/<parent>/<id> and <mount>/<parent> in
// every cgroup hierarchy mounted under /sys/fs/cgroup.
func removeTestCgroups(t *testing.T, parent, id string) {
	var mounts []string
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		mounts = []string{"/sys/fs/cgroup"}
	} else {
		entries, err := os.ReadDir("/sys/fs/cgroup")
		if err != nil {
			t.Logf("list cgroup mounts: %v", err)
			return
		}
		for _, e := range entries {
			if e.IsDir() {
				mounts = append(mounts, filepath.Join("/sys/fs/cgroup", e.Name()))
			}
		}
	}
	for _, m := range mounts {
		for _, d := range []string{filepath.Join(m, parent, id), filepath.Join(m, parent)} {
			if err := os.Remove(d); err != nil && !os.IsNotExist(err) {
				t.Errorf("remove cgroup %s: %v", d, err)
			}
		}
	}
}
