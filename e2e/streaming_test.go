//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// crictlCmd is crictl against d, not yet started.
func (d *daemon) crictlCmd(ctx context.Context, args ...string) *exec.Cmd {
	full := append([]string{"--runtime-endpoint", "unix://" + d.sock, "--image-endpoint", "unix://" + d.sock,
		"--timeout", "60s"}, args...)
	cmd := exec.CommandContext(ctx, crictlBin, full...)
	cmd.Env = append(os.Environ(), "CRI_CONFIG_FILE=/dev/null")
	return cmd
}

func (d *daemon) pid() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cmd.Process.Pid
}

// procThreads is the Threads line of /proc/<pid>/status.
func procThreads(t testing.TB, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(t, err)
	m := regexp.MustCompile(`(?m)^Threads:\s+(\d+)$`).FindSubmatch(b)
	require.NotNil(t, m)
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

func TestStreamingURLs(t *testing.T) {
	e := newRuntimeEnv(t)
	pod := e.podConfig("urls", nil)
	podID := e.runPod(t, pod)
	id := e.run(t, podID, pod, "c", "sleep", "1000")
	ctx := context.Background()

	resp, err := e.rt().Exec(ctx, &runtime.ExecRequest{ContainerId: id, Cmd: []string{"true"}, Stdout: true})
	require.NoError(t, err)
	u, err := url.Parse(resp.GetUrl())
	require.NoError(t, err)
	host, _, err := net.SplitHostPort(u.Host)
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1", host, "the stream server is on loopback by default")

	_, err = e.rt().Exec(ctx, &runtime.ExecRequest{ContainerId: id, Cmd: []string{"true"}, Tty: true, Stderr: true})
	assert.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
	_, err = e.rt().Attach(ctx, &runtime.AttachRequest{ContainerId: id, Tty: true, Stdout: true, Stderr: true})
	assert.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
	_, err = e.rt().Exec(ctx, &runtime.ExecRequest{ContainerId: "nope", Cmd: []string{"true"}, Stdout: true})
	assert.Equal(t, codes.NotFound, status.Code(err), "%v", err)
	_, err = e.rt().PortForward(ctx, &runtime.PortForwardRequest{PodSandboxId: "nope", Port: []int32{80}})
	assert.Equal(t, codes.NotFound, status.Code(err), "%v", err)

	e.stopCtr(t, id, 0)
	_, err = e.rt().Exec(ctx, &runtime.ExecRequest{ContainerId: id, Cmd: []string{"true"}, Stdout: true})
	assert.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
	_, err = e.rt().Attach(ctx, &runtime.AttachRequest{ContainerId: id, Stdout: true})
	assert.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
}

// streamTransports are crictl's --transport values: SPDY, served by
// cri-streaming, and WebSocket, which crictl (client-go) speaks as
// v5.channel.k8s.io for exec and attach and as SPDY tunnelled in WebSocket
// for port-forward, both served by crid itself.
var streamTransports = []string{"spdy", "websocket"}

func TestStreamingExec(t *testing.T) {
	e := newRuntimeEnv(t)
	pod := e.podConfig("exec", nil)
	podID := e.runPod(t, pod)
	id := e.run(t, podID, pod, "c", "sleep", "1000")
	for _, transport := range streamTransports {
		t.Run(transport, func(t *testing.T) { testStreamingExec(t, e, id, transport) })
	}
}

func testStreamingExec(t *testing.T, e *rtEnv, id, transport string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// stdin piped through, its end reaching the process as EOF (over
	// WebSocket: v5's CLOSE signal), output back.
	cmd := e.d.crictlCmd(ctx, "exec", "--transport", transport, "-i", id, "sed", "s/^/in:/")
	cmd.Stdin = strings.NewReader("one\ntwo\n")
	out, err := cmd.Output()
	require.NoError(t, err, "%s", e.d.Logs())
	assert.Equal(t, "in:one\nin:two\n", string(out))

	// Exit codes.
	for _, code := range []int{0, 1, 137} {
		script := fmt.Sprintf("exit %d", code)
		if code == 137 {
			script = "kill -9 $$"
		}
		cmd := e.d.crictlCmd(ctx, "exec", "--transport", transport, id, "sh", "-c", "echo x; "+script)
		out, err := cmd.Output()
		assert.Equal(t, "x\n", string(out))
		if code == 0 {
			assert.NoError(t, err)
			continue
		}
		var ee *exec.ExitError
		require.ErrorAs(t, err, &ee, "exit %d", code)
		assert.Contains(t, string(ee.Stderr), fmt.Sprintf("exit code %d", code))
	}

	// A terminal, with crictl on a pty of ours: the process sees a tty of
	// our size, and a resize of ours reaches it (crictl's SIGWINCH →
	// resize stream → crid → runc's SIGWINCH).
	master, slave := openPTY(t)
	defer master.Close()
	require.NoError(t, unix.IoctlSetWinsize(int(master.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 30, Col: 100}))
	cmd = e.d.crictlCmd(ctx, "exec", "--transport", transport, "-it", id, "sh", "-c", "test -t 0 && echo is-a-tty; stty size; read x; stty size")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	require.NoError(t, cmd.Start())
	slave.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	term := &lockedBuffer{}
	go func() { _, _ = io.Copy(term, master) }()
	require.Eventually(t, func() bool { return strings.Contains(term.String(), "30 100") }, 20*time.Second, 50*time.Millisecond,
		"terminal: %q", term)
	assert.Contains(t, term.String(), "is-a-tty")
	require.NoError(t, unix.IoctlSetWinsize(int(master.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 40, Col: 120}))
	time.Sleep(500 * time.Millisecond)
	_, err = master.Write([]byte("go\r"))
	require.NoError(t, err)
	select {
	case err := <-done:
		require.NoError(t, err, "terminal: %q", term)
	case <-time.After(20 * time.Second):
		t.Fatalf("crictl exec -it did not end; terminal: %q", term)
	}
	assert.Contains(t, term.String(), "40 120")

	// A client that goes away mid-session ends the session: its process
	// and runc are gone. Without a terminal nothing but the connection
	// tells crid: the process neither reads nor writes. (crictl is one of
	// ownProcs: wait for one more, the exec.)
	for _, args := range [][]string{{"-it", id, "cat"}, {id, "sleep", "1000"}} {
		procs0 := e.ownProcs()
		master, slave = openPTY(t)
		defer master.Close()
		cmd = e.d.crictlCmd(ctx, append([]string{"exec", "--transport", transport}, args...)...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
		require.NoError(t, cmd.Start())
		slave.Close()
		go func() { _, _ = io.Copy(io.Discard, master) }()
		require.Eventually(t, func() bool { return len(e.ownProcs()) > len(procs0)+1 }, 10*time.Second, 50*time.Millisecond,
			"%v: %v (before: %v)", args, e.ownProcs(), procs0)
		time.Sleep(500 * time.Millisecond)
		require.NoError(t, cmd.Process.Kill())
		_ = cmd.Wait()
		require.Eventually(t, func() bool { return len(e.ownProcs()) == len(procs0) }, 20*time.Second, 100*time.Millisecond,
			"%v: left behind: %v (before: %v)", args, e.ownProcs(), procs0)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// openPTY opens a pseudo-terminal pair.
func openPTY(t testing.TB) (master, slave *os.File) {
	t.Helper()
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	require.NoError(t, err)
	master = os.NewFile(uintptr(fd), "/dev/ptmx")
	require.NoError(t, unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0))
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	require.NoError(t, err)
	slave, err = os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	require.NoError(t, err)
	return master, slave
}

func TestStreamingAttach(t *testing.T) {
	e := newRuntimeEnv(t)
	pod := e.podConfig("attach", nil)
	podID := e.runPod(t, pod)
	cfg := e.ctrConfig(pod, "echo", "sh", "-c", "while read l; do echo got:$l; done")
	cfg.Stdin = true
	id := e.create(t, podID, pod, cfg)
	e.start(t, id)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var words []string
	for _, transport := range streamTransports {
		for _, word := range []string{"first-" + transport, "second-" + transport} {
			words = append(words, word)
			attachEcho(ctx, t, e, id, transport, word)
		}
	}
	st := e.ctrStatus(t, id)
	assert.Equal(t, runtime.ContainerState_CONTAINER_RUNNING, st.GetState(), "detaching leaves the container running")
	logs, err := os.ReadFile(st.GetLogPath())
	require.NoError(t, err)
	for _, word := range words {
		assert.Contains(t, string(logs), "stdout F got:"+word)
	}
}

// attachEcho attaches to id, a container echoing its input as got:<line>,
// with crictl over transport until word comes back, then detaches by
// closing stdin (over WebSocket: v5's CLOSE signal).
func attachEcho(ctx context.Context, t *testing.T, e *rtEnv, id, transport, word string) {
	t.Helper()
	cmd := e.d.crictlCmd(ctx, "attach", "--transport", transport, "-i", id)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	lines := make(chan string, 10)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	// Attach is asynchronous: repeat until an echo comes back. An echo
	// of an earlier session's repeat may come first.
	got := false
	for i := 0; i < 50 && !got; i++ {
		_, err = io.WriteString(stdin, word+"\n")
		require.NoError(t, err)
		select {
		case l := <-lines:
			assert.True(t, strings.HasPrefix(l, "got:"), "%q", l)
			got = l == "got:"+word
		case <-time.After(200 * time.Millisecond):
		}
	}
	require.True(t, got, "no echo of %s through attach over %s\n%s", word, transport, e.d.Logs())
	stdin.Close() // detach
	require.NoError(t, cmd.Wait(), transport)
}

func TestStreamingPortForward(t *testing.T) {
	e := newRuntimeEnv(t)
	for _, hostNet := range []bool{false, true} {
		t.Run(fmt.Sprintf("hostNetwork=%v", hostNet), func(t *testing.T) {
			name, port := "pf", 8080
			var ns *runtime.NamespaceOption
			if hostNet {
				name = "pfhost"
				l, err := net.Listen("tcp4", "127.0.0.1:0")
				require.NoError(t, err)
				port = l.Addr().(*net.TCPAddr).Port
				l.Close()
				ns = nsOpts(runtime.NamespaceMode_NODE, runtime.NamespaceMode_CONTAINER, runtime.NamespaceMode_POD)
			}
			pod := e.podConfig(name, ns)
			podID := e.runPod(t, pod)
			e.run(t, podID, pod, "web", "sh", "-c",
				fmt.Sprintf("mkdir -p /tmp/w && echo hello-%s > /tmp/w/index.html && exec httpd -f -p 127.0.0.1:%d -h /tmp/w", name, port))

			for _, transport := range streamTransports {
				t.Run(transport, func(t *testing.T) { portForwardGet(t, e, podID, port, "hello-"+name, transport) })
			}
		})
	}
}

// portForwardGet forwards a local port to port in pod podID with crictl
// over transport (over WebSocket: SPDY tunnelled in it) and checks that an
// HTTP GET through it answers want.
func portForwardGet(t *testing.T, e *rtEnv, podID string, port int, want, transport string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := e.d.crictlCmd(ctx, "port-forward", "--transport", transport, podID, fmt.Sprintf("0:%d", port))
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	sc := bufio.NewScanner(stdout)
	re := regexp.MustCompile(`Forwarding from 127\.0\.0\.1:(\d+)`)
	var local string
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			local = "127.0.0.1:" + m[1]
			break
		}
	}
	require.NotEmpty(t, local, "crictl port-forward printed no address")
	go func() { _, _ = io.Copy(io.Discard, stdout) }()

	var body string
	require.Eventually(t, func() bool {
		c, err := net.DialTimeout("tcp4", local, time.Second)
		if err != nil {
			return false
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.WriteString(c, "GET / HTTP/1.0\r\n\r\n")
		b, _ := io.ReadAll(c)
		body = string(b)
		return strings.Contains(body, want)
	}, 30*time.Second, 200*time.Millisecond, "last response %q\n%s", body, e.d.Logs())
}

// TestStreamingNoLeaks runs 200 exec sessions in a row, over SPDY and
// WebSocket, and checks that crid's threads and fds and the host's
// processes are back where they were.
func TestStreamingNoLeaks(t *testing.T) {
	e := newRuntimeEnv(t)
	pod := e.podConfig("leak", nil)
	podID := e.runPod(t, pod)
	id := e.run(t, podID, pod, "c", "sleep", "1000")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pid := e.d.pid()
	session := func(i int) {
		transport := streamTransports[i/2%2] // each kind of session over each transport
		args := []string{"exec", "--transport", transport, id, "echo", strconv.Itoa(i)}
		if i%2 == 1 {
			args = []string{"exec", "--transport", transport, "-i", id, "cat"}
		}
		cmd := e.d.crictlCmd(ctx, args...)
		cmd.Stdin = strings.NewReader(strconv.Itoa(i) + "\n")
		out, err := cmd.Output()
		require.NoError(t, err)
		require.Equal(t, strconv.Itoa(i)+"\n", string(out))
	}
	for i := range 10 { // warm up the runtime's thread and connection pools
		session(i)
	}
	time.Sleep(time.Second)
	threads0, fds0 := procThreads(t, pid), fdCount(t, pid)
	procs0 := e.ownProcs()
	for i := range 200 {
		session(i)
	}
	var threads, fds, procs int
	require.Eventually(t, func() bool {
		threads, fds, procs = procThreads(t, pid), fdCount(t, pid), len(e.ownProcs())
		return threads <= threads0+2 && fds <= fds0 && procs <= len(procs0)
	}, 15*time.Second, 250*time.Millisecond)
	t.Logf("threads %d→%d fds %d→%d processes %d→%d", threads0, threads, fds0, fds, len(procs0), procs)
	assert.ElementsMatch(t, procs0, e.ownProcs(), "processes of this crid and its pods")
}

// ownProcs lists the processes of this test's crid (runc, conmon: their
// argv names its directory) and of its pods (in its cgroup parent).
func (e *rtEnv) ownProcs() []string {
	var out []string
	for _, p := range listProcs() {
		cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", p.pid))
		if strings.Contains(strings.Join(p.argv, " "), e.d.dir) || strings.Contains(string(cg), e.cgParent) {
			out = append(out, fmt.Sprintf("%d %s", p.pid, strings.Join(p.argv, " ")))
		}
	}
	return out
}
