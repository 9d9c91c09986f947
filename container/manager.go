package container

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/crid-dev/crid/internal/atomicfile"
	"github.com/crid-dev/crid/internal/cleanup"
	"github.com/crid-dev/crid/internal/log"
	"github.com/crid-dev/crid/internal/mount"
)

// Options configure a Manager.
type Options struct {
	// StateDir holds one bundle per container (e.g. /run/crid/containers).
	StateDir string
	// Runtimes are the handlers by name; DefaultRuntime is used when
	// CreateConfig.Runtime is empty.
	Runtimes       map[string]Runtime
	DefaultRuntime string
	// OnExit, when set, is called once per container that exits: from a
	// goroutine of the Manager, or from New for exits that happened while
	// crid was down. It must not block for long.
	OnExit func(Record)
	// OOM, when set, reads the OOM kill counter of containers' cgroups
	// (cgroupmgr.Reader, which knows the hierarchy and the driver). It
	// backs up conmon's "oom" file: running containers' counters are
	// watched where the hierarchy allows (v2), and read again when an exit
	// is handled. A container whose cgroup counted a kill ends OOMKilled.
	OOM OOMCounter
}

// Manager owns the containers of one crid.
type Manager struct {
	stateDir       string
	exitDir        string
	socketDir      string
	runtimes       map[string]Runtime
	defaultRuntime string
	onExit         func(Record)
	oom            OOMCounter
	oomWatch       *oomWatcher // nil without OOM

	watch   *os.File // inotify on exitDir
	workers sync.WaitGroup

	mu sync.RWMutex
	// mu guards the fields below.
	containers map[string]*Container
	names      map[string]*reservation // nameKey → reservation
}

// Container is one container's lifecycle lock and record.
type Container struct {
	rt  Runtime
	key string // name reservation key

	// rec is the current record; replaced (never mutated) under mu.
	rec atomic.Pointer[Record]

	mu sync.Mutex
	// mu guards the fields below and every change of rec.
	removed bool
	exited  chan struct{} // closed when the record becomes Exited
	// runtimeGone is closed when the background release of the runtime's
	// state (started when the container exited) has ended; nil before.
	runtimeGone chan struct{}
	// runtimeDeleted is set by that release when it succeeded.
	runtimeDeleted atomic.Bool
	// oomPending: a recordOOM correction is waiting for mu.
	oomPending atomic.Bool
}

// reservation holds a container name while its container is created.
type reservation struct {
	done chan struct{} // closed when creation ended
	id   string        // the container, when creation succeeded
	err  error
}

// ReservedError says the name is held by another container that is not
// in the Created state (kubelet must remove it first).
type ReservedError struct {
	Name string
	ID   string
}

func (e *ReservedError) Error() string {
	return fmt.Sprintf("container name %q is reserved for %s", e.Name, e.ID)
}

// Conflict marks the error for errdefs (FailedPrecondition on the wire).
func (e *ReservedError) Conflict() {}

// New loads every container record under opts.StateDir and reconciles it
// with reality: exit files, the monitor and the runtime. One bad record
// becomes one Unknown container; it never fails New. Call Close to stop
// the exit watcher.
func New(ctx context.Context, opts Options) (*Manager, error) {
	if opts.StateDir == "" {
		return nil, fmt.Errorf("container manager: no state dir: %w", errdefs.ErrInvalidArgument)
	}
	if _, ok := opts.Runtimes[opts.DefaultRuntime]; !ok {
		return nil, fmt.Errorf("container manager: default runtime %q not configured: %w", opts.DefaultRuntime, errdefs.ErrInvalidArgument)
	}
	m := &Manager{
		stateDir:       filepath.Clean(opts.StateDir),
		runtimes:       opts.Runtimes,
		defaultRuntime: opts.DefaultRuntime,
		onExit:         opts.OnExit,
		oom:            opts.OOM,
		containers:     map[string]*Container{},
		names:          map[string]*reservation{},
	}
	m.exitDir = filepath.Join(m.stateDir, "exits")
	m.socketDir = filepath.Join(m.stateDir, "sockets")
	for _, d := range []string{m.stateDir, m.exitDir, m.socketDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("create state dir %s: %w", d, err)
		}
	}
	// Watch before loading so that no exit falls between the two.
	watch, err := watchDir(m.exitDir)
	if err != nil {
		return nil, err
	}
	m.watch = watch
	if m.oom != nil {
		m.oomWatch = newOOMWatcher(ctx, m.oom, m.spawn, m.recordOOM)
	}
	exited := m.recover(ctx)
	if m.onExit != nil {
		for _, r := range exited {
			m.onExit(r)
		}
	}
	m.workers.Add(1)
	go m.watchExits(context.WithoutCancel(ctx))
	for _, c := range m.containers {
		if rec := c.rec.Load(); rec.State == StateRunning {
			m.watchOOM(ctx, rec)
		}
	}
	return m, nil
}

