package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crid-dev/crid/cgroupmgr"
	"github.com/crid-dev/crid/container"
	"github.com/crid-dev/crid/container/spec"
	"github.com/crid-dev/crid/internal/log"
	"github.com/crid-dev/crid/sandbox"
)

// checkpointContainers creates containers by generating their spec in a
// fixed rootfs (no runtime) and keeps each record only as its JSON
// checkpoint, so every Get reads what a restarted crid would.
type checkpointContainers struct {
	fakeContainers
	rootfs string

	mu    sync.Mutex
	seq   int
	recs  map[string][]byte
	specs map[string]*specs.Spec
}

func (f *checkpointContainers) Create(ctx context.Context, cfg container.CreateConfig) (container.Record, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	id := fmt.Sprintf("%064x", f.seq)
	// Volumes are not mounted: a bind mount's source stands for its target.
	var volumes []string
	undo := func(context.Context) error { return nil }
	if cfg.PrepareVolumes != nil {
		vms, u, err := cfg.PrepareVolumes(ctx, id)
		if err != nil {
			return container.Record{}, err
		}
		undo = u
		for _, ms := range vms {
			volumes = append(volumes, ms[0].Source)
		}
	}
	sp, extra, err := cfg.SpecFunc(ctx, id, f.rootfs, volumes)
	if err != nil {
		return container.Record{}, errors.Join(err, undo(ctx))
	}
	rec := container.Record{ID: id, SandboxID: cfg.SandboxID, Name: cfg.Name, Attempt: cfg.Attempt,
		Image: cfg.Image, State: container.StateCreated, CreatedAt: time.Now(), Extra: extra}
	b, err := json.Marshal(rec)
	if err != nil {
		return container.Record{}, err
	}
	f.recs[id], f.specs[id] = b, sp
	return rec, nil
}

func (f *checkpointContainers) Remove(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.recs[id]; !ok {
		return notFound(id)
	}
	delete(f.recs, id)
	delete(f.specs, id)
	return nil
}

func (f *checkpointContainers) Get(id string) (container.Record, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.recs[id]
	if !ok {
		return container.Record{}, notFound(id)
	}
	var rec container.Record
	err := json.Unmarshal(b, &rec)
	return rec, err
}

// newUserTestService is a RuntimeService whose containers see a rootfs
// with critest's image-predefined-group /etc/passwd and /etc/group, and a
// ready sandbox to create them in.
func newUserTestService(t *testing.T) (*RuntimeService, *checkpointContainers, string) {
	t.Helper()
	root := t.TempDir()
	for name, content := range map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\ndefault-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh\n",
		"etc/group":  "root:x:0:\ndefault-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n",
	} {
		require.NoError(t, os.MkdirAll(filepath.Join(root, filepath.Dir(name)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(root, name), []byte(content), 0o644))
	}
	images := newFakeImages()
	images.add(testImage(1, "1000"), "test-image-predefined-group")
	ctrs := &checkpointContainers{rootfs: root, recs: map[string][]byte{}, specs: map[string]*specs.Spec{}}
	sbs := newFakeSandboxes()
	rs, err := NewRuntimeService(RuntimeServiceDeps{
		Version: "test", Sandboxes: sbs, Containers: ctrs, Images: images,
		Rootfs: fakeRootfs{}, Specs: spec.Generate, Handlers: []RuntimeHandler{{Name: "runc"}},
		CgroupDriver: cgroupmgr.Cgroupfs, Stats: fakeStats{},
	})
	require.NoError(t, err)
	sb, err := sbs.Run(context.Background(), sandbox.Config{Metadata: sandbox.Metadata{Name: "p", Namespace: "ns", UID: "u"}})
	require.NoError(t, err)
	stored := sbs.items[sb.ID]
	stored.NetNSPath, stored.IPCNSPath, stored.UTSNSPath, stored.PIDNSPath = "/run/netns/p", "/run/ipcns/p", "/run/utsns/p", "/proc/42/ns/pid"
	return rs, ctrs, sb.ID
}

func TestStatusAdvertisesFeatures(t *testing.T) {
	_, rc := startServer(t, newFakeImages(), fakeFS{})
	st, err := rc.Status(context.Background(), &runtime.StatusRequest{})
	require.NoError(t, err)
	require.True(t, st.GetFeatures().GetSupplementalGroupsPolicy())
	// kubelet passes a volume's bind mount options only to a runtime
	// that says it applies them.
	require.True(t, st.GetFeatures().GetMountOptions())
}

