package container

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// TermSize is a terminal size in character cells.
type TermSize struct {
	Width  uint16
	Height uint16
}

// ctlResize is conmon's ctl fifo message for a terminal resize:
// "<type> <height> <width>\n" with WIN_RESIZE_EVENT = 1 (conmon config.h).
const ctlResize = 1

// attachPipe* prefix every packet conmon writes to an attach socket:
// conmon's enum pipe_type {NO_PIPE, STDIN_PIPE, STDOUT_PIPE, STDERR_PIPE}
// (CRI-O internal/oci AttachPipeStdout = 2, AttachPipeStderr = 3).
const (
	attachPipeStdout = 2
	attachPipeStderr = 3
)

// streamDrain bounds the wait for output still buffered after the exec'd
// process (or runc) has exited.
const streamDrain = 2 * time.Second

// Exec runs cmd in the running container id with the container's process
// settings (user, env, capabilities, profiles), streaming its stdio, and
// returns its exit code (128+signal when it was killed). stdin, stdout and
// stderr may be nil. With tty the process gets a terminal: stderr is
// unused, and sizes from resize are applied to it. When ctx ends the
// process is killed and ctx's error is returned. Exec does not return
// before runc, which reaps the exec'd process, has exited.
func (m *Manager) Exec(ctx context.Context, id string, cmd []string, stdin io.Reader, stdout, stderr io.Writer, tty bool, resize <-chan TermSize) (int, error) {
	if len(cmd) == 0 {
		return -1, fmt.Errorf("exec in container %s: empty command: %w", id, errdefs.ErrInvalidArgument)
	}
	c, err := m.get(id)
	if err != nil {
		return -1, err
	}
	rec := c.rec.Load()
	if rec.State != StateRunning {
		return -1, fmt.Errorf("exec in container %s in state %s: %w", rec.ID, rec.State, errdefs.ErrFailedPrecondition)
	}
	b, err := os.ReadFile(filepath.Join(rec.Bundle, "config.json"))
	if err != nil {
		return -1, fmt.Errorf("exec in container %s: read spec: %w", rec.ID, err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(b, &spec); err != nil || spec.Process == nil {
		return -1, fmt.Errorf("exec in container %s: decode spec: %w", rec.ID, errors.Join(err, errdefs.ErrDataLoss))
	}
	p := *spec.Process
	p.Args = cmd
	p.Terminal = tty
	p.ConsoleSize = nil
	// A client that went away shows as a failed write (or, with a tty, a
	// failed stdin): the session is over, so is the process.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	o := streamExecOpts{ID: rec.ID, Dir: rec.Bundle, Process: &p, Stdin: stdin,
		Stdout: cancelOnError(stdout, cancel), Stderr: cancelOnError(stderr, cancel), Resize: resize, Cancel: cancel}
	if tty {
		return c.rt.execTTY(ctx, o)
	}
	return c.rt.execPipes(ctx, o)
}

// errSessionGone is the cause of an exec cancelled because its client went
// away.
var errSessionGone = errors.New("exec session ended")

// cancelOnError wraps w so that a failed write cancels the exec.
func cancelOnError(w io.Writer, cancel context.CancelCauseFunc) io.Writer {
	if w == nil {
		return nil
	}
	return writerFunc(func(p []byte) (int, error) {
		n, err := w.Write(p)
		if err != nil {
			cancel(fmt.Errorf("%w: write output: %w", errSessionGone, err))
		}
		return n, err
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// streamExecOpts is one streaming exec.
type streamExecOpts struct {
	ID      string
	Dir     string
	Process *specs.Process
	Stdin   io.Reader
	Stdout  io.Writer
	Stderr  io.Writer
	Resize  <-chan TermSize
	Cancel  context.CancelCauseFunc // ends the exec (tty: when stdin fails)
}

// writeProcessSpec writes p to a temporary file in dir and returns its path
// and a pid file path next to it.
func writeProcessSpec(dir string, p *specs.Process) (specPath, pidPath string, err error) {
	f, err := os.CreateTemp(dir, "exec-*.json")
	if err != nil {
		return "", "", fmt.Errorf("write exec process spec: %w", err)
	}
	specPath = f.Name()
	if err := errors.Join(json.NewEncoder(f).Encode(p), f.Close()); err != nil {
		os.Remove(specPath)
		return "", "", fmt.Errorf("write exec process spec: %w", err)
	}
	return specPath, strings.TrimSuffix(specPath, ".json") + ".pid", nil
}

// execPipes runs `runc exec` in the foreground with the streams on pipes.
// os/exec copies the streams; its stdin copier ends when stdin reaches EOF
// or fails (the session's connection closes), and Wait is bounded by
// WaitDelay once runc has exited.
func (r Runtime) execPipes(ctx context.Context, o streamExecOpts) (int, error) {
	specPath, pidPath, err := writeProcessSpec(o.Dir, o.Process)
	if err != nil {
		return -1, err
	}
	defer os.Remove(specPath)
	defer os.Remove(pidPath)
	args := append(r.globalArgs(), "exec", "--process", specPath, "--pid-file", pidPath, o.ID)
	cmd := exec.Command(r.Path, args...)
	if o.Stdin != nil {
		cmd.Stdin = o.Stdin
	}
	if o.Stdout != nil {
		cmd.Stdout = o.Stdout
	}
	if o.Stderr != nil {
		cmd.Stderr = o.Stderr
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = streamDrain
	if err := cmd.Start(); err != nil {
		return -1, fmt.Errorf("start %s exec: %w", filepath.Base(r.Path), err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	return r.waitExec(ctx, o.ID, cmd.Process.Pid, pidPath, done)
}

// waitExec waits for a foreground `runc exec` (pid runcPid) and turns its
// wait result into an exit code; when ctx ends first it kills the exec.
func (r Runtime) waitExec(ctx context.Context, id string, runcPid int, pidPath string, done <-chan error) (int, error) {
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = killExec(runcPid, pidPath, done)
		if cause := context.Cause(ctx); errors.Is(cause, errSessionGone) {
			return -1, fmt.Errorf("exec in %s: %w", id, cause)
		}
		return -1, fmt.Errorf("exec in %s: %w", id, ctx.Err())
	}
	if err != nil {
		if code, ok := processExitCode(err); ok {
			return code, nil
		}
		return -1, fmt.Errorf("%s exec: %w", filepath.Base(r.Path), err)
	}
	return 0, nil
}

// execTTY runs `runc exec --tty` in the foreground with a pseudo-terminal
// of crid's as runc's controlling terminal. runc 1.1 only hands the
// container's pty master to --console-socket when it detaches (-d), which
// would orphan the process from crid and lose its exit code; in the
// foreground runc instead proxies between its own terminal (ours) and the
// container's, puts ours in raw mode, and copies our window size to the
// container's terminal at start and on every SIGWINCH, which the kernel
// sends runc's process group when we resize our master.
// initialSizeWait bounds how long a tty exec waits for the client's first
// terminal size before starting the process without one.
const initialSizeWait = time.Second

func (r Runtime) execTTY(ctx context.Context, o streamExecOpts) (int, error) {
	master, slave, err := openPTY()
	if err != nil {
		return -1, fmt.Errorf("exec in %s: %w", o.ID, err)
	}
	defer master.Close()
	slaveOpen := true
	defer func() {
		if slaveOpen {
			slave.Close()
		}
	}()
	// The process must start with the client's terminal size, or it may
	// see a 0x0 terminal (busybox's `stty size` then fails): runc copies
	// our size to the container's terminal only after the process started.
	// The size goes into the process spec (consoleSize, which runc sets
	// before the process runs) and on our terminal. A client with a resize
	// stream sends its size first thing, but it can arrive after the exec
	// request: wait for it, briefly.
	if o.Resize != nil {
		select {
		case sz, ok := <-o.Resize:
			if ok {
				setWinsize(master, sz)
				if sz.Width > 0 && sz.Height > 0 {
					p := *o.Process
					p.ConsoleSize = &specs.Box{Height: uint(sz.Height), Width: uint(sz.Width)}
					o.Process = &p
				}
			} else {
				o.Resize = nil
			}
		case <-time.After(initialSizeWait):
		case <-ctx.Done():
		}
	}
	specPath, pidPath, err := writeProcessSpec(o.Dir, o.Process)
	if err != nil {
		return -1, err
	}
	defer os.Remove(specPath)
	defer os.Remove(pidPath)
	args := append(r.globalArgs(), "exec", "--tty", "--process", specPath, "--pid-file", pidPath, o.ID)
	cmd := exec.Command(r.Path, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		return -1, fmt.Errorf("start %s exec: %w", filepath.Base(r.Path), err)
	}
	slave.Close() // runc holds it now: the master reads EIO once runc exits
	slaveOpen = false
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(stop)
	outDone := make(chan struct{})
	wg.Go(func() {
		defer close(outDone)
		if o.Stdout != nil {
			_, _ = io.Copy(o.Stdout, master)
		} else {
			_, _ = io.Copy(io.Discard, master)
		}
	})
	wg.Go(func() { resizeLoop(o.Resize, stop, func(sz TermSize) { setWinsize(master, sz) }) })
	if o.Stdin != nil {
		// Not in wg: it may sit in stdin.Read until the session's
		// connection closes, which its caller does after Exec returns;
		// its writes fail once master is closed.
		go func() {
			_, err := io.Copy(master, o.Stdin)
			if err != nil {
				o.Cancel(fmt.Errorf("%w: read stdin: %w", errSessionGone, err))
				return
			}
			// The end of input on a terminal is its EOF character.
			_, _ = master.Write([]byte{4})
		}()
	}
	code, err := r.waitExec(ctx, o.ID, cmd.Process.Pid, pidPath, done)
	select { // runc has exited: let the rest of the output through
	case <-outDone:
	case <-time.After(streamDrain):
	}
	master.Close() // ends the output copy if it is still running
	return code, err
}

// resizeLoop calls apply for every size from resize until resize is closed
// or stop is closed.
func resizeLoop(resize <-chan TermSize, stop <-chan struct{}, apply func(TermSize)) {
	if resize == nil {
		return
	}
	for {
		select {
		case sz, ok := <-resize:
			if !ok {
				return
			}
			apply(sz)
		case <-stop:
			return
		}
	}
}

// setWinsize sets the terminal size of f. It goes through SyscallConn, not
// Fd: the resize loop may still run while Exec closes the master (Control
// holds the descriptor open or reports it closed), and Fd would also put
// the master in blocking mode, so that Close could no longer end a Read.
func setWinsize(f *os.File, sz TermSize) {
	if sz.Width == 0 || sz.Height == 0 {
		return
	}
	sc, err := f.SyscallConn()
	if err != nil {
		return
	}
	_ = sc.Control(func(fd uintptr) {
		_ = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: sz.Height, Col: sz.Width})
	})
}

// openPTY opens a new pseudo-terminal pair.
func openPTY() (master, slave *os.File, err error) {
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open /dev/ptmx: %w", err)
	}
	// Non-blocking, so that os.File polls it and Close interrupts a Read.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, nil, fmt.Errorf("set pty non-blocking: %w", err)
	}
	master = os.NewFile(uintptr(fd), "/dev/ptmx")
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("unlock pty: %w", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("get pty number: %w", err)
	}
	name := "/dev/pts/" + strconv.Itoa(n)
	slave, err = os.OpenFile(name, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("open %s: %w", name, err)
	}
	return master, slave, nil
}

// Attach connects stdin, stdout and stderr (each may be nil) to the running
// container id's stdio as its monitor (conmon) holds it, until the
// container exits, ctx ends, or the client detaches: stdin reaching EOF
// detaches, except for a stdin_once container, whose stdin conmon then
// closes and whose remaining output is still delivered. Attaching and
// detaching leave the container and its log alone.
func (m *Manager) Attach(ctx context.Context, id string, stdin io.Reader, stdout, stderr io.Writer, tty bool, resize <-chan TermSize) error {
	c, err := m.get(id)
	if err != nil {
		return err
	}
	rec := c.rec.Load()
	if rec.State != StateRunning {
		return fmt.Errorf("attach to container %s in state %s: %w", rec.ID, rec.State, errdefs.ErrFailedPrecondition)
	}
	if stdin != nil && !rec.Stdin {
		stdin = nil // kubelet sends stdin only to containers that have it
	}
	conn, err := dialAttach(rec.Bundle)
	if err != nil {
		return fmt.Errorf("attach to container %s: %w", rec.ID, err)
	}
	var closeOnce sync.Once
	closeConn := func() { closeOnce.Do(func() { conn.Close() }) }
	defer closeConn()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer closeConn()
	defer close(stop)

	outDone := make(chan error, 1)
	wg.Go(func() { outDone <- copyAttachOutput(conn, stdout, stderr) })
	if rec.TTY {
		wg.Go(func() {
			resizeLoop(resize, stop, func(sz TermSize) { _ = writeCtl(rec.Bundle, ctlResize, sz) })
		})
	}
	inDone := make(chan error, 1)
	if stdin != nil {
		// Not in wg: it may sit in stdin.Read until the session's
		// connection closes, which its caller does after Attach returns.
		go func() {
			_, err := io.Copy(conn, stdin)
			if err == nil {
				_ = conn.CloseWrite() // EOF: conmon closes a stdin_once container's stdin
			}
			inDone <- err
		}()
	}
	select {
	case err := <-outDone:
		return err
	case <-inDone:
		if !rec.StdinOnce || (stdout == nil && stderr == nil) {
			return nil // detach
		}
		select {
		case err := <-outDone:
			return err
		case <-ctx.Done():
			return nil
		}
	case <-ctx.Done():
		return nil
	}
}

// dialAttach connects to conmon's attach socket, "attach" in the bundle
// (conmon binds it through the <socket-dir>/<id> symlink to the bundle).
// The path goes through /proc/self/fd so that its length never exceeds
// sun_path.
func dialAttach(bundle string) (*net.UnixConn, error) {
	dir, err := os.OpenFile(bundle, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open bundle: %w", err)
	}
	defer dir.Close()
	addr := &net.UnixAddr{Net: "unixpacket", Name: fmt.Sprintf("/proc/self/fd/%d/attach", dir.Fd())}
	conn, err := net.DialUnix("unixpacket", nil, addr)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ECONNREFUSED) {
			return nil, fmt.Errorf("dial conmon attach socket: %w: %w", err, errdefs.ErrFailedPrecondition)
		}
		return nil, fmt.Errorf("dial conmon attach socket: %w", err)
	}
	return conn, nil
}