// watchOOM starts watching the OOM counter of rec's cgroup. A failure only
// costs the backup to conmon's own OOM detection: it is logged.
func (m *Manager) watchOOM(ctx context.Context, rec *Record) {
	if m.oomWatch == nil {
		return
	}
	if err := m.oomWatch.add(ctx, rec.ID, rec.Bundle, rec.CgroupsPath); err != nil && !errdefs.IsNotFound(err) {
		log.G(ctx).Warn("watch OOM kills of container cgroup", "containerid", rec.ID, "cgroup", rec.CgroupsPath, "error", err)
	}
}

// spawn runs f on a goroutine that Close waits for.
func (m *Manager) spawn(f func()) {
	m.workers.Add(1)
	go func() {
		defer m.workers.Done()
		f()
	}()
}

// Close stops the exit and OOM watchers. Containers and their monitors
// keep running.
func (m *Manager) Close() error {
	err := m.watch.Close()
	if m.oomWatch != nil {
		err = errors.Join(err, m.oomWatch.close())
	}
	m.workers.Wait()
	return err
}

func watchDir(dir string) (*os.File, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("watch exit dir: %w", err)
	}
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CLOSE_WRITE|unix.IN_MOVED_TO); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("watch exit dir %s: %w", dir, err)
	}
	// A non-blocking fd makes a pollable File: Close unblocks Read.
	return os.NewFile(uintptr(fd), "inotify:"+dir), nil
}

// watchExits turns exit files written by conmon into Exited records.
func (m *Manager) watchExits(ctx context.Context) {
	defer m.workers.Done()
	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	for {
		n, err := m.watch.Read(buf)
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				log.G(ctx).Error("exit watcher stopped", "dir", m.exitDir, "error", err)
			}
			return
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafePointer(buf[off:]))
			nameBytes := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
			off += unix.SizeofInotifyEvent + int(ev.Len)
			if ev.Mask&unix.IN_Q_OVERFLOW != 0 {
				m.rescanExits(ctx) // events were lost
				continue
			}
			id := strings.TrimRight(string(nameBytes), "\x00")
			if !validID(id) {
				continue // conmon's temp files
			}
			m.spawn(func() { m.processExit(ctx, id) })
		}
	}
}

// rescanExits looks for the exit file of every container not known to
// have exited, for when the exit watcher lost events (inotify's queue
// overflowed).
func (m *Manager) rescanExits(ctx context.Context) {
	m.mu.RLock()
	var ids []string
	for id, c := range m.containers {
		if c.rec.Load().State != StateExited {
			ids = append(ids, id)
		}
	}
	m.mu.RUnlock()
	log.G(ctx).Warn("exit watcher lost events; looking at every container's exit file", "containers", len(ids))
	for _, id := range ids {
		m.processExit(ctx, id)
	}
}

// processExit records the exit of container id, if it exited.
func (m *Manager) processExit(ctx context.Context, id string) {
	c := m.lookup(id)
	if c == nil {
		return
	}
	c.mu.Lock()
	changed := !c.removed && m.handleExitLocked(ctx, c)
	rec := c.rec.Load()
	c.mu.Unlock()
	if changed && m.onExit != nil {
		m.onExit(*rec.clone())
	}
}

// handleExitLocked moves c to Exited when its exit file exists: exit code
// and time from the file, the OOM verdict from the cgroup (read before the
// runtime deletes it). It reports whether the record changed.
// Precondition: c.mu held.
func (m *Manager) handleExitLocked(ctx context.Context, c *Container) bool {
	rec := c.rec.Load()
	if rec.State == StateExited {
		return false
	}
	code, at, ok := m.readExitFile(rec.ID)
	if !ok {
		return false
	}
	n := rec.clone()
	n.State = StateExited
	n.ExitCode = code
	n.FinishedAt = at
	// The exit file's mtime comes from the kernel's coarse clock (a tick
	// behind time.Now()): a process that exits at once can look finished
	// before Start stamped StartedAt.
	if n.FinishedAt.Before(n.StartedAt) {
		n.FinishedAt = n.StartedAt
	}
	switch {
	case m.oomKilledAtExit(ctx, rec, code):
		n.Reason = ReasonOOMKilled
	case code == 0:
		n.Reason = ReasonCompleted
	default:
		n.Reason = ReasonError
	}
	m.setLocked(ctx, c, n)
	// The process is gone: release the runtime's state and cgroup now
	// rather than at Remove, but in the background: a runtime exec costs
	// tens of milliseconds that StopContainer need not wait for.
	if c.runtimeGone == nil {
		done := make(chan struct{})
		c.runtimeGone = done
		ctx, id := context.WithoutCancel(ctx), rec.ID
		m.spawn(func() {
			defer close(done)
			if err := c.rt.Delete(ctx, id, true /* force */); err != nil {
				log.G(ctx).Warn("delete runtime state of exited container", "containerid", id, "error", err)
				return
			}
			c.runtimeDeleted.Store(true)
		})
	}
	return true
}

