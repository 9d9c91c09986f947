package imagestore

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"syscall"
)

// nobody is the user an external decompressor runs as: it parses hostile
// bytes and needs no privilege to turn stdin into stdout.
const nobody = 65534

// externalDecompressor inflates through a child process: the compressed
// stream goes to its stdin, the caller reads its stdout. The child reads
// all of its stdin, so the source is consumed (and verified) when Read
// returns io.EOF.
type externalDecompressor struct {
	cmd    *exec.Cmd
	stdout io.ReadCloser
	stderr bytes.Buffer
	done   bool
}

func newExternalDecompressor(argv []string, src io.Reader) (*externalDecompressor, error) {
	d := &externalDecompressor{cmd: exec.Command(argv[0], argv[1:]...)}
	d.cmd.Stdin = src
	d.cmd.Stderr = &limitedBuffer{buf: &d.stderr, max: 4096}
	// No Pdeathsig: Linux sends it when the forking *thread* exits, and Go
	// ends a thread whenever a goroutine locked to it (the sandbox's
	// namespace threads) returns, which would kill a healthy inflater. The
	// child ends on its own when its stdin closes, and crid's death closes it.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: nobody, Gid: nobody, NoSetGroups: true},
	}
	stdout, err := d.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	d.stdout = stdout
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	return d, nil
}

// Read returns the inflated stream; at its end it waits for the child and
// turns a failed exit into an error.
func (d *externalDecompressor) Read(p []byte) (int, error) {
	n, err := d.stdout.Read(p)
	if err == io.EOF && !d.done {
		d.done = true
		if werr := d.cmd.Wait(); werr != nil {
			return n, d.exitError(werr)
		}
	}
	return n, err
}

func (d *externalDecompressor) exitError(err error) error {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return fmt.Errorf("%s: %s: %s", d.cmd.Path, ee, bytes.TrimSpace(d.stderr.Bytes()))
	}
	return err
}

// Close stops the child if it still runs and reaps it.
func (d *externalDecompressor) Close() error {
	if d.done {
		return nil
	}
	d.done = true
	_ = d.cmd.Process.Kill()
	d.stdout.Close()
	_ = d.cmd.Wait()
	return nil
}

// limitedBuffer keeps the first max bytes written to it.
type limitedBuffer struct {
	buf *bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - l.buf.Len(); room > 0 {
		l.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// startsWithStoredBlock peeks at a gzip stream and reports whether its first
// deflate block is stored (uncompressed): compressors emit those for data
// that does not compress. Such data is copied, not inflated, so the
// in-process reader handles it at memory speed and piping it through a
// child process would only cost CPU.
func startsWithStoredBlock(r *bufio.Reader) bool {
	b, _ := r.Peek(512)
	if len(b) < 11 || b[0] != 0x1f || b[1] != 0x8b || b[2] != 8 {
		return false // not gzip: let the decompressor report it
	}
	const (
		fhcrc    = 1 << 1
		fextra   = 1 << 2
		fname    = 1 << 3
		fcomment = 1 << 4
	)
	flg, i := b[3], 10
	if flg&fextra != 0 {
		if len(b) < i+2 {
			return false
		}
		i += 2 + (int(b[i]) | int(b[i+1])<<8)
	}
	for _, f := range []byte{fname, fcomment} {
		if flg&f != 0 {
			n := bytes.IndexByte(b[min(i, len(b)):], 0)
			if n < 0 {
				return false
			}
			i += n + 1
		}
	}
	if flg&fhcrc != 0 {
		i += 2
	}
	if i >= len(b) {
		return false
	}
	return (b[i]>>1)&3 == 0 // BTYPE 00: stored
}
