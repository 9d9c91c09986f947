//go:build e2e

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// clusterProc is a long-running process of a test (etcd, the control
// plane, kubelet), its output in a log file.
type clusterProc struct {
	name    string
	logFile string
	cmd     *exec.Cmd
	done    chan error
}

// startClusterProc starts bin with args, its output in dir/name.log, and
// stops it when the test ends.
func startClusterProc(t *testing.T, dir, name, bin string, args ...string) *clusterProc {
	t.Helper()
	p := &clusterProc{name: name, logFile: filepath.Join(dir, name+".log")}
	logf, err := os.Create(p.logFile)
	require.NoError(t, err)
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(t, cmd.Start())
	p.cmd = cmd
	p.done = make(chan error, 1)
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() { p.stop(t) })
	t.Logf("%s (pid %d): log %s", name, cmd.Process.Pid, p.logFile)
	return p
}

// exited is the process's exit error when it has exited.
func (p *clusterProc) exited() (error, bool) {
	select {
	case err := <-p.done:
		p.done <- err
		return err, true
	default:
		return nil, false
	}
}

func (p *clusterProc) stop(t *testing.T) {
	t.Helper()
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Errorf("%s did not exit within 30s of SIGTERM\n%s", p.name, p.logTail(30))
	}
	p.cmd = nil
}

func (p *clusterProc) logTail(n int) string {
	b, _ := os.ReadFile(p.logFile)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return p.name + " log (" + p.logFile + "), last lines:\n" + strings.Join(lines, "\n")
}