// copyAttachOutput demultiplexes conmon's attach packets onto stdout and
// stderr (nil ones drop their data) until conmon closes the socket (the
// container exited) or the socket is closed.
func copyAttachOutput(conn *net.UnixConn, stdout, stderr io.Writer) error {
	buf := make([]byte, 32*1024)
	for {
		n, err := conn.Read(buf)
		if n > 0 {
			var w io.Writer
			switch buf[0] {
			case attachPipeStdout:
				w = stdout
			case attachPipeStderr:
				w = stderr
			}
			if w != nil && n > 1 {
				if _, werr := w.Write(buf[1:n]); werr != nil {
					return fmt.Errorf("write attach output: %w", werr)
				}
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("read attach socket: %w", err)
		}
		if n == 0 {
			return nil // SOCK_SEQPACKET: a zero-length read is the peer's close
		}
	}
}

// writeCtl writes one message to conmon's ctl fifo in the bundle.
func writeCtl(bundle string, typ int, sz TermSize) error {
	f, err := os.OpenFile(filepath.Join(bundle, "ctl"), os.O_WRONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("open conmon ctl fifo: %w", err)
	}
	defer f.Close()
	if _, err := fmt.Fprintf(f, "%d %d %d\n", typ, sz.Height, sz.Width); err != nil {
		return fmt.Errorf("write conmon ctl fifo: %w", err)
	}
	return nil
}