// setLocked replaces the record and persists it. A failed write is logged:
// the in-memory record stays authoritative and recovery reconciles again.
// Precondition: c.mu held.
func (m *Manager) setLocked(ctx context.Context, c *Container, n *Record) {
	c.rec.Store(n)
	if n.State == StateExited && c.exited != nil {
		select {
		case <-c.exited:
		default:
			close(c.exited)
		}
	}
	if err := writeCheckpoint(n); err != nil {
		log.G(ctx).Error("persist container record", "containerid", n.ID, "error", err)
	}
}

func (m *Manager) exitFile(id string) string { return filepath.Join(m.exitDir, id) }

// readExitFile returns the exit code conmon wrote and the file's mtime.
func (m *Manager) readExitFile(id string) (code int32, at time.Time, ok bool) {
	p := m.exitFile(id)
	st, err := os.Stat(p)
	if err != nil {
		return 0, time.Time{}, false
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, time.Time{}, false
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 32)
	if err != nil {
		return 0, time.Time{}, false // conmon writes the file atomically; not yet
	}
	return int32(v), st.ModTime(), true
}

// CreateConfig describes a container to create.
type CreateConfig struct {
	SandboxID string
	Name      string
	Attempt   uint32
	// Spec is the finished OCI spec. Create copies it; root.path is set to
	// the bundle's rootfs and process.oomScoreAdj is clamped.
	Spec *specs.Spec
	// RootfsMounts are mounted at <bundle>/rootfs before the runtime runs.
	RootfsMounts []mount.Mount
	// PrepareRootfs, when set, is called with the new container's ID before
	// anything else is made and returns the rootfs mounts (instead of
	// RootfsMounts) and how to undo them (the snapshot named after the
	// container). The undo runs when the creation fails.
	PrepareRootfs func(ctx context.Context, id string) ([]mount.Mount, func(context.Context) error, error)
	// PrepareVolumes, when set, is called with the new container's ID once
	// its rootfs is mounted and returns the filesystems of the volumes crid
	// itself provides (read-only views of images), one list of mounts
	// each, and how to undo them. Volume i is mounted at
	// <bundle>/volumes/<i>; SpecFunc gets those directories, in order, to
	// bind into the container. The undo runs when the creation fails;
	// Remove unmounts the directories before the bundle goes, and the
	// caller releases what they were mounted from.
	PrepareVolumes func(ctx context.Context, id string) ([][]mount.Mount, func(context.Context) error, error)
	// SpecFunc, when set and Spec is nil, builds the spec once the rootfs
	// is mounted at rootfs (to read its /etc/passwd and /etc/group) and
	// the volumes at volumes. The extra bytes it returns, when not nil,
	// replace Extra.
	SpecFunc    func(ctx context.Context, id, rootfs string, volumes []string) (spec *specs.Spec, extra []byte, err error)
	LogPath     string
	Stdin       bool
	StdinOnce   bool
	TTY         bool
	Runtime     string // handler; "" for the default
	Labels      map[string]string
	Annotations map[string]string
	Image       Image
	Mounts      []specs.Mount // for status
	Extra       []byte
}

