//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crid-dev/crid/internal/mount"
)

// rtEnv is a daemon with the busybox image pulled, a cgroup parent and a
// log directory of its own. Everything it made is removed when the test
// ends: pods through the CRI, then the daemon, then leftover cgroups.
type rtEnv struct {
	d        *daemon
	image    string // full reference of crid-test/busybox:latest
	imageID  string
	cgParent string // e.g. /crid-e2e-0123abcd
	logDir   string
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return hex.EncodeToString(b)
}

func newRuntimeEnv(t *testing.T, opts ...daemonOption) *rtEnv {
	t.Helper()
	reg, pushed := pushSet(t, []string{"basic"})
	e := &rtEnv{cgParent: "/crid-e2e-" + randomHex(t, 4)}
	logDir, err := os.MkdirTemp("", "crid-e2e-logs-")
	require.NoError(t, err)
	e.logDir = logDir
	// Registered first so that it runs last: after the daemon stopped.
	t.Cleanup(func() {
		killCgroupProcs(e.cgParent)
		if err := e2eRemoveCgroupParent(e.cgParent); err != nil {
			t.Errorf("remove cgroup parent %s: %v", e.cgParent, err)
		}
		os.RemoveAll(e.logDir)
	})
	e.d = startDaemon(t, opts...)
	t.Cleanup(func() { e.removeAllPods(t) })
	e.image = reg.Addr() + "/crid-test/busybox:latest"
	e.imageID = imageID(pushed["crid-test/busybox:latest"])
	_, err = e.d.images().PullImage(context.Background(), &runtime.PullImageRequest{Image: &runtime.ImageSpec{Image: e.image}})
	require.NoError(t, err, "pull busybox\n%s", e.d.Logs())
	return e
}

// removeAllPods stops and removes every pod of a running daemon.
func (e *rtEnv) removeAllPods(t testing.TB) {
	if e.d.cmd == nil || e.d.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rt := e.d.runtime()
	list, err := rt.ListPodSandbox(ctx, &runtime.ListPodSandboxRequest{})
	if err != nil {
		t.Errorf("cleanup: list pods: %v", err)
		return
	}
	for _, p := range list.GetItems() {
		if _, err := rt.StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{PodSandboxId: p.Id}); err != nil {
			t.Errorf("cleanup: stop pod %s: %v", p.Id, err)
		}
		if _, err := rt.RemovePodSandbox(ctx, &runtime.RemovePodSandboxRequest{PodSandboxId: p.Id}); err != nil {
			t.Errorf("cleanup: remove pod %s: %v", p.Id, err)
		}
	}
}

// cgroupMounts are the mount points of every cgroup hierarchy (v1 and the
// hybrid v2 one).
func cgroupMounts() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		for i, fl := range fields {
			if fl == "-" && i+1 < len(fields) {
				if fields[i+1] == "cgroup" || fields[i+1] == "cgroup2" {
					out = append(out, fields[4])
				}
				break
			}
		}
	}
	return out, sc.Err()
}

// cgroupDirsUnder lists the cgroup directories strictly below parent in
// every hierarchy.
func cgroupDirsUnder(t testing.TB, parent string) []string {
	t.Helper()
	mnts, err := cgroupMounts()
	require.NoError(t, err)
	var out []string
	for _, m := range mnts {
		root := filepath.Join(m, parent)
		_ = filepath.WalkDir(root, func(p string, de os.DirEntry, err error) error {
			if err == nil && de.IsDir() && p != root {
				out = append(out, p)
			}
			return nil
		})
	}
	return out
}

