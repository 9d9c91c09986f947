// Command critest-run runs critest, the CRI conformance suite of
// sigs.k8s.io/cri-tools, against a crid built from this repository, with
// every image served by a local registry. `make critest` runs it as root
// from the repository's root:
//
//	go run ./e2e/cmd/critest-run [-focus RE] [-skip RE] [-keep]
//
// It
//
//  1. builds critest (go test -c ./cmd/critest in a writable copy of the
//     module from the module proxy) into the cache, once per version;
//  2. starts Debian's docker-registry on 127.0.0.1 and a free port, with its
//     storage in the cache so that re-runs only check blobs;
//  3. builds and pushes imagebuild's "critest" set with e2e/cmd/pushimages,
//     which also writes the certs.d mirror configuration that makes the
//     upstream names (registry.k8s.io/…, gcr.io/…) resolve to that registry;
//  4. starts crid with its own root, state and socket in a temporary
//     directory, registry_config_path set to that certs.d and sandbox_image
//     to the set's sandbox image;
//  5. runs critest (no benchmarks; -parallel ginkgo processes, [Serial]
//     specs alone at the end), with its verbose log and a ginkgo JSON report
//     in the report directory;
//  6. prints ginkgo's figures as "N passed, N failed, N skipped" and compares
//     each spec's outcome with e2e/critest-expected-failures.txt.
//
// It exits non-zero when a spec fails that the list does not name, when a
// listed spec passes (remove it from the list: the list only shrinks), when
// the list names a spec critest does not have, or when the run itself
// fails. crid, the registry and critest are stopped on every path,
// including SIGINT and SIGTERM, and die with this process otherwise
// (parent-death signal).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crid-dev/crid/internal/mount"
	"github.com/crid-dev/crid/internal/testutil/imagebuild"
	"github.com/crid-dev/crid/internal/testutil/registry"
)

// critestModule is the cri-tools release whose critest is run.
const critestModule = "sigs.k8s.io/cri-tools@v1.37.0"

// failedStates are the ginkgo spec states that count as failures.
var failedStates = []string{"failed", "panicked", "timedout", "interrupted", "aborted"}

