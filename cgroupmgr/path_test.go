package cgroupmgr

import (
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
)

func TestContainerPath(t *testing.T) {
	for _, tc := range []struct {
		desc           string
		driver         Driver
		parent, id     string
		want           string
		wantInvalidArg bool
	}{
		{"cgroupfs under kubelet's pod cgroup", Cgroupfs, "/kubepods/besteffort/pod1234", "abc", "/kubepods/besteffort/pod1234/crid-abc", false},
		{"cgroupfs relative parent", Cgroupfs, "kubepods/pod1", "abc", "/kubepods/pod1/crid-abc", false},
		{"cgroupfs default parent", Cgroupfs, "", "abc", "/crid/crid-abc", false},
		{"cgroupfs refuses escape", Cgroupfs, "/kubepods/../../etc", "abc", "", true},
		{"cgroupfs refuses a slice", Cgroupfs, "kubepods-besteffort.slice", "abc", "", true},
		{"systemd slice", Systemd, "kubepods-besteffort-pod1234.slice", "abc", "kubepods-besteffort-pod1234.slice:crid:abc", false},
		{"systemd default parent", Systemd, "", "abc", "system.slice:crid:abc", false},
		{"systemd refuses a path", Systemd, "/kubepods/pod1", "abc", "", true},
		{"bad id", Cgroupfs, "/kubepods", "a/b", "", true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			got, err := tc.driver.ContainerPath(tc.parent, tc.id)
			if tc.wantInvalidArg {
				require.True(t, errdefs.IsInvalidArgument(err), "%v", err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestParseDriver(t *testing.T) {
	d, err := ParseDriver("systemd")
	require.NoError(t, err)
	require.Equal(t, Systemd, d)
	_, err = ParseDriver("cgroupfs2")
	require.True(t, errdefs.IsInvalidArgument(err))
}
