package spec

import (
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
)

func TestAllCapabilitiesStayInCridsBoundingSet(t *testing.T) {
	// This host's bounding set: everything but CAP_SYS_RESOURCE (24).
	bnd := uint64(1<<41-1) &^ (1 << 24)
	known := knownCaps(40)
	got := grantable(known, bnd)
	require.NotContains(t, got, "CAP_SYS_RESOURCE")
	require.Contains(t, got, "CAP_SYS_ADMIN")
	require.Len(t, got, len(known)-1)
	require.Equal(t, known, grantable(known, 0), "an unknown bounding set limits nothing")

	caps, err := capabilities(Capabilities{Add: []string{"ALL"}}, known, bnd)
	require.NoError(t, err)
	require.NotContains(t, caps, "CAP_SYS_RESOURCE", "add ALL means all crid may grant")
	require.Len(t, caps, len(known)-1)
}

func TestRunAsGroupNeedsAUser(t *testing.T) {
	gid := int64(1000)
	_, err := resolveUser(t.TempDir(), "1000", Security{RunAsGroup: &gid})
	require.True(t, errdefs.IsInvalidArgument(err), "the image's USER does not count: %v", err)
	uid := int64(1000)
	u, err := resolveUser(t.TempDir(), "", Security{RunAsUser: &uid, RunAsGroup: &gid})
	require.NoError(t, err)
	require.EqualValues(t, 1000, u.GID)
	_, err = resolveUser(t.TempDir(), "", Security{RunAsGroup: &gid})
	require.True(t, errdefs.IsInvalidArgument(err), "%v", err)
}