type options struct {
	cache     string
	crid      string
	expected  string
	reportDir string
	focus     string
	skip      string
	keep      bool
	parallel  int
	timeout   time.Duration
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code, err := run(ctx, os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "critest-run:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

func run(ctx context.Context, args []string) (int, error) {
	var o options
	fs := flag.NewFlagSet("critest-run", flag.ContinueOnError)
	fs.StringVar(&o.cache, "cache", defaultCache(), "cache `dir`: critest binary, registry storage, image build cache")
	fs.StringVar(&o.crid, "crid", "", "crid `binary` to test (default: build ./cmd/crid)")
	fs.StringVar(&o.expected, "expected", "e2e/critest-expected-failures.txt", "expected failures `file`")
	fs.StringVar(&o.reportDir, "report-dir", "", "where logs and the ginkgo report go (default: a new temporary directory)")
	fs.StringVar(&o.focus, "focus", "", "run only specs matching this `regexp` (ginkgo.focus)")
	fs.StringVar(&o.skip, "skip", "", "also skip specs matching this `regexp` (ginkgo.skip)")
	fs.BoolVar(&o.keep, "keep", false, "keep crid's root and state directory")
	fs.IntVar(&o.parallel, "parallel", 4, "ginkgo processes running specs at once; [Serial] specs run alone at the end")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return 2, err
	}
	if os.Geteuid() != 0 {
		return 1, errors.New("critest needs root (CI runs it as root)")
	}
	if err := checkRepoRoot(); err != nil {
		return 1, err
	}
	expected, err := readExpected(o.expected)
	if err != nil {
		return 1, err
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()

	r := &runner{opts: o}
	defer r.cleanup()
	report, err := r.run(ctx)
	if err != nil {
		return 1, err
	}
	return compare(os.Stdout, report, expected, o.expected), nil
}

// runner owns the processes and directories of one run.
type runner struct {
	opts     options
	tmp      string // crid's root, state, socket, config, certs.d; removed at the end
	report   string // logs and the ginkgo report; kept
	cleanups []func()
}

func (r *runner) onCleanup(f func()) { r.cleanups = append(r.cleanups, f) }

// cleanup undoes everything in reverse order.
func (r *runner) cleanup() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
	r.cleanups = nil
}

func (r *runner) run(ctx context.Context) (*suiteReport, error) {
	start := time.Now()
	var err error
	if r.tmp, err = os.MkdirTemp("", "crid-critest-"); err != nil {
		return nil, err
	}
	r.onCleanup(func() {
		if r.opts.keep {
			fmt.Printf("critest-run: kept %s\n", r.tmp)
			return
		}
		removeTree(r.tmp)
	})
	r.report = r.opts.reportDir
	if r.report == "" {
		if r.report, err = os.MkdirTemp("", "crid-critest-report-"); err != nil {
			return nil, err
		}
	} else if err := os.MkdirAll(r.report, 0o755); err != nil {
		return nil, err
	}
	fmt.Printf("critest-run: logs and report in %s\n", r.report)

	bin := filepath.Join(r.tmp, "bin")
	critest, err := buildCritest(ctx, filepath.Join(r.opts.cache, "critest"))
	if err != nil {
		return nil, err
	}
	if err := goCmd(ctx, ".", "build", "-o", filepath.Join(bin, "pushimages"), "./e2e/cmd/pushimages"); err != nil {
		return nil, fmt.Errorf("build pushimages: %w", err)
	}
	crid := r.opts.crid
	if crid == "" {
		crid = filepath.Join(bin, "crid")
		if err := goCmd(ctx, ".", "build", "-o", crid, "./cmd/crid"); err != nil {
			return nil, fmt.Errorf("build crid: %w", err)
		}
		// crid finds crid-pause beside its binary.
		if out, err := exec.CommandContext(ctx, "bash", "hack/build-pause.sh", filepath.Join(filepath.Dir(crid), "crid-pause")).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("build crid-pause: %v: %s", err, out)
		}
	}
	fmt.Printf("critest-run: built critest, pushimages and crid (%.0fs)\n", time.Since(start).Seconds())

	reg, err := r.startRegistry(ctx)
	if err != nil {
		return nil, err
	}
	t := time.Now()
	certs := filepath.Join(r.tmp, "certs.d")
	push := exec.CommandContext(ctx, filepath.Join(bin, "pushimages"), "-registry", reg, "-set", "critest",
		"-cache", filepath.Join(r.opts.cache, "imagebuild"), "-mirror-config", certs)
	if err := runLogged(push, filepath.Join(r.report, "pushimages.log")); err != nil {
		return nil, fmt.Errorf("push the critest images: %w", err)
	}
	fmt.Printf("critest-run: pushed the critest image set to %s (%.0fs)\n", reg, time.Since(t).Seconds())

	sock, err := r.startCrid(ctx, crid, certs)
	if err != nil {
		return nil, err
	}

	t = time.Now()
	rep, err := r.runCritest(ctx, critest, sock)
	if err != nil {
		return nil, err
	}
	fmt.Printf("critest-run: critest ran in %.0fs (whole run %.0fs)\n", time.Since(t).Seconds(), time.Since(start).Seconds())
	return rep, nil
}

func defaultCache() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "crid")
}

// checkRepoRoot makes sure the working directory is crid's module root:
// crid and pushimages are built from it.
func checkRepoRoot() error {
	b, err := os.ReadFile("go.mod")
	if err != nil || !strings.HasPrefix(string(b), "module github.com/crid-dev/crid\n") {
		return errors.New("run from the root of crid's repository")
	}
	return nil
}