// killCgroupProcs SIGKILLs whatever still runs below parent (after a failed
// test) so that the directories can go.
func killCgroupProcs(parent string) {
	mnts, _ := cgroupMounts()
	for _, m := range mnts {
		_ = filepath.WalkDir(filepath.Join(m, parent), func(p string, de os.DirEntry, err error) error {
			if err != nil || !de.IsDir() {
				return nil
			}
			b, _ := os.ReadFile(filepath.Join(p, "cgroup.procs"))
			for _, s := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(s); err == nil && pid > 0 {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
			return nil
		})
	}
}

// e2eRemoveCgroupParent removes parent and everything below it from every
// hierarchy, deepest first.
func e2eRemoveCgroupParent(parent string) error {
	mnts, err := cgroupMounts()
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range mnts {
		errs = append(errs, rmCgroupTree(filepath.Join(m, parent)))
	}
	return errors.Join(errs...)
}

func rmCgroupTree(dir string) error {
	ents, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, de := range ents {
		if de.IsDir() {
			if err := rmCgroupTree(filepath.Join(dir, de.Name())); err != nil {
				return err
			}
		}
	}
	var err2 error
	for i := 0; i < 50; i++ { // a just-killed task may linger a moment
		if err2 = syscall.Rmdir(dir); err2 == nil || errors.Is(err2, syscall.ENOENT) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return err2
}

// nsOpts are namespace modes for network, pid and ipc.
func nsOpts(network, pid, ipc runtime.NamespaceMode) *runtime.NamespaceOption {
	return &runtime.NamespaceOption{Network: network, Pid: pid, Ipc: ipc}
}

// podConfig is a pod like kubelet's: its own namespaces for everything but
// PID (CONTAINER, kubelet's default) unless ns says otherwise.
func (e *rtEnv) podConfig(name string, ns *runtime.NamespaceOption) *runtime.PodSandboxConfig {
	if ns == nil {
		ns = nsOpts(runtime.NamespaceMode_POD, runtime.NamespaceMode_CONTAINER, runtime.NamespaceMode_POD)
	}
	return &runtime.PodSandboxConfig{
		Metadata:     &runtime.PodSandboxMetadata{Name: name, Namespace: "e2e", Uid: "uid-" + name},
		Hostname:     name,
		LogDirectory: filepath.Join(e.logDir, name),
		Labels:       map[string]string{"pod": name},
		Linux: &runtime.LinuxPodSandboxConfig{
			CgroupParent:    e.cgParent,
			SecurityContext: &runtime.LinuxSandboxSecurityContext{NamespaceOptions: ns},
		},
	}
}

// ctrConfig is a container of the busybox image running args, in the
// namespaces of its pod's config.
func (e *rtEnv) ctrConfig(pod *runtime.PodSandboxConfig, name string, args ...string) *runtime.ContainerConfig {
	ns := pod.GetLinux().GetSecurityContext().GetNamespaceOptions()
	return &runtime.ContainerConfig{
		Metadata: &runtime.ContainerMetadata{Name: name},
		Image:    &runtime.ImageSpec{Image: e.image},
		Command:  args,
		LogPath:  name + ".log",
		Labels:   map[string]string{"ctr": name},
		Linux: &runtime.LinuxContainerConfig{
			SecurityContext: &runtime.LinuxContainerSecurityContext{
				NamespaceOptions: &runtime.NamespaceOption{Network: ns.GetNetwork(), Pid: ns.GetPid(), Ipc: ns.GetIpc()},
			},
		},
	}
}

func (e *rtEnv) rt() runtime.RuntimeServiceClient { return e.d.runtime() }

func (e *rtEnv) runPod(t testing.TB, cfg *runtime.PodSandboxConfig) string {
	t.Helper()
	resp, err := e.rt().RunPodSandbox(context.Background(), &runtime.RunPodSandboxRequest{Config: cfg})
	require.NoError(t, err, "run pod %s\n%s", cfg.GetMetadata().GetName(), e.d.Logs())
	return resp.GetPodSandboxId()
}

func (e *rtEnv) create(t testing.TB, podID string, pod *runtime.PodSandboxConfig, cfg *runtime.ContainerConfig) string {
	t.Helper()
	resp, err := e.rt().CreateContainer(context.Background(), &runtime.CreateContainerRequest{
		PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
	require.NoError(t, err, "create container %s\n%s", cfg.GetMetadata().GetName(), e.d.Logs())
	return resp.GetContainerId()
}

func (e *rtEnv) start(t testing.TB, id string) {
	t.Helper()
	_, err := e.rt().StartContainer(context.Background(), &runtime.StartContainerRequest{ContainerId: id})
	require.NoError(t, err, "start container %s\n%s", id, e.d.Logs())
}

// run creates and starts a container.
func (e *rtEnv) run(t testing.TB, podID string, pod *runtime.PodSandboxConfig, name string, args ...string) string {
	t.Helper()
	id := e.create(t, podID, pod, e.ctrConfig(pod, name, args...))
	e.start(t, id)
	return id
}

// execOut runs cmd in container id and returns stdout, stderr, exit code.
func (e *rtEnv) execOut(t testing.TB, id string, cmd ...string) (string, string, int32) {
	t.Helper()
	resp, err := e.rt().ExecSync(context.Background(), &runtime.ExecSyncRequest{ContainerId: id, Cmd: cmd, Timeout: 30})
	require.NoError(t, err, "exec %v in %s\n%s", cmd, id, e.d.Logs())
	return string(resp.GetStdout()), string(resp.GetStderr()), resp.GetExitCode()
}

// mustExec runs cmd, requires exit code 0 and returns its stdout.
func (e *rtEnv) mustExec(t testing.TB, id string, cmd ...string) string {
	t.Helper()
	out, errOut, code := e.execOut(t, id, cmd...)
	require.Zero(t, code, "exec %v in %s: stdout %q stderr %q", cmd, id, out, errOut)
	return out
}

// nsInside is the target of /proc/self/ns/<kind> seen by a process in
// container id (busybox has no readlink: parse `ls -l`).
func (e *rtEnv) nsInside(t testing.TB, id, kind string) string {
	t.Helper()
	out := e.mustExec(t, id, "ls", "-l", "/proc/self/ns/"+kind)
	_, target, ok := strings.Cut(strings.TrimSpace(out), " -> ")
	require.True(t, ok, "ls -l output %q", out)
	require.True(t, strings.HasPrefix(target, kind+":["), "ns link target %q", target)
	return target
}

func (e *rtEnv) ctrStatus(t testing.TB, id string) *runtime.ContainerStatus {
	t.Helper()
	resp, err := e.rt().ContainerStatus(context.Background(), &runtime.ContainerStatusRequest{ContainerId: id})
	require.NoError(t, err, "status of %s", id)
	return resp.GetStatus()
}

// ctrInfo is the part of ContainerStatus's verbose info the tests read.
type ctrInfo struct {
	Pid       int    `json:"pid"`
	ConmonPid int    `json:"conmonPid"`
	Bundle    string `json:"bundle"`
	State     string `json:"state"`
}

func (e *rtEnv) ctrVerbose(t testing.TB, id string) (*runtime.ContainerStatus, ctrInfo) {
	t.Helper()
	resp, err := e.rt().ContainerStatus(context.Background(), &runtime.ContainerStatusRequest{ContainerId: id, Verbose: true})
	require.NoError(t, err, "status of %s", id)
	var info ctrInfo
	require.NoError(t, json.Unmarshal([]byte(resp.GetInfo()["info"]), &info), "verbose info %q", resp.GetInfo())
	return resp.GetStatus(), info
}

// waitState waits up to d for container id to reach state.
func (e *rtEnv) waitState(t testing.TB, id string, state runtime.ContainerState, d time.Duration) *runtime.ContainerStatus {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		st := e.ctrStatus(t, id)
		if st.GetState() == state {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s is %s after %s, want %s\n%s", id, st.GetState(), d, state, e.d.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (e *rtEnv) stopCtr(t testing.TB, id string, timeout int64) {
	t.Helper()
	_, err := e.rt().StopContainer(context.Background(), &runtime.StopContainerRequest{ContainerId: id, Timeout: timeout})
	require.NoError(t, err, "stop %s\n%s", id, e.d.Logs())
}

func (e *rtEnv) podState(t testing.TB, id string) runtime.PodSandboxState {
	t.Helper()
	resp, err := e.rt().PodSandboxStatus(context.Background(), &runtime.PodSandboxStatusRequest{PodSandboxId: id})
	require.NoError(t, err, "status of pod %s", id)
	return resp.GetStatus().GetState()
}

// procStart is field 22 of /proc/<pid>/stat (start time in ticks), or 0
// when the process is gone.
func procStart(pid int) uint64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0
	}
	v, _ := strconv.ParseUint(f[19], 10, 64)
	return v
}

// procInfo is one host process: comm, state and argv.
type procInfo struct {
	pid   int
	comm  string
	state string
	argv  []string
	exe   string
}

func listProcs() []procInfo {
	ents, _ := os.ReadDir("/proc")
	var out []procInfo
	for _, de := range ents {
		pid, err := strconv.Atoi(de.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + de.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		l, r := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if l < 0 || r < l {
			continue
		}
		p := procInfo{pid: pid, comm: s[l+1 : r]}
		if f := strings.Fields(s[r+1:]); len(f) > 0 {
			p.state = f[0]
		}
		cmd, _ := os.ReadFile("/proc/" + de.Name() + "/cmdline")
		p.argv = strings.Split(strings.TrimRight(string(cmd), "\x00"), "\x00")
		p.exe, _ = os.Readlink("/proc/" + de.Name() + "/exe")
		out = append(out, p)
	}
	return out
}

// mountsUnder lists the mount points at or below one of dirs.
func mountsUnder(t testing.TB, dirs ...string) []string {
	t.Helper()
	ms, err := mount.Mounts(func(m mount.Info) bool {
		for _, d := range dirs {
			if m.Under(d) {
				return true
			}
		}
		return false
	})
	require.NoError(t, err)
	var out []string
	for _, m := range ms {
		out = append(out, m.Mountpoint)
	}
	return out
}

// fdCount is the number of open fds of pid.
func fdCount(t testing.TB, pid int) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	require.NoError(t, err)
	return len(ents)
}
