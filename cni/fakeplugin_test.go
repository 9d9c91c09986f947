package cni

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/crid-dev/crid/internal/log"
)

// The unit tests drive a real Manager against fake plugins: /bin/sh
// scripts in a temporary bin dir. Each invocation writes one record file
// (its CNI_* environment and its stdin) into the record dir, named so that
// records sort in start order. No root, namespace or real plugin is used:
// CNI_NETNS is any string.

// fakeDefaultResult is what a fake ADD prints unless told otherwise.
const fakeDefaultResult = `{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/x"}],"ips":[{"interface":0,"address":"10.1.2.3/24"}]}`

const fakeLoopbackResult = `{"cniVersion":"1.0.0","interfaces":[{"name":"lo","sandbox":"/x"}],"ips":[{"interface":0,"address":"127.0.0.1/8"}]}`

const fakeVersionResult = `{"cniVersion":"1.0.0","supportedVersions":["0.3.1","0.4.0","1.0.0","1.1.0"]}`

// fakeOpts shape one fake plugin.
type fakeOpts struct {
	result  string // ADD's stdout; fakeDefaultResult when empty
	failAdd bool   // ADD prints a CNI error and exits 1
	failDel bool   // DEL prints a CNI error and exits 1
	// mark makes ADD, DEL and CHECK leave a marker file in the marker dir while
	// they run, and record whether a marker of another call for the same
	// pod (SAME_OVERLAP) or for another pod (OTHER_OVERLAP) existed
	// meanwhile; a call that sees another pod's marker tells that call so
	// (a "seen" file), in case it misses the short-lived marker. They run
	// for about 300ms, or with waitOther until another pod's call is seen
	// to overlap (at most 10s).
	mark      bool
	waitOther bool
}

// fakeEnv is a conf dir, a bin dir with fake plugins, a cache dir, and
// the records of the plugin calls.
type fakeEnv struct {
	t        *testing.T
	confDir  string
	binDir   string
	cacheDir string
	recDir   string
	markDir  string
	seenDir  string
}

// newFakeEnv returns an environment with an empty conf dir and a bin dir
// holding the loopback plugin.
func newFakeEnv(t *testing.T) *fakeEnv {
	t.Helper()
	root := t.TempDir()
	e := &fakeEnv{
		t:        t,
		confDir:  filepath.Join(root, "net.d"),
		binDir:   filepath.Join(root, "bin"),
		cacheDir: filepath.Join(root, "cache"),
		recDir:   filepath.Join(root, "records"),
		markDir:  filepath.Join(root, "markers"),
		seenDir:  filepath.Join(root, "seen"),
	}
	for _, d := range []string{e.confDir, e.binDir, e.recDir, e.markDir, e.seenDir} {
		require.NoError(t, os.MkdirAll(d, 0o755))
	}
	e.plugin("loopback", fakeOpts{result: fakeLoopbackResult})
	return e
}

func (e *fakeEnv) options() Options {
	return Options{ConfDir: e.confDir, BinDirs: []string{e.binDir}, CacheDir: e.cacheDir}
}

func (e *fakeEnv) manager() *Manager {
	e.t.Helper()
	m, err := New(e.options())
	require.NoError(e.t, err)
	return m
}

// podnetManager is a Manager whose network is "podnet", one fake plugin
// "net" answering every command with success.
func (e *fakeEnv) podnetManager() *Manager {
	e.t.Helper()
	e.plugin("net", fakeOpts{})
	e.conf("10-net.conflist", fakeConflist("podnet", "1.0.0", `{"type":"net"}`))
	return e.manager()
}

// plugin installs the fake plugin name. The script is written next to
// the bin dir and renamed in, so the bin dir never holds a partial file.
func (e *fakeEnv) plugin(name string, o fakeOpts) {
	e.t.Helper()
	result := o.result
	if result == "" {
		result = fakeDefaultResult
	}
	resultFile := filepath.Join(filepath.Dir(e.binDir), name+".result")
	require.NoError(e.t, os.WriteFile(resultFile, []byte(result), 0o644))

	iterations, wait := 6, 0 // 6 × 50ms
	if o.waitOther {
		iterations, wait = 200, 1
	}
	var b strings.Builder
	fmt.Fprintf(&b, `#!/bin/sh
rec=%q/"$(date +%%s%%N)-$$"
{
	echo "PLUGIN=%s"
	echo "CNI_COMMAND=$CNI_COMMAND"
	echo "CNI_CONTAINERID=$CNI_CONTAINERID"
	echo "CNI_NETNS=$CNI_NETNS"
	echo "CNI_IFNAME=$CNI_IFNAME"
	echo "CNI_ARGS=$CNI_ARGS"
	echo "CNI_PATH=$CNI_PATH"
} >"$rec.tmp"
stdin=$(cat)
`, e.recDir, name)
	if o.mark {
		fmt.Fprintf(&b, `if [ "$CNI_COMMAND" = ADD ] || [ "$CNI_COMMAND" = DEL ] || [ "$CNI_COMMAND" = CHECK ]; then
	mark=%q seen=%q
	self="$CNI_CONTAINERID.$$"
	: >"$mark/$self"
	same=0 other=0 i=0
	while [ $i -lt %d ]; do
		for f in "$mark"/*; do
			name=${f##*/}
			[ "$name" = "$self" ] && continue
			[ -e "$f" ] || continue
			case "$name" in
			"$CNI_CONTAINERID".*) same=1 ;;
			*) other=1; : >"$seen/$name" ;;
			esac
		done
		# Another pod's call saw this one running (it may be gone by now).
		[ -e "$seen/$self" ] && other=1
		if [ %d = 1 ] && [ $other = 1 ]; then break; fi
		sleep 0.05
		i=$((i+1))
	done
	echo "SAME_OVERLAP=$same" >>"$rec.tmp"
	echo "OTHER_OVERLAP=$other" >>"$rec.tmp"
	rm -f "$mark/$self"
fi
`, e.markDir, e.seenDir, iterations, wait)
	}
	b.WriteString("printf -- '---\\n%s' \"$stdin\" >>\"$rec.tmp\"\nmv \"$rec.tmp\" \"$rec\"\n")
	fmt.Fprintf(&b, `case "$CNI_COMMAND" in
ADD)
	if [ %d = 1 ]; then
		echo '{"cniVersion":"1.0.0","code":11,"msg":"fake ADD failure"}'
		exit 1
	fi
	cat %q
	;;
DEL)
	if [ %d = 1 ]; then
		echo '{"cniVersion":"1.0.0","code":11,"msg":"fake DEL failure"}'
		exit 1
	fi
	;;
VERSION)
	echo '%s'
	;;
esac
exit 0
`, fakeBoolInt(o.failAdd), resultFile, fakeBoolInt(o.failDel), fakeVersionResult)

	tmp := filepath.Join(filepath.Dir(e.binDir), name+".tmp")
	require.NoError(e.t, os.WriteFile(tmp, []byte(b.String()), 0o755))
	require.NoError(e.t, os.Rename(tmp, filepath.Join(e.binDir, name)))
}

func fakeBoolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// conf writes a file into the conf dir.
func (e *fakeEnv) conf(name, content string) {
	e.t.Helper()
	require.NoError(e.t, os.WriteFile(filepath.Join(e.confDir, name), []byte(content), 0o644))
}

// fakeConflist returns a config list named name with the given plugin
// entries (JSON objects).
func fakeConflist(name, version string, plugins ...string) string {
	return fmt.Sprintf(`{"cniVersion":%q,"name":%q,"plugins":[%s]}`, version, name, strings.Join(plugins, ","))
}

// fakeCall is one recorded plugin invocation.
type fakeCall struct {
	Plugin, Command, ContainerID, NetNS, IfName, Args string
	Env                                               map[string]string
	Stdin                                             string
}

// arg returns the CNI_ARGS value of key, and whether it was passed.
func (c fakeCall) arg(key string) (string, bool) {
	for _, kv := range strings.Split(c.Args, ";") {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}

// conf decodes the network config the plugin got on stdin.
func (c fakeCall) conf(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(c.Stdin), &m), "stdin of %s %s: %s", c.Plugin, c.Command, c.Stdin)
	return m
}

// runtimeConfig returns the runtimeConfig the plugin got (nil if none),
// as JSON-decoded values.
func (c fakeCall) runtimeConfig(t *testing.T) map[string]any {
	t.Helper()
	rc, _ := c.conf(t)["runtimeConfig"].(map[string]any)
	return rc
}

// calls returns every completed plugin invocation so far, in start order.
func (e *fakeEnv) calls() []fakeCall {
	e.t.Helper()
	ents, err := os.ReadDir(e.recDir)
	require.NoError(e.t, err)
	var names []string
	for _, de := range ents {
		if !strings.HasSuffix(de.Name(), ".tmp") {
			names = append(names, de.Name())
		}
	}
	sort.Strings(names)
	var out []fakeCall
	for _, n := range names {
		data, err := os.ReadFile(filepath.Join(e.recDir, n))
		require.NoError(e.t, err)
		head, stdin, ok := strings.Cut(string(data), "---\n")
		require.True(e.t, ok, "record %s: %q", n, data)
		c := fakeCall{Env: map[string]string{}, Stdin: stdin}
		for _, line := range strings.Split(strings.TrimSpace(head), "\n") {
			k, v, _ := strings.Cut(line, "=")
			c.Env[k] = v
		}
		c.Plugin, c.Command, c.ContainerID = c.Env["PLUGIN"], c.Env["CNI_COMMAND"], c.Env["CNI_CONTAINERID"]
		c.NetNS, c.IfName, c.Args = c.Env["CNI_NETNS"], c.Env["CNI_IFNAME"], c.Env["CNI_ARGS"]
		out = append(out, c)
	}
	return out
}

// callsOf returns the recorded calls of plugin with command cmd for pod
// id ("" matches any pod).
func (e *fakeEnv) callsOf(plugin, cmd, id string) []fakeCall {
	e.t.Helper()
	var out []fakeCall
	for _, c := range e.calls() {
		if c.Plugin == plugin && c.Command == cmd && (id == "" || c.ContainerID == id) {
			out = append(out, c)
		}
	}
	return out
}

// resetCalls forgets the calls recorded so far.
func (e *fakeEnv) resetCalls() {
	e.t.Helper()
	require.NoError(e.t, os.RemoveAll(e.recDir))
	require.NoError(e.t, os.MkdirAll(e.recDir, 0o755))
}

// cached lists libcni's cached attachments (file names in results/).
func (e *fakeEnv) cached() []string {
	e.t.Helper()
	ents, err := os.ReadDir(filepath.Join(e.cacheDir, "results"))
	if os.IsNotExist(err) {
		return nil
	}
	require.NoError(e.t, err)
	var out []string
	for _, de := range ents {
		out = append(out, de.Name())
	}
	return out
}

// fakeContext returns a context whose logger writes to the test's output.
func fakeContext(t *testing.T) context.Context {
	return log.WithLogger(context.Background(), slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})))
}

// fakePod is a pod with every identifying field set.
func fakePod(id string) Pod {
	return Pod{ID: id, NetNS: "/var/run/netns/" + id, Name: "name-" + id, Namespace: "ns-" + id, UID: "uid-" + id}
}