// goCmd runs the go command in dir with the toolchain on this machine only.
func goCmd(ctx context.Context, dir string, args ...string) error {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOTOOLCHAIN=local", "GOWORK=off")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// buildCritest returns the cached critest binary of critestModule and the
// directory that also holds the ginkgo CLI of the version critest uses
// (critest -parallel runs it from PATH), building both first when missing:
// go test -c and go build in a writable copy of the module (the module
// cache is read-only).
func buildCritest(ctx context.Context, cache string) (string, error) {
	_, version, _ := strings.Cut(critestModule, "@")
	bin := filepath.Join(cache, version, "critest")
	ginkgo := filepath.Join(cache, version, "ginkgo")
	_, errCritest := os.Stat(bin)
	_, errGinkgo := os.Stat(ginkgo)
	if errCritest == nil && errGinkgo == nil {
		return bin, nil
	}
	fmt.Printf("critest-run: building critest %s and its ginkgo (once)\n", version)
	work, err := os.MkdirTemp("", "crid-critest-build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(work)
	dl := exec.CommandContext(ctx, "go", "mod", "download", "-json", critestModule)
	dl.Dir = work
	dl.Env = append(os.Environ(), "GOTOOLCHAIN=local", "GOFLAGS=")
	out, err := dl.Output()
	if err != nil {
		return "", fmt.Errorf("go mod download %s: %w", critestModule, err)
	}
	var mod struct{ Dir, Error string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		return "", fmt.Errorf("go mod download %s: %v %s", critestModule, err, mod.Error)
	}
	src := filepath.Join(work, "cri-tools")
	if out, err := exec.CommandContext(ctx, "cp", "-R", mod.Dir, src).CombinedOutput(); err != nil {
		return "", fmt.Errorf("copy %s: %w\n%s", mod.Dir, err, out)
	}
	if out, err := exec.CommandContext(ctx, "chmod", "-R", "u+w", src).CombinedOutput(); err != nil {
		return "", fmt.Errorf("make %s writable: %w\n%s", src, err, out)
	}
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		return "", err
	}
	if err := goCmd(ctx, src, "build", "-mod=mod", "-o", ginkgo+".tmp", "github.com/onsi/ginkgo/v2/ginkgo"); err != nil {
		return "", err
	}
	if err := goCmd(ctx, src, "test", "-mod=mod", "-c", "./cmd/critest", "-o", bin+".tmp"); err != nil {
		return "", err
	}
	if err := os.Rename(ginkgo+".tmp", ginkgo); err != nil {
		return "", err
	}
	return bin, os.Rename(bin+".tmp", bin)
}

// runLogged runs cmd with its output in logPath.
func runLogged(cmd *exec.Cmd, logPath string) error {
	f, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%w (see %s)", err, logPath)
	}
	return nil
}

// process is a started background process.
type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// start runs cmd in the background with its output in logPath; the
// runner's cleanup sends SIGTERM and, after grace, SIGKILL.
func (r *runner) start(name string, cmd *exec.Cmd, logPath string, grace time.Duration) (*process, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	r.onCleanup(func() {
		select {
		case <-p.done:
			return
		default:
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
			fmt.Printf("critest-run: %s ignored SIGTERM for %v: killing it\n", name, grace)
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	return p, nil
}

// startRegistry starts docker-registry on a free loopback port with its
// storage in the cache, and returns its address.
func (r *runner) startRegistry(ctx context.Context) (string, error) {
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		return "", errors.New("docker-registry is missing: run make deps (Debian's docker-registry package)")
	}
	storage := filepath.Join(r.opts.cache, "critest-registry")
	var lastErr error
	for attempt := range 3 {
		addr, err := freeLoopbackAddr()
		if err != nil {
			return "", err
		}
		config := filepath.Join(r.tmp, "registry.yml")
		yml := registry.ConfigYAML(addr, storage, "")
		if err := os.WriteFile(config, []byte(yml), 0o600); err != nil {
			return "", err
		}
		logPath := filepath.Join(r.report, "registry.log")
		p, err := r.start("registry", exec.Command(bin, "serve", config), logPath, 5*time.Second)
		if err != nil {
			return "", err
		}
		if lastErr = waitHTTP(ctx, p, "http://"+addr+"/v2/", 15*time.Second); lastErr == nil {
			return addr, nil
		}
		logs, _ := os.ReadFile(logPath)
		if !strings.Contains(string(logs), "address already in use") {
			break
		}
		fmt.Printf("critest-run: registry port %s taken (attempt %d), retrying\n", addr, attempt+1)
	}
	return "", fmt.Errorf("start registry: %w", lastErr)
}

func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	addr := l.Addr().String()
	return addr, l.Close()
}

// waitHTTP waits until url answers 200 or 401, or p exits.
func waitHTTP(ctx context.Context, p *process, url string, timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited: %v", p.name, p.err)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		if resp, err := client.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s did not answer %s within %v", p.name, url, timeout)
}