// TestContainerStatusUser runs critest's SupplementalGroupsPolicy specs
// down to the spec: the policy comes through from CRI, and ContainerStatus
// reports the spec's process user (the one exec'd processes get too), read
// back from the record's checkpoint.
func TestContainerStatusUser(t *testing.T) {
	ctx := log.WithLogger(context.Background(), slog.New(slog.DiscardHandler))
	rs, ctrs, sandboxID := newUserTestService(t)
	for _, tc := range []struct {
		desc string
		sc   *runtime.LinuxContainerSecurityContext
		want *runtime.LinuxContainerUser
	}{
		{desc: "no security context: the image user and its image groups",
			want: &runtime.LinuxContainerUser{Uid: 1000, Gid: 1000, SupplementalGroups: []int64{1000, 50000}}},
		{desc: "merge (default)",
			sc: &runtime.LinuxContainerSecurityContext{
				RunAsUser: &runtime.Int64Value{Value: 1000}, SupplementalGroups: []int64{1234},
			},
			want: &runtime.LinuxContainerUser{Uid: 1000, Gid: 1000, SupplementalGroups: []int64{1000, 1234, 50000}}},
		{desc: "strict",
			sc: &runtime.LinuxContainerSecurityContext{
				RunAsUser: &runtime.Int64Value{Value: 1000}, SupplementalGroups: []int64{1234},
				SupplementalGroupsPolicy: runtime.SupplementalGroupsPolicy_Strict,
			},
			want: &runtime.LinuxContainerUser{Uid: 1000, Gid: 1000, SupplementalGroups: []int64{1000, 1234}}},
		{desc: "strict with runAsGroup",
			sc: &runtime.LinuxContainerSecurityContext{
				RunAsUser: &runtime.Int64Value{Value: 1000}, RunAsGroup: &runtime.Int64Value{Value: 3000},
				SupplementalGroupsPolicy: runtime.SupplementalGroupsPolicy_Strict,
			},
			want: &runtime.LinuxContainerUser{Uid: 1000, Gid: 3000, SupplementalGroups: []int64{3000}}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			resp, err := rs.CreateContainer(ctx, &runtime.CreateContainerRequest{
				PodSandboxId: sandboxID,
				Config: &runtime.ContainerConfig{
					Metadata: &runtime.ContainerMetadata{Name: tc.desc},
					Image:    &runtime.ImageSpec{Image: "test-image-predefined-group"},
					Command:  []string{"sh", "-c", "id -G; sleep infinity"},
					Linux:    &runtime.LinuxContainerConfig{SecurityContext: tc.sc},
				},
			})
			require.NoError(t, err)
			id := resp.GetContainerId()

			st, err := rs.ContainerStatus(ctx, &runtime.ContainerStatusRequest{ContainerId: id})
			require.NoError(t, err)
			got := st.GetStatus().GetUser().GetLinux()
			require.True(t, proto.Equal(tc.want, got), "want %v, got %v", tc.want, got)

			u := ctrs.specs[id].Process.User
			fromSpec := &runtime.LinuxContainerUser{Uid: int64(u.UID), Gid: int64(u.GID)}
			for _, g := range u.AdditionalGids {
				fromSpec.SupplementalGroups = append(fromSpec.SupplementalGroups, int64(g))
			}
			require.True(t, proto.Equal(fromSpec, got), "status reports the spec's process user %v, got %v", fromSpec, got)
		})
	}
}

func TestUnknownSupplementalGroupsPolicyIsInvalid(t *testing.T) {
	rs, _, sandboxID := newUserTestService(t)
	ctx := log.WithLogger(context.Background(), slog.New(slog.DiscardHandler))
	_, err := rs.CreateContainer(ctx, &runtime.CreateContainerRequest{
		PodSandboxId: sandboxID,
		Config: &runtime.ContainerConfig{
			Metadata: &runtime.ContainerMetadata{Name: "c"},
			Image:    &runtime.ImageSpec{Image: "test-image-predefined-group"},
			Linux: &runtime.LinuxContainerConfig{SecurityContext: &runtime.LinuxContainerSecurityContext{
				SupplementalGroupsPolicy: runtime.SupplementalGroupsPolicy(7),
			}},
		},
	})
	require.True(t, errdefs.IsInvalidArgument(err), "%v", err)
}

// TestContainerStatusUserUnknown: a record without the server's extra data
// reports no user rather than root.
func TestContainerStatusUserUnknown(t *testing.T) {
	require.Nil(t, toCRIContainerStatus(container.Record{ID: "c"}).GetUser())
	require.Nil(t, toCRIContainerStatus(container.Record{ID: "c", Extra: []byte("not json")}).GetUser())
}
