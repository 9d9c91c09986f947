// Command nginx stands in for nginx in crid's critest images. It does what
// critest checks of nginx, and serves HTTP with busybox httpd:
//
//   - It re-executes itself with the process title real nginx gives its
//     master ("nginx: master process nginx -g daemon off;"), so PID 1's
//     /proc/<pid>/cmdline contains "master process" and its name (comm) stays
//     "nginx" for pidof.
//   - The master writes its PID to /var/run/nginx.pid, as nginx does.
//   - It reads the first "listen" and "root" directives of
//     /etc/nginx/conf.d/*.conf (defaults 80 and /usr/share/nginx/html) and
//     runs "httpd -f -p <listen> -h <root>" as its worker.
//   - SIGTERM, SIGINT and SIGQUIT stop the worker and the master (exit 0);
//     a worker that dies takes the master down (exit 1). As PID 1 it reaps
//     the zombies it inherits.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
)

const (
	masterTitle = "nginx: master process "
	pidFile     = "/var/run/nginx.pid"
	confGlob    = "/etc/nginx/conf.d/*.conf"
	httpd       = "/bin/httpd"
)

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "-v" || os.Args[1] == "-V") {
		fmt.Fprintln(os.Stderr, "nginx version: crid test stand-in (busybox httpd)")
		return
	}
	if !strings.HasPrefix(os.Args[0], masterTitle) {
		// Real nginx rewrites its argv in place; re-executing with the
		// title as the only argument gives the same /proc/<pid>/cmdline.
		self, err := os.Executable()
		if err != nil {
			self = "/usr/sbin/nginx"
		}
		title := masterTitle + strings.Join(os.Args, " ")
		err = syscall.Exec(self, []string{title}, os.Environ())
		fmt.Fprintf(os.Stderr, "nginx: re-exec %s: %v\n", self, err)
		os.Exit(1)
	}
	if err := master(); err != nil {
		fmt.Fprintln(os.Stderr, "nginx:", err)
		os.Exit(1)
	}
}

func master() error {
	port, root := config()
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGCHLD)

	if err := os.MkdirAll(filepath.Dir(pidFile), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(pidFile, fmt.Appendf(nil, "%d\n", os.Getpid()), 0o644); err != nil {
		return err
	}
	defer os.Remove(pidFile)

	worker, err := os.StartProcess(httpd, []string{"httpd", "-f", "-p", port, "-h", root},
		&os.ProcAttr{Files: []*os.File{os.Stdin, os.Stdout, os.Stderr}})
	if err != nil {
		return fmt.Errorf("start worker: %w", err)
	}
	for s := range sigs {
		if s != syscall.SIGCHLD {
			_ = worker.Signal(syscall.SIGTERM)
			waitFor(worker.Pid)
			return nil
		}
		if reap(worker.Pid) {
			return errors.New("worker process exited")
		}
	}
	return nil
}

// config returns the first listen port and root directory of the conf.d
// files, or nginx's defaults.
func config() (port, root string) {
	port, root = "80", "/usr/share/nginx/html"
	files, _ := filepath.Glob(confGlob)
	var havePort, haveRoot bool
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(strings.TrimSuffix(strings.TrimSpace(sc.Text()), ";"))
			if len(fields) < 2 {
				continue
			}
			switch {
			case fields[0] == "listen" && !havePort:
				port, havePort = fields[1], true
			case fields[0] == "root" && !haveRoot:
				root, haveRoot = fields[1], true
			}
		}
		f.Close()
	}
	return port, root
}

// reap collects exited children without blocking and reports whether pid
// was one of them.
func reap(pid int) bool {
	found := false
	for {
		var ws syscall.WaitStatus
		p, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if p <= 0 || err != nil {
			return found
		}
		found = found || p == pid
	}
}

// waitFor blocks until pid has exited, reaping any other child on the way.
func waitFor(pid int) {
	for {
		var ws syscall.WaitStatus
		p, err := syscall.Wait4(-1, &ws, 0, nil)
		if p == pid || errors.Is(err, syscall.ECHILD) {
			return
		}
		if err != nil && !errors.Is(err, syscall.EINTR) {
			return
		}
	}
}
