package container

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// syncBuffer is a bytes.Buffer safe for a writer and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (e *env) addApplets(names ...string) {
	for _, a := range names {
		_ = os.Symlink("busybox", filepath.Join(e.rootfs, "bin", a))
	}
}

func TestExecStream(t *testing.T) {
	e := newEnv(t)
	e.addApplets("stty")
	m := e.manager()
	defer m.Close()
	ctx := context.Background()
	cfg := e.config("exec-stream", "sleep", "1000")
	cfg.Spec.Mounts = append(cfg.Spec.Mounts, specs.Mount{
		Destination: "/dev/pts", Type: "devpts", Source: "devpts",
		Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"},
	})
	rec, err := m.Create(ctx, cfg)
	require.NoError(t, err)
	require.NoError(t, m.Start(ctx, rec.ID))
	defer func() { require.NoError(t, m.Remove(ctx, rec.ID)) }()

	t.Run("exit codes and streams", func(t *testing.T) {
		for _, tc := range []struct {
			script         string
			code           int
			stdout, stderr string
		}{
			{"echo out; echo err >&2", 0, "out\n", "err\n"},
			{"echo o; exit 1", 1, "o\n", ""},
			{"kill -9 $$", 137, "", ""},
		} {
			var out, errOut bytes.Buffer
			code, err := m.Exec(ctx, rec.ID, []string{"sh", "-c", tc.script}, nil, &out, &errOut, false, nil)
			require.NoError(t, err, tc.script)
			assert.Equal(t, tc.code, code, tc.script)
			assert.Equal(t, tc.stdout, out.String(), tc.script)
			assert.Equal(t, tc.stderr, errOut.String(), tc.script)
		}
	})

	t.Run("stdin piped", func(t *testing.T) {
		var out bytes.Buffer
		code, err := m.Exec(ctx, rec.ID, []string{"tr", "a-z", "A-Z"}, strings.NewReader("hello\nworld\n"), &out, nil, false, nil)
		require.NoError(t, err)
		assert.Equal(t, 0, code)
		assert.Equal(t, "HELLO\nWORLD\n", out.String())
	})

	t.Run("tty resize", func(t *testing.T) {
		type result struct {
			code int
			err  error
		}
		// start runs the tty exec and waits for its first output. Known
		// bug, left open in the issue notes: about one run in six under
		// CI, no output at all ever arrives from a tty exec. That attempt is
		// cancelled (which must end it) and the exec is tried once more;
		// the resize assertions below are made on the attempt that ran.
		start := func(wait time.Duration) (chan<- TermSize, *io.PipeWriter, *syncBuffer, <-chan result, context.CancelFunc, bool) {
			resize := make(chan TermSize, 1)
			resize <- TermSize{Width: 100, Height: 30}
			inR, inW := io.Pipe()
			out := &syncBuffer{}
			res := make(chan result, 1)
			cctx, cancel := context.WithCancel(ctx)
			go func() {
				code, err := m.Exec(cctx, rec.ID, []string{"sh", "-c", "stty size; read x; stty size; exit 3"}, inR, out, nil, true, resize)
				res <- result{code, err}
			}()
			deadline := time.Now().Add(wait)
			for time.Now().Before(deadline) {
				if strings.Contains(out.String(), "30 100") {
					return resize, inW, out, res, cancel, true
				}
				time.Sleep(20 * time.Millisecond)
			}
			return resize, inW, out, res, cancel, false
		}
		resize, inW, out, res, cancel, ok := start(15 * time.Second)
		if !ok {
			t.Logf("tty exec gave no output in 15s (%q); retrying once", out.String())
			cancel()
			inW.Close()
			select {
			case <-res:
			case <-time.After(10 * time.Second):
				t.Fatal("a cancelled tty exec did not end")
			}
			resize, inW, out, res, cancel, ok = start(30 * time.Second)
		}
		defer cancel()
		defer inW.Close()
		require.True(t, ok, "first size: %q", out.String())
		resize <- TermSize{Width: 120, Height: 40}
		time.Sleep(300 * time.Millisecond) // let runc copy the size over on SIGWINCH
		_, err := inW.Write([]byte("go\r"))
		require.NoError(t, err)
		select {
		case r := <-res:
			require.NoError(t, r.err)
			assert.Equal(t, 3, r.code)
		case <-time.After(10 * time.Second):
			t.Fatalf("tty exec did not end; output %q", out.String())
		}
		assert.Contains(t, out.String(), "40 120")
	})

	t.Run("ctx kills", func(t *testing.T) {
		ticks := bootTicks(t)
		cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		_, err := m.Exec(cctx, rec.ID, []string{"sleep", "102"}, nil, io.Discard, io.Discard, false, nil)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Empty(t, sleepsSince(t, ticks, "102"))
		cctx, cancel = context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		_, err = m.Exec(cctx, rec.ID, []string{"sleep", "103"}, nil, io.Discard, nil, true, nil)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Empty(t, sleepsSince(t, ticks, "103"))
	})

	_, err = m.Exec(ctx, "nope", []string{"true"}, nil, nil, nil, false, nil)
	assert.True(t, errdefs.IsNotFound(err), "%v", err)
}

func TestAttach(t *testing.T) {
	e := newEnv(t)
	m := e.manager()
	defer m.Close()
	ctx := context.Background()
	cfg := e.config("attach", "sh", "-c", "while read l; do echo got:$l; done")
	cfg.Stdin = true
	rec, err := m.Create(ctx, cfg)
	require.NoError(t, err)
	require.NoError(t, m.Start(ctx, rec.ID))
	defer func() { require.NoError(t, m.Remove(ctx, rec.ID)) }()

	session := func(lines ...string) {
		inR, inW := io.Pipe()
		outR, outW := io.Pipe()
		done := make(chan error, 1)
		go func() { done <- m.Attach(ctx, rec.ID, inR, outW, io.Discard, false, nil) }()
		sc := bufio.NewScanner(outR)
		for _, l := range lines {
			_, err := inW.Write([]byte(l + "\n"))
			require.NoError(t, err)
			require.True(t, sc.Scan(), "read echo of %q", l)
			assert.Equal(t, "got:"+l, sc.Text())
		}
		inW.Close() // detach
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(5 * time.Second):
			t.Fatal("attach did not end on detach")
		}
		outR.Close()
	}
	session("one", "two")
	session("three") // attaching again after a detach works

	got, err := m.Get(rec.ID)
	require.NoError(t, err)
	assert.Equal(t, StateRunning, got.State, "detaching leaves the container running")
	assert.Equal(t, []string{"got:one", "got:two", "got:three"}, fullLines(readLog(t, rec.LogPath), "stdout"))

	_, err = m.Get(rec.ID)
	require.NoError(t, err)
	err = m.Attach(ctx, "nope", nil, io.Discard, nil, false, nil)
	assert.True(t, errdefs.IsNotFound(err), "%v", err)
}
