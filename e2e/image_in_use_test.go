//go:build e2e

package e2e

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestRemoveImageInUse removes an image while a container runs on it: the
// image goes from the lists at once, the container keeps running, and when
// the container is removed the image's layers go too — no snapshot is left.
func TestRemoveImageInUse(t *testing.T) {
	e := newRuntimeEnv(t)
	ctx := context.Background()
	pod := e.podConfig("in-use", nil)
	podID := e.runPod(t, pod)
	id := e.run(t, podID, pod, "sleeper", "sleep", "3600")

	_, err := e.d.images().RemoveImage(ctx, &runtime.RemoveImageRequest{Image: &runtime.ImageSpec{Image: e.image}})
	require.NoError(t, err)
	st, err := e.d.images().ImageStatus(ctx, &runtime.ImageStatusRequest{Image: &runtime.ImageSpec{Image: e.image}})
	require.NoError(t, err)
	require.Nil(t, st.GetImage(), "the removed image is not listed")
	require.Equal(t, runtime.ContainerState_CONTAINER_RUNNING, e.ctrStatus(t, id).GetState())
	require.Equal(t, "ok\n", e.mustExec(t, id, "echo", "ok"))

	_, err = e.rt().StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{PodSandboxId: podID})
	require.NoError(t, err)
	_, err = e.rt().RemovePodSandbox(ctx, &runtime.RemovePodSandboxRequest{PodSandboxId: podID})
	require.NoError(t, err)
	_, snaps := e.d.storeDirs()
	require.Zero(t, countEntries(t, filepath.Join(snaps, "snapshots")),
		"the image's layer snapshots go once no container sits on them")
}