// Create creates a container: bundle, rootfs, conmon and `runtime create`.
// The name (name, sandbox, attempt) is reserved; a retry with the same
// name gets the container when it is still Created, and waits when its
// creation is still running. Creation continues when ctx is cancelled,
// so kubelet's retry finds the result; a failed creation frees the name.
func (m *Manager) Create(ctx context.Context, cfg CreateConfig) (Record, error) {
	if cfg.SandboxID == "" || cfg.Name == "" {
		return Record{}, fmt.Errorf("create container: sandbox id and name are required: %w", errdefs.ErrInvalidArgument)
	}
	if (cfg.Spec == nil || cfg.Spec.Process == nil) && cfg.SpecFunc == nil {
		return Record{}, fmt.Errorf("create container %s: spec with a process is required: %w", cfg.Name, errdefs.ErrInvalidArgument)
	}
	handler := cfg.Runtime
	if handler == "" {
		handler = m.defaultRuntime
	}
	rt, ok := m.runtimes[handler]
	if !ok {
		return Record{}, fmt.Errorf("create container %s: runtime handler %q: %w", cfg.Name, handler, errdefs.ErrNotFound)
	}
	key := nameKey(cfg.Name, cfg.SandboxID, cfg.Attempt)
	var res *reservation
	for {
		m.mu.Lock()
		var held bool
		res, held = m.names[key]
		if !held {
			res = &reservation{done: make(chan struct{})}
			m.names[key] = res
			m.mu.Unlock()
			break
		}
		m.mu.Unlock()
		select {
		case <-res.done:
		case <-ctx.Done():
			return Record{}, fmt.Errorf("wait for creation of container %s: %w", key, ctx.Err())
		}
		if res.err != nil {
			continue // that attempt failed and freed the name: try ours
		}
		if c := m.lookup(res.id); c != nil {
			if rec := c.rec.Load(); rec.State == StateCreated {
				return *rec.clone(), nil
			}
		}
		return Record{}, &ReservedError{Name: key, ID: res.id}
	}

	id, err := newID()
	if err != nil {
		m.release(key, res)
		return Record{}, err
	}
	// Creation runs detached from the request so that kubelet's retry can
	// pick up the result; it is bounded by its own timeout.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), createTimeout+time.Minute)
	go func() {
		defer cancel()
		c, err := m.create(dctx, id, key, rt, handler, cfg)
		if err != nil {
			res.err = err
			m.release(key, res)
		} else {
			res.id = id
			m.mu.Lock()
			m.containers[id] = c
			m.mu.Unlock()
		}
		close(res.done)
	}()
	select {
	case <-res.done:
	case <-ctx.Done():
		return Record{}, fmt.Errorf("create container %s: %w", key, ctx.Err())
	}
	if res.err != nil {
		return Record{}, res.err
	}
	return *m.lookup(id).rec.Load().clone(), nil
}

func (m *Manager) release(key string, res *reservation) {
	m.mu.Lock()
	if m.names[key] == res {
		delete(m.names, key)
	}
	m.mu.Unlock()
}

// create does the work of Create; every step is undone on failure.
func (m *Manager) create(ctx context.Context, id, key string, rt Runtime, handler string, cfg CreateConfig) (*Container, error) {
	cu := cleanup.New(ctx)
	defer cu.Run()

	bundle := filepath.Join(m.stateDir, id)
	if err := os.Mkdir(bundle, 0o700); err != nil {
		return nil, fmt.Errorf("create bundle of container %s: %w", id, err)
	}
	cu.Add("remove bundle "+bundle, func(context.Context) error { return removeBundle(bundle) })
	cu.Add("remove exit file and socket link of "+id, func(context.Context) error { return m.removeLeftovers(id) })
	rootfs := filepath.Join(bundle, "rootfs")
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		return nil, fmt.Errorf("create rootfs dir of container %s: %w", id, err)
	}
	mounts := cfg.RootfsMounts
	if cfg.PrepareRootfs != nil {
		ms, undo, err := cfg.PrepareRootfs(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("prepare rootfs of container %s: %w", id, err)
		}
		cu.Add("release rootfs of "+id, undo)
		mounts = ms
	}
	if len(mounts) > 0 {
		if err := mount.All(mounts, rootfs); err != nil {
			return nil, fmt.Errorf("mount rootfs of container %s: %w", id, err)
		}
		cu.Add("unmount rootfs "+rootfs, func(context.Context) error { return mount.Unmount(rootfs) })
	}
	var volumes []string
	if cfg.PrepareVolumes != nil {
		vms, undo, err := cfg.PrepareVolumes(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("prepare volumes of container %s: %w", id, err)
		}
		if undo != nil {
			cu.Add("release volumes of "+id, undo)
		}
		if volumes, err = mountVolumes(cu, bundle, vms); err != nil {
			return nil, fmt.Errorf("mount volumes of container %s: %w", id, err)
		}
	}
	in := cfg.Spec
	if in == nil {
		generated, extra, err := cfg.SpecFunc(ctx, id, rootfs, volumes)
		if err != nil {
			return nil, fmt.Errorf("generate spec of container %s: %w", id, err)
		}
		in = generated
		if extra != nil {
			cfg.Extra = extra
		}
	}
	spec, err := prepareSpec(in)
	if err != nil {
		return nil, fmt.Errorf("prepare spec of container %s: %w", id, err)
	}
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("encode spec of container %s: %w", id, err)
	}
	if err := atomicfile.WriteFile(filepath.Join(bundle, "config.json"), b, 0o600); err != nil {
		return nil, fmt.Errorf("write spec of container %s: %w", id, err)
	}
	logPath := cfg.LogPath
	if logPath != "" {
		// kubelet makes the pod's log directory; the container's own
		// directory inside it is the runtime's to make.
		if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
			return nil, fmt.Errorf("create log directory of container %s: %w", id, err)
		}
	}
	if logPath == "" {
		logPath = filepath.Join(bundle, "console.log")
	}

	// Registered before the monitor starts: conmon and runc can leave
	// state behind even when they fail.
	cu.Add("delete runtime state of "+id, func(ctx context.Context) error { return rt.Delete(ctx, id, true /* force */) })
	cu.Add("stop conmon of "+id, func(context.Context) error { killConmon(bundle, id, 0, 0); return nil })
	pid, conmonPid, err := rt.create(ctx, createOpts{
		ID: id, Bundle: bundle, Name: key, ExitDir: m.exitDir, SocketDir: m.socketDir,
		LogPath: logPath, Stdin: cfg.Stdin, StdinOnce: cfg.StdinOnce, TTY: cfg.TTY,
	})
	if err != nil {
		return nil, fmt.Errorf("create container %s: %w", id, err)
	}
	conmonStart, _ := procStartTime(conmonPid)
	cgroupsPath := ""
	if spec.Linux != nil {
		cgroupsPath = spec.Linux.CgroupsPath
	}
	rec := &Record{
		ID: id, SandboxID: cfg.SandboxID, Name: cfg.Name, Attempt: cfg.Attempt,
		Labels: cloneMap(cfg.Labels), Annotations: cloneMap(cfg.Annotations),
		Image: cfg.Image, LogPath: cfg.LogPath, Mounts: append([]specs.Mount(nil), cfg.Mounts...),
		Stdin: cfg.Stdin, StdinOnce: cfg.StdinOnce, TTY: cfg.TTY, Runtime: handler,
		State: StateCreated, CreatedAt: time.Now(),
		Pid: pid, ConmonPid: conmonPid, ConmonStart: conmonStart,
		Bundle: bundle, CgroupsPath: cgroupsPath,
		Extra: append([]byte(nil), cfg.Extra...),
	}
	if err := writeCheckpoint(rec); err != nil {
		return nil, err
	}
	c := &Container{rt: rt, key: key, exited: make(chan struct{})}
	c.rec.Store(rec)
	cu.Release()
	return c, nil
}

