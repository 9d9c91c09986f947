package spec

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
)

const testPasswd = `root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
# a comment
alice:x:1000:1000::/home/alice:/bin/sh
bob:x:1001:1001::/home/bob:/bin/sh
evil:x:4294967296:0::/:/bin/sh
wrap:x:1002:4294967296::/:/bin/sh
`

const testGroup = `root:x:0:
daemon:x:1:
wheel:x:10:alice,bob
audio:x:29:alice
alice:x:1000:
bob:x:1001:
staff:x:50:bob
big:x:99999999999:alice
`

// newRootfs makes a rootfs with /etc/passwd and /etc/group.
func newRootfs(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "etc/passwd"), testPasswd)
	writeFile(t, filepath.Join(root, "etc/group"), testGroup)
	return root
}

func writeFile(t *testing.T, p, content string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
	require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
}

// baseInput is an ordinary pod container: it joins the sandbox's net, ipc,
// uts and pid namespaces.
func baseInput(t *testing.T) Input {
	t.Helper()
	return Input{
		ID:         "c1",
		SandboxID:  "s1",
		Image:      ImageConfig{Cmd: []string{"/bin/sh"}},
		RootfsPath: newRootfs(t),
		Hostname:   "pod-a",
		Sandbox: SandboxPaths{
			NetNS: "/run/netns/s1", IPCNS: "/run/ipcns/s1", UTSNS: "/run/utsns/s1", PIDNS: "/proc/42/ns/pid",
			HostnamePath: "/sb/hostname", HostsPath: "/sb/hosts", ResolvConfPath: "/sb/resolv.conf", ShmPath: "/sb/shm",
		},
		Host: Host{OOMScoreAdjMin: -1000},
	}
}

func requireInvalid(t *testing.T, err error, contains string) {
	t.Helper()
	require.Error(t, err)
	require.Truef(t, errdefs.IsInvalidArgument(err), "want invalid argument, got %v", err)
	if contains != "" {
		require.ErrorContains(t, err, contains)
	}
}

func ptr[T any](v T) *T { return &v }