// critestBridge and critestSubnet are the pod network of the crid critest
// runs against: its own bridge and addresses, apart from the e2e suite's
// (crid-e2e<n>, 10.213.<n>.0/24) and the deploy default (crid0,
// 10.88.0.0/16).
const (
	critestBridge = "crid-critest0"
	critestSubnet = "10.214.0.0/24"
)

// podNetwork writes the CNI config of the deploy default (bridge with
// masquerade and hairpin, host-local, portmap) with critest's bridge,
// subnet and IPAM dir, and returns the directory holding it. The bridge is
// deleted at cleanup (the plugin never deletes it).
func (r *runner) podNetwork() (string, error) {
	dir := filepath.Join(r.tmp, "cni")
	if err := os.MkdirAll(filepath.Join(dir, "net.d"), 0o755); err != nil {
		return "", err
	}
	conf := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "crid-critest",
  "plugins": [
    {
      "type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": true, "hairpinMode": true,
      "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}]}
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, critestBridge, filepath.Join(dir, "ipam"), critestSubnet)
	if err := os.WriteFile(filepath.Join(dir, "net.d", "10-critest.conflist"), []byte(conf), 0o644); err != nil {
		return "", err
	}
	r.onCleanup(func() { _ = exec.Command("ip", "link", "del", critestBridge).Run() })
	return dir, nil
}

// startCrid starts crid on its own directories and returns its socket.
func (r *runner) startCrid(ctx context.Context, bin, certs string) (string, error) {
	root, state := filepath.Join(r.tmp, "root"), filepath.Join(r.tmp, "state")
	sock := filepath.Join(state, "crid.sock")
	config := filepath.Join(r.tmp, "crid.toml")
	netDir, err := r.podNetwork()
	if err != nil {
		return "", err
	}
	toml := fmt.Sprintf("log_level = 'debug'\n\n[image]\nregistry_config_path = %q\nsandbox_image = %q\n"+
		"\n[cni]\nconf_dir = %q\ncache_dir = %q\n",
		certs, imagebuild.CritestSandboxImage, filepath.Join(netDir, "net.d"), filepath.Join(netDir, "cache"))
	if err := os.WriteFile(config, []byte(toml), 0o644); err != nil {
		return "", err
	}
	cmd := exec.Command(bin, "--config", config, "--root", root, "--state", state, "--listen", sock)
	p, err := r.start("crid", cmd, filepath.Join(r.report, "crid.log"), 30*time.Second)
	if err != nil {
		return "", err
	}
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	client := runtime.NewRuntimeServiceClient(conn)
	deadline := time.Now().Add(30 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		v, err := client.Version(cctx, &runtime.VersionRequest{})
		cancel()
		if err == nil {
			fmt.Printf("critest-run: %s %s (CRI %s) listening on %s\n", v.GetRuntimeName(), v.GetRuntimeVersion(), v.GetRuntimeApiVersion(), sock)
			return sock, nil
		}
		select {
		case <-p.done:
			return "", fmt.Errorf("crid exited during start: %v (see %s)", p.err, filepath.Join(r.report, "crid.log"))
		case <-ctx.Done():
			return "", ctx.Err()
		default:
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("crid did not answer on %s: %w", sock, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// runCritest runs the conformance specs (critest skips its benchmarks
// itself) and returns ginkgo's report. critest's own exit status is not an
// error: failing specs are judged against the expected list.
func (r *runner) runCritest(ctx context.Context, critest, sock string) (*suiteReport, error) {
	logPath := filepath.Join(r.report, "critest.log")
	jsonPath := filepath.Join(r.report, "critest-report.json")
	args := []string{
		"-runtime-endpoint", "unix://" + sock,
		"-image-endpoint", "unix://" + sock,
		"-ginkgo.v", "-ginkgo.no-color",
		"-ginkgo.json-report", jsonPath,
		"-ginkgo.timeout", r.opts.timeout.String(),
		"-parallel", strconv.Itoa(max(r.opts.parallel, 1)),
	}
	if r.opts.focus != "" {
		args = append(args, "-ginkgo.focus", r.opts.focus)
	}
	if r.opts.skip != "" {
		args = append(args, "-ginkgo.skip", r.opts.skip)
	}
	fmt.Printf("critest-run: critest %s (log: %s)\n", strings.Join(args, " "), logPath)
	cmd := exec.CommandContext(ctx, critest, args...)
	cmd.Dir = r.tmp
	// critest -parallel runs the ginkgo CLI built next to it.
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(critest)+string(os.PathListSeparator)+os.Getenv("PATH"))
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	err := runLogged(cmd, logPath)
	if ctx.Err() != nil {
		return nil, fmt.Errorf("critest: %w", ctx.Err())
	}
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		return nil, fmt.Errorf("critest: %w", err)
	}
	rep, perr := parseReport(logPath, jsonPath)
	if perr != nil {
		return nil, fmt.Errorf("critest (%v): %w", err, perr)
	}
	return rep, nil
}

// suiteReport is what a critest run produced.
type suiteReport struct {
	// Figures of ginkgo's summary line.
	passed, failed, pending, skipped int
	ran, total                       int
	seconds                          float64
	// specs maps each spec's full text to its state.
	specs    map[string]string
	failures map[string]string // spec → first line of its failure message
}

var (
	ranRE     = regexp.MustCompile(`(?m)^Ran (\d+) of (\d+) Specs in ([\d.]+) seconds`)
	figuresRE = regexp.MustCompile(`(?m)(\d+) Passed \| (\d+) Failed \| (?:(\d+) Flaked \| )?(\d+) Pending \| (\d+) Skipped`)
)

// parseReport reads ginkgo's summary from the log and each spec's state
// from the JSON report.
func parseReport(logPath, jsonPath string) (*suiteReport, error) {
	logs, err := os.ReadFile(logPath)
	if err != nil {
		return nil, err
	}
	rep := &suiteReport{specs: map[string]string{}, failures: map[string]string{}}
	m := ranRE.FindAllSubmatch(logs, -1)
	f := figuresRE.FindAllSubmatch(logs, -1)
	if len(m) == 0 || len(f) == 0 {
		return nil, fmt.Errorf("no ginkgo summary in %s", logPath)
	}
	last, figs := m[len(m)-1], f[len(f)-1]
	rep.ran, _ = strconv.Atoi(string(last[1]))
	rep.total, _ = strconv.Atoi(string(last[2]))
	rep.seconds, _ = strconv.ParseFloat(string(last[3]), 64)
	rep.passed, _ = strconv.Atoi(string(figs[1]))
	rep.failed, _ = strconv.Atoi(string(figs[2]))
	rep.pending, _ = strconv.Atoi(string(figs[4]))
	rep.skipped, _ = strconv.Atoi(string(figs[5]))

	raw, err := os.ReadFile(jsonPath)
	if err != nil {
		return nil, err
	}
	var suites []struct {
		SpecReports []struct {
			ContainerHierarchyTexts []string
			LeafNodeType            string
			LeafNodeText            string
			State                   string
			Failure                 struct{ Message string }
		}
	}
	if err := json.Unmarshal(raw, &suites); err != nil {
		return nil, fmt.Errorf("parse %s: %w", jsonPath, err)
	}
	for _, s := range suites {
		for _, sp := range s.SpecReports {
			if sp.LeafNodeType != "It" {
				continue
			}
			name := strings.Join(append(slices.Clone(sp.ContainerHierarchyTexts), sp.LeafNodeText), " ")
			rep.specs[name] = sp.State
			if slices.Contains(failedStates, sp.State) {
				msg, _, _ := strings.Cut(strings.TrimSpace(sp.Failure.Message), "\n")
				rep.failures[name] = msg
			}
		}
	}
	return rep, nil
}

// expectation is one line of the expected failures file.
type expectation struct {
	reason string
	line   int
}

// readExpected reads "<spec full text> | <reason>" lines; blank lines and
// lines starting with # are ignored.
func readExpected(path string) (map[string]expectation, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("expected failures: %w", err)
	}
	defer f.Close()
	out := map[string]expectation{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, reason, ok := strings.Cut(line, " | ")
		if !ok || strings.TrimSpace(reason) == "" {
			return nil, fmt.Errorf("%s:%d: want \"<spec> | <reason>\"", path, n)
		}
		name = strings.TrimSpace(name)
		if prev, dup := out[name]; dup {
			return nil, fmt.Errorf("%s:%d: spec listed again (first on line %d)", path, n, prev.line)
		}
		out[name] = expectation{reason: strings.TrimSpace(reason), line: n}
	}
	return out, sc.Err()
}

// compare prints the summary and the differences from the expected list,
// and returns the exit code.
func compare(w io.Writer, rep *suiteReport, expected map[string]expectation, listPath string) int {
	fmt.Fprintf(w, "critest: ran %d of %d specs in %.0fs\n", rep.ran, rep.total, rep.seconds)
	fmt.Fprintf(w, "%d passed, %d failed, %d skipped\n", rep.passed, rep.failed, rep.skipped+rep.pending)

	var unexpected, fixed, unknown []string
	for name, state := range rep.specs {
		_, listed := expected[name]
		switch {
		case slices.Contains(failedStates, state) && !listed:
			unexpected = append(unexpected, name)
		case state == "passed" && listed:
			fixed = append(fixed, name)
		}
	}
	for name := range expected {
		if _, ok := rep.specs[name]; !ok {
			unknown = append(unknown, name)
		}
	}
	slices.Sort(unexpected)
	slices.Sort(fixed)
	slices.Sort(unknown)
	for _, n := range unexpected {
		fmt.Fprintf(w, "UNEXPECTED FAILURE: %s\n    %s\n", n, rep.failures[n])
	}
	for _, n := range fixed {
		fmt.Fprintf(w, "NOW PASSES (remove it from %s, line %d): %s\n", listPath, expected[n].line, n)
	}
	for _, n := range unknown {
		fmt.Fprintf(w, "NOT IN CRITEST (stale line %d of %s): %s\n", expected[n].line, listPath, n)
	}
	expectedFailures := 0
	for name, state := range rep.specs {
		if _, listed := expected[name]; listed && slices.Contains(failedStates, state) {
			expectedFailures++
		}
	}
	fmt.Fprintf(w, "critest-run: %d expected failures (%s), %d unexpected failures, %d listed specs now pass, %d stale entries\n",
		expectedFailures, listPath, len(unexpected), len(fixed), len(unknown))
	if len(unexpected)+len(fixed)+len(unknown) > 0 {
		return 1
	}
	return 0
}

// removeTree detaches every mount under dir (deepest first), then removes
// dir. It leaves dir alone if a mount cannot be detached, so that removal
// never reaches into a mounted filesystem.
func removeTree(dir string) {
	mounts, err := mountsUnder(dir)
	if err != nil {
		fmt.Printf("critest-run: keeping %s: %v\n", dir, err)
		return
	}
	for _, m := range mounts {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			fmt.Printf("critest-run: keeping %s: unmount %s: %v\n", dir, m, err)
			return
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		fmt.Printf("critest-run: remove %s: %v\n", dir, err)
	}
}

// mountsUnder lists the mount points below dir, deepest first.
func mountsUnder(dir string) ([]string, error) {
	ms, err := mount.Mounts(func(m mount.Info) bool { return m.Under(dir) })
	var out []string
	for _, m := range ms {
		out = append(out, m.Mountpoint)
	}
	slices.SortFunc(out, func(a, b string) int {
		if len(a) != len(b) {
			return len(b) - len(a)
		}
		return strings.Compare(a, b)
	})
	return slices.Compact(out), err
}