// mountVolumes mounts vms[i] at <bundle>/volumes/<i>, registering each
// unmount with cu, and returns the directories.
func mountVolumes(cu *cleanup.Cleanup, bundle string, vms [][]mount.Mount) ([]string, error) {
	if len(vms) == 0 {
		return nil, nil
	}
	base := filepath.Join(bundle, volumesDir)
	if err := os.Mkdir(base, 0o700); err != nil {
		return nil, err
	}
	dirs := make([]string, 0, len(vms))
	for i, ms := range vms {
		dir := filepath.Join(base, strconv.Itoa(i))
		if err := os.Mkdir(dir, 0o755); err != nil {
			return nil, err
		}
		if err := mount.All(ms, dir); err != nil {
			return nil, err
		}
		cu.Add("unmount volume "+dir, func(context.Context) error { return mount.Unmount(dir) })
		dirs = append(dirs, dir)
	}
	return dirs, nil
}

// bundleOCIVersion is the ociVersion written to config.json. crun before
// 1.9 (Debian bookworm's 1.8.1) accepts only versions it knows and fails
// "unknown version specified" on runtime-spec 1.3.0's; runc takes any 1.x.
const bundleOCIVersion = "1.0.2"

// prepareSpec returns a deep copy of s with root.path pointing at the
// bundle's rootfs, ociVersion set to bundleOCIVersion and
// process.oomScoreAdj raised to what crid may set: without
// CAP_SYS_RESOURCE runc fails on a lower value with "can't get final
// child's PID from pipe: EOF".
func prepareSpec(s *specs.Spec) (*specs.Spec, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	var c specs.Spec
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, err
	}
	ro := c.Root != nil && c.Root.Readonly
	c.Root = &specs.Root{Path: "rootfs", Readonly: ro}
	c.Version = bundleOCIVersion
	if c.Process.OOMScoreAdj != nil {
		if lowest, err := oomScoreAdjMin(); err == nil && *c.Process.OOMScoreAdj < lowest {
			c.Process.OOMScoreAdj = &lowest
		}
	}
	return &c, nil
}

// killConmon SIGKILLs the conmon of container id: pid (with start time)
// when known, else the one in the bundle's conmon.pid if its command line
// names id.
func killConmon(bundle, id string, pid int, start uint64) {
	if pid <= 0 {
		b, err := os.ReadFile(filepath.Join(bundle, "conmon.pid"))
		if err != nil {
			return
		}
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		if err != nil || !strings.Contains(string(cmdline), id) {
			return
		}
	}
	if processAlive(pid, start) {
		_ = unix.Kill(pid, unix.SIGKILL)
	}
}

