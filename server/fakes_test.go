package server

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/crid-dev/crid/cgroupmgr"
	"github.com/crid-dev/crid/container"
	"github.com/crid-dev/crid/sandbox"
	"github.com/crid-dev/crid/snapshotter"
)

// fakeSandboxes keeps sandboxes in memory; Run makes them Ready at once.
type fakeSandboxes struct {
	mu    sync.Mutex
	items map[string]*sandbox.Sandbox
	seq   int
	// ifaces are NetworkStats' answers by sandbox ID; netErr, when set,
	// fails it.
	ifaces map[string][]sandbox.InterfaceStats
	netErr map[string]error
}

func newFakeSandboxes() *fakeSandboxes { return &fakeSandboxes{items: map[string]*sandbox.Sandbox{}} }

func (f *fakeSandboxes) Run(_ context.Context, cfg sandbox.Config) (*sandbox.Sandbox, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	sb := &sandbox.Sandbox{ID: fmt.Sprintf("%064d", f.seq), Config: cfg, State: sandbox.StateReady, CreatedAt: time.Now()}
	f.items[sb.ID] = sb
	c := *sb
	return &c, nil
}

func (f *fakeSandboxes) get(id string) (*sandbox.Sandbox, error) {
	for k, v := range f.items {
		if strings.HasPrefix(k, id) {
			return v, nil
		}
	}
	return nil, fmt.Errorf("sandbox %s: %w", id, errdefs.ErrNotFound)
}

func (f *fakeSandboxes) Stop(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	sb, err := f.get(id)
	if err != nil {
		return err
	}
	sb.State = sandbox.StateNotReady
	return nil
}

func (f *fakeSandboxes) Remove(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	sb, err := f.get(id)
	if err != nil {
		return err
	}
	delete(f.items, sb.ID)
	return nil
}

func (f *fakeSandboxes) Get(id string) (*sandbox.Sandbox, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sb, err := f.get(id)
	if err != nil {
		return nil, err
	}
	c := *sb
	return &c, nil
}

func (f *fakeSandboxes) List(sandbox.Filter) []*sandbox.Sandbox {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*sandbox.Sandbox
	for _, v := range f.items {
		c := *v
		out = append(out, &c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (f *fakeSandboxes) WithReady(ctx context.Context, id string, fn func(context.Context, *sandbox.Sandbox) error) error {
	sb, err := f.Get(id)
	if err != nil {
		return err
	}
	if sb.State != sandbox.StateReady {
		return sandbox.ErrSandboxNotReady
	}
	return fn(ctx, sb)
}

func (f *fakeSandboxes) NetworkStats(_ context.Context, id string) ([]sandbox.InterfaceStats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sb, err := f.get(id)
	if err != nil {
		return nil, err
	}
	if err := f.netErr[sb.ID]; err != nil {
		return nil, err
	}
	if sb.State != sandbox.StateReady {
		return nil, sandbox.ErrSandboxNotReady
	}
	return f.ifaces[sb.ID], nil
}

// fakeContainers knows no container: every lookup is NotFound.
type fakeContainers struct{}

func newFakeContainers() fakeContainers { return fakeContainers{} }

func notFound(id string) error { return fmt.Errorf("container %s: %w", id, errdefs.ErrNotFound) }

func (fakeContainers) Create(_ context.Context, cfg container.CreateConfig) (container.Record, error) {
	return container.Record{}, fmt.Errorf("fake: %w", errdefs.ErrNotImplemented)
}
func (fakeContainers) Start(_ context.Context, id string) error { return notFound(id) }
func (fakeContainers) Stop(_ context.Context, id string, _ time.Duration, _ syscall.Signal) error {
	return notFound(id)
}
func (fakeContainers) Remove(_ context.Context, id string) error { return notFound(id) }
func (fakeContainers) Get(id string) (container.Record, error) {
	return container.Record{}, notFound(id)
}
func (fakeContainers) List(container.Filter) []container.Record     { return nil }
func (fakeContainers) ReopenLog(_ context.Context, id string) error { return notFound(id) }
func (fakeContainers) UpdateResources(_ context.Context, id string, _ *specs.LinuxResources) error {
	return notFound(id)
}
func (fakeContainers) ExecSync(_ context.Context, id string, _ []string, _ time.Duration) ([]byte, []byte, int, error) {
	return nil, nil, 0, notFound(id)
}

type fakeRootfs struct{}

func (fakeRootfs) Prepare(context.Context, string, string) ([]snapshotter.Mount, error) {
	return nil, nil
}
func (fakeRootfs) View(context.Context, string, string) ([]snapshotter.Mount, error) {
	return nil, nil
}
func (fakeRootfs) Remove(context.Context, string) error { return nil }
func (fakeRootfs) Usage(context.Context, string) (snapshotter.Usage, error) {
	return snapshotter.Usage{}, nil
}
func (fakeRootfs) Root() string { return "/fake" }
func (fakeRootfs) Capacity(context.Context) (snapshotter.Capacity, error) {
	return snapshotter.Capacity{}, nil
}

type fakeStats struct{}

func (fakeStats) Stats(string) (cgroupmgr.Stats, error)     { return cgroupmgr.Stats{}, nil }
func (fakeStats) Metrics(string) (cgroupmgr.Metrics, error) { return cgroupmgr.Metrics{}, nil }
