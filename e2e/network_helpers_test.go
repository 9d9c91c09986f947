//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

// netSeq numbers the pod networks of this test process: each daemon gets
// its own bridge (crid-e2e<n>) and subnet (10.213.<n>.0/24), so tests
// never share addresses, rules or links. critest-run and the cni package's
// tests use other ranges.
var netSeq atomic.Int32

// podNet is one daemon's pod network: a bridge + host-local + portmap
// config list, like deploy/cni's, in the daemon's own directories.
type podNet struct {
	n        int
	bridge   string
	subnet   string // 10.213.n.0/24
	gateway  string // 10.213.n.1
	confDir  string
	cacheDir string // libcni's
	ipamDir  string // host-local's
}

func newPodNet(t testing.TB, dir string) *podNet {
	n := int(netSeq.Add(1))
	require.Less(t, n, 250, "too many pod networks in one run")
	p := &podNet{
		n:        n,
		bridge:   fmt.Sprintf("crid-e2e%d", n),
		subnet:   fmt.Sprintf("10.213.%d.0/24", n),
		gateway:  fmt.Sprintf("10.213.%d.1", n),
		confDir:  filepath.Join(dir, "net.d"),
		cacheDir: filepath.Join(dir, "cni-cache"),
		ipamDir:  filepath.Join(dir, "ipam"),
	}
	require.NoError(t, os.MkdirAll(p.confDir, 0o755))
	return p
}

// conflist is the network config this pod network is installed with.
func (p *podNet) conflist() string {
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "crid-e2e-%d",
  "plugins": [
    {
      "type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": true, "hairpinMode": true,
      "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}]}
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, p.n, p.bridge, p.ipamDir, p.subnet)
}

// install writes the config into the conf dir (crid picks it up without a
// restart).
func (p *podNet) install(t testing.TB) {
	require.NoError(t, os.WriteFile(filepath.Join(p.confDir, "10-e2e.conflist"), []byte(p.conflist()), 0o644))
}

// toml is the daemon's [cni] table.
// extraBin, when set, is searched first.
func (p *podNet) toml(extraBin string) string {
	bins := "'/opt/cni/bin', '/usr/lib/cni'"
	if extraBin != "" {
		bins = fmt.Sprintf("%q, %s", extraBin, bins)
	}
	return fmt.Sprintf("[cni]\nconf_dir = %q\ncache_dir = %q\nbin_dirs = [%s]\n", p.confDir, p.cacheDir, bins)
}

// allocatedIPs lists the addresses host-local holds for pods.
func (p *podNet) allocatedIPs(t testing.TB) []string {
	ents, err := os.ReadDir(filepath.Join(p.ipamDir, fmt.Sprintf("crid-e2e-%d", p.n)))
	if os.IsNotExist(err) {
		return nil
	}
	require.NoError(t, err)
	var ips []string
	for _, e := range ents {
		if name := e.Name(); strings.HasPrefix(name, "10.") {
			ips = append(ips, name)
		}
	}
	return ips
}

// vethsOnBridge lists the host ends of pod veths attached to the bridge.
func (p *podNet) vethsOnBridge(t testing.TB) []string {
	out, err := exec.Command("ip", "-o", "link", "show", "master", p.bridge).CombinedOutput()
	if err != nil && strings.Contains(string(out), "does not exist") {
		return nil
	}
	require.NoError(t, err, "%s", out)
	var names []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			names = append(names, strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0])
		}
	}
	return names
}

// remove deletes the bridge the plugin created (it never does so itself).
func (p *podNet) remove() {
	_ = exec.Command("ip", "link", "del", p.bridge).Run()
}