// removeLeftovers removes what conmon leaves outside the bundle.
func (m *Manager) removeLeftovers(id string) error {
	var errs []error
	for _, p := range []string{m.exitFile(id), filepath.Join(m.socketDir, id)} {
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Start starts a Created container's process.
func (m *Manager) Start(ctx context.Context, id string) error {
	c, err := m.get(id)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.removed {
		return fmt.Errorf("container %s: %w", id, errdefs.ErrNotFound)
	}
	rec := c.rec.Load()
	if rec.State != StateCreated {
		return fmt.Errorf("start container %s in state %s: %w", rec.ID, rec.State, errdefs.ErrFailedPrecondition)
	}
	// The cgroup exists since create; watch it before the process runs.
	m.watchOOM(ctx, rec)
	if err := c.rt.Start(ctx, rec.ID); err != nil {
		m.handleExitLocked(ctx, c)
		return fmt.Errorf("start container %s: %w", rec.ID, err)
	}
	n := rec.clone()
	n.State = StateRunning
	n.StartedAt = time.Now()
	m.setLocked(ctx, c, n)
	return nil
}

// killTimeout bounds the wait for a container to exit after SIGKILL.
const killTimeout = 30 * time.Second

// Stop stops a container: stopSignal (SIGTERM when 0), up to timeout for it
// to exit, then SIGKILL. Stopping an exited container does nothing.
func (m *Manager) Stop(ctx context.Context, id string, timeout time.Duration, stopSignal syscall.Signal) error {
	c, err := m.get(id)
	if err != nil {
		return err
	}
	c.mu.Lock()
	changed, err := m.stopLocked(ctx, c, timeout, stopSignal)
	rec := c.rec.Load()
	c.mu.Unlock()
	if changed && m.onExit != nil {
		m.onExit(*rec.clone())
	}
	return err
}

// stopLocked reports whether it moved the record to Exited.
// Precondition: c.mu held.
func (m *Manager) stopLocked(ctx context.Context, c *Container, timeout time.Duration, sig syscall.Signal) (bool, error) {
	if c.removed {
		return false, nil
	}
	if m.handleExitLocked(ctx, c) {
		return true, nil
	}
	rec := c.rec.Load()
	switch rec.State {
	case StateExited:
		return false, nil
	case StateUnknown:
		return m.stopUnknownLocked(ctx, c), nil
	}
	if sig == 0 {
		sig = syscall.SIGTERM
	}
	if timeout > 0 && sig != syscall.SIGKILL && rec.State == StateRunning {
		if err := m.kill(ctx, c, rec, sig); err != nil && !m.exitedNow(rec.ID) {
			log.G(ctx).Warn("send stop signal", "containerid", rec.ID, "signal", sig, "error", err)
		}
		if m.waitExitFile(ctx, rec.ID, timeout) {
			return m.handleExitLocked(ctx, c), nil
		}
		if ctx.Err() != nil {
			return false, fmt.Errorf("stop container %s: %w", rec.ID, ctx.Err())
		}
	}
	if err := m.kill(ctx, c, rec, syscall.SIGKILL); err != nil && !m.exitedNow(rec.ID) {
		if !processAlive(rec.ConmonPid, rec.ConmonStart) {
			// No monitor will ever write the exit file.
			return m.stopUnknownLocked(ctx, c), nil
		}
		return false, fmt.Errorf("kill container %s: %w", rec.ID, err)
	}
	if !m.waitExitFile(ctx, rec.ID, killTimeout) {
		if ctx.Err() != nil {
			return false, fmt.Errorf("stop container %s: %w", rec.ID, ctx.Err())
		}
		return false, fmt.Errorf("stop container %s: no exit after SIGKILL: %w", rec.ID, context.DeadlineExceeded)
	}
	return m.handleExitLocked(ctx, c), nil
}

// kill signals a running container's init: directly when its identity can
// be pinned (see signalInit), else through the runtime.
func (m *Manager) kill(ctx context.Context, c *Container, rec *Record, sig syscall.Signal) error {
	if rec.State == StateRunning && processAlive(rec.ConmonPid, rec.ConmonStart) && signalInit(rec.Pid, rec.ConmonPid, sig) {
		return nil
	}
	return c.rt.Kill(ctx, rec.ID, sig, false /* all */)
}

// stopUnknownLocked ends a container whose monitor is gone: kill whatever
// the runtime still knows, then record an exit with no known code.
// Precondition: c.mu held.
func (m *Manager) stopUnknownLocked(ctx context.Context, c *Container) bool {
	rec := c.rec.Load()
	if err := c.rt.Kill(ctx, rec.ID, syscall.SIGKILL, true /* all */); err != nil && !errdefs.IsNotFound(err) {
		log.G(ctx).Warn("kill container without monitor", "containerid", rec.ID, "error", err)
	}
	if m.waitExitFile(ctx, rec.ID, time.Second) && m.handleExitLocked(ctx, c) {
		return true
	}
	if err := c.rt.Delete(ctx, rec.ID, true /* force */); err != nil {
		log.G(ctx).Warn("delete runtime state of container without monitor", "containerid", rec.ID, "error", err)
	}
	n := rec.clone()
	n.State = StateExited
	n.ExitCode = 255
	n.FinishedAt = time.Now()
	n.Reason = ReasonError
	if n.Message == "" {
		n.Message = "container monitor lost; exit status unknown"
	}
	m.setLocked(ctx, c, n)
	return true
}

func (m *Manager) exitedNow(id string) bool { return fileExists(m.exitFile(id)) }

// waitExitFile polls for conmon's exit file for up to d: every 2 ms at
// first (a killed container is usually gone within a few milliseconds),
// backing off to every 20 ms.
func (m *Manager) waitExitFile(ctx context.Context, id string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	interval := 2 * time.Millisecond
	for {
		if _, _, ok := m.readExitFile(id); ok {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		t := time.NewTimer(min(interval, time.Until(deadline)+time.Millisecond))
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
		interval = min(interval*2, 20*time.Millisecond)
	}
}

// Remove stops the container if needed and deletes everything it owns:
// runtime state, rootfs and volume mounts, bundle, record and name. An
// unknown ID is ErrNotFound (the server answers OK).
func (m *Manager) Remove(ctx context.Context, id string) error {
	c, err := m.get(id)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.removed {
		return fmt.Errorf("container %s: %w", id, errdefs.ErrNotFound)
	}
	rec := c.rec.Load()
	if rec.State != StateExited {
		if _, err := m.stopLocked(ctx, c, 0, syscall.SIGKILL); err != nil {
			return fmt.Errorf("remove container %s: %w", rec.ID, err)
		}
		rec = c.rec.Load()
	}
	if c.runtimeGone != nil {
		<-c.runtimeGone // never two runtime deletes of one container at once
	}
	if !c.runtimeDeleted.Load() {
		if err := c.rt.Delete(ctx, rec.ID, true /* force */); err != nil {
			return fmt.Errorf("remove container %s: %w", rec.ID, err)
		}
	}
	killConmon(rec.Bundle, rec.ID, rec.ConmonPid, rec.ConmonStart)
	if m.oomWatch != nil {
		m.oomWatch.remove(rec.ID)
	}
	// The leftovers outside the bundle go first: recovery only finds
	// containers by their bundles, so a crash in between must not leave
	// them without one.
	if err := m.removeLeftovers(rec.ID); err != nil {
		log.G(ctx).Warn("remove container leftovers", "containerid", rec.ID, "error", err)
	}
	if err := removeBundle(rec.Bundle); err != nil {
		return fmt.Errorf("remove container %s: %w", rec.ID, err)
	}
	c.removed = true
	m.mu.Lock()
	delete(m.containers, rec.ID)
	if res := m.names[c.key]; res != nil && res.id == rec.ID {
		delete(m.names, c.key)
	}
	m.mu.Unlock()
	return nil
}

// Get returns the record of the container whose ID is id or starts with
// it (unambiguously).
func (m *Manager) Get(idOrPrefix string) (Record, error) {
	c, err := m.get(idOrPrefix)
	if err != nil {
		return Record{}, err
	}
	return *c.rec.Load().clone(), nil
}

// Filter selects containers in List; zero fields match everything.
type Filter struct {
	ID        string // full ID or prefix
	SandboxID string
	State     State
	Labels    map[string]string // all must match
}

// List returns the matching records, oldest first.
func (m *Manager) List(f Filter) []Record {
	m.mu.RLock()
	cs := make([]*Container, 0, len(m.containers))
	for id, c := range m.containers {
		if f.ID == "" || strings.HasPrefix(id, f.ID) {
			cs = append(cs, c)
		}
	}
	m.mu.RUnlock()
	out := make([]Record, 0, len(cs))
	for _, c := range cs {
		r := c.rec.Load()
		if f.SandboxID != "" && r.SandboxID != f.SandboxID || f.State != "" && r.State != f.State {
			continue
		}
		match := true
		for k, v := range f.Labels {
			if r.Labels[k] != v {
				match = false
				break
			}
		}
		if match {
			out = append(out, *r.clone())
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out
}

// Wait blocks until the container has exited and returns its record.
func (m *Manager) Wait(ctx context.Context, id string) (Record, error) {
	c, err := m.get(id)
	if err != nil {
		return Record{}, err
	}
	select {
	case <-c.exited:
		return *c.rec.Load().clone(), nil
	case <-ctx.Done():
		return Record{}, fmt.Errorf("wait for container %s: %w", id, ctx.Err())
	}
}

// ExecSync runs cmd in a running container and returns its output (each
// stream capped at MaxExecOutput) and exit code. When timeout passes the
// process is killed and the error wraps context.DeadlineExceeded.
func (m *Manager) ExecSync(ctx context.Context, id string, cmd []string, timeout time.Duration) (stdout, stderr []byte, exitCode int, err error) {
	if len(cmd) == 0 {
		return nil, nil, -1, fmt.Errorf("exec in container %s: empty command: %w", id, errdefs.ErrInvalidArgument)
	}
	c, err := m.get(id)
	if err != nil {
		return nil, nil, -1, err
	}
	rec := c.rec.Load()
	if rec.State != StateRunning {
		return nil, nil, -1, fmt.Errorf("exec in container %s in state %s: %w", rec.ID, rec.State, errdefs.ErrFailedPrecondition)
	}
	b, err := os.ReadFile(filepath.Join(rec.Bundle, "config.json"))
	if err != nil {
		return nil, nil, -1, fmt.Errorf("exec in container %s: read spec: %w", rec.ID, err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(b, &spec); err != nil || spec.Process == nil {
		return nil, nil, -1, fmt.Errorf("exec in container %s: decode spec: %w", rec.ID, errors.Join(err, errdefs.ErrDataLoss))
	}
	p := *spec.Process
	p.Args = cmd
	p.Terminal = false
	p.ConsoleSize = nil
	var out, errOut cappedBuffer
	code, err := c.rt.exec(ctx, execOpts{
		ID: rec.ID, Dir: rec.Bundle, Process: &p, Timeout: timeout, Stdout: &out, Stderr: &errOut,
	})
	return out.b, errOut.b, code, err
}

// cappedBuffer keeps the first MaxExecOutput bytes and drops the rest,
// still consuming them so that the process never blocks on a full pipe.
type cappedBuffer struct{ b []byte }

func (w *cappedBuffer) Write(p []byte) (int, error) {
	if room := MaxExecOutput - len(w.b); room > 0 {
		w.b = append(w.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// ReopenLog makes the container's monitor reopen its log file (kubelet
// renamed it), and waits until the new file exists.
func (m *Manager) ReopenLog(ctx context.Context, id string) error {
	c, err := m.get(id)
	if err != nil {
		return err
	}
	rec := c.rec.Load()
	if rec.State != StateRunning {
		return fmt.Errorf("reopen log of container %s in state %s: %w", rec.ID, rec.State, errdefs.ErrFailedPrecondition)
	}
	if err := c.rt.ReopenLog(rec.Bundle); err != nil {
		return fmt.Errorf("reopen log of container %s: %w", rec.ID, err)
	}
	if rec.LogPath == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for !fileExists(rec.LogPath) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("reopen log of container %s: %s not recreated: %w", rec.ID, rec.LogPath, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// UpdateResources changes the resources of a created or running container.
func (m *Manager) UpdateResources(ctx context.Context, id string, res *specs.LinuxResources) error {
	if res == nil {
		return fmt.Errorf("update container %s: no resources: %w", id, errdefs.ErrInvalidArgument)
	}
	c, err := m.get(id)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	rec := c.rec.Load()
	if c.removed || (rec.State != StateRunning && rec.State != StateCreated) {
		return fmt.Errorf("update container %s in state %s: %w", rec.ID, rec.State, errdefs.ErrFailedPrecondition)
	}
	if err := c.rt.UpdateResources(ctx, rec.ID, res); err != nil {
		return fmt.Errorf("update container %s: %w", rec.ID, err)
	}
	return nil
}

func (m *Manager) lookup(id string) *Container {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.containers[id]
}

// get resolves a full ID or an unambiguous prefix.
func (m *Manager) get(idOrPrefix string) (*Container, error) {
	if idOrPrefix == "" {
		return nil, fmt.Errorf("container id: empty: %w", errdefs.ErrInvalidArgument)
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if c, ok := m.containers[idOrPrefix]; ok {
		return c, nil
	}
	var found *Container
	for id, c := range m.containers {
		if strings.HasPrefix(id, idOrPrefix) {
			if found != nil {
				return nil, fmt.Errorf("container id prefix %q is ambiguous: %w", idOrPrefix, errdefs.ErrInvalidArgument)
			}
			found = c
		}
	}
	if found == nil {
		return nil, fmt.Errorf("container %s: %w", idOrPrefix, errdefs.ErrNotFound)
	}
	return found, nil
}

func newID() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate container id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

func validID(id string) bool {
	if len(id) != 64 {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
