package cni

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
)

// confExtensions are the files the conf dir is searched for, as libcni and
// the other runtimes do.
var confExtensions = []string{".conflist", ".conf", ".json"}

// loaded is the outcome of reading the conf dir once.
type loaded struct {
	net  *libcni.NetworkConfigList // nil when notReady is set
	file string                    // where net came from
	// notReady says why there is no usable network ("" when net is set).
	notReady string
}

// racyWindow is how recent a modification time must be for a change that
// keeps it (and the size) to be possible: the timestamp granularity of the
// coarsest common file systems (Linux stamps files with a clock that ticks
// every few ms; ext3 and HFS+ with seconds, FAT with 2s).
const racyWindow = 2 * time.Second

// fingerprint summarizes what loading depends on: the names, sizes and
// modification times of the config files (of their targets, when they are
// symlinks, as in a ConfigMap volume), and the modification times of the
// plugin directories (a plugin installed later makes a config usable).
// Reading it costs one readdir and a few stats, cheap enough to do on
// every Status and Setup instead of holding an inotify watch. It also
// returns the newest modification time it saw.
func fingerprint(confDir string, binDirs []string) (string, time.Time) {
	var b strings.Builder
	var newest time.Time
	stamp := func(info os.FileInfo) int64 {
		if info.ModTime().After(newest) {
			newest = info.ModTime()
		}
		return info.ModTime().UnixNano()
	}
	if ents, err := os.ReadDir(confDir); err != nil {
		fmt.Fprintf(&b, "!%v;", errors.Is(err, os.ErrNotExist))
	} else {
		for _, de := range ents {
			if !hasConfExtension(de.Name()) {
				continue
			}
			info, err := os.Stat(filepath.Join(confDir, de.Name()))
			if err != nil {
				fmt.Fprintf(&b, "%s:!;", de.Name())
				continue
			}
			fmt.Fprintf(&b, "%s:%d:%d;", de.Name(), info.Size(), stamp(info))
		}
	}
	for _, d := range binDirs {
		if info, err := os.Stat(d); err == nil {
			b.WriteString(strconv.FormatInt(stamp(info), 10))
		}
		b.WriteByte('|')
	}
	return b.String(), newest
}

func hasConfExtension(name string) bool {
	for _, ext := range confExtensions {
		if strings.HasSuffix(name, ext) {
			return true
		}
	}
	return false
}

// load picks the first config in confDir (lexical order) that parses and
// has at least one plugin, and checks that every plugin it names is
// installed in binDirs. Configs that do not parse are skipped, as kubelet
// runtimes do, and named in notReady if none is usable.
func load(confDir string, binDirs []string) loaded {
	files, err := libcni.ConfFiles(confDir, confExtensions)
	if err != nil {
		return loaded{notReady: fmt.Sprintf("cannot read CNI config dir %s: %v", confDir, err)}
	}
	sort.Strings(files)
	var skipped []string
	for _, f := range files {
		list, err := loadFile(f)
		if err != nil {
			skipped = append(skipped, fmt.Sprintf("%s: %v", filepath.Base(f), err))
			continue
		}
		for _, p := range list.Plugins {
			if _, err := invoke.FindInPath(p.Network.Type, binDirs); err != nil {
				return loaded{notReady: fmt.Sprintf("CNI network %q (%s): plugin %q not found in %s",
					list.Name, f, p.Network.Type, strings.Join(binDirs, ":"))}
			}
		}
		return loaded{net: list, file: f}
	}
	msg := fmt.Sprintf("no valid CNI network config found in %s", confDir)
	if len(skipped) > 0 {
		msg += " (skipped " + strings.Join(skipped, "; ") + ")"
	}
	return loaded{notReady: msg}
}

func loadFile(f string) (*libcni.NetworkConfigList, error) {
	if strings.HasSuffix(f, ".conflist") {
		return libcni.ConfListFromFile(f)
	}
	conf, err := libcni.ConfFromFile(f)
	if err != nil {
		return nil, err
	}
	if conf.Network.Type == "" {
		return nil, errors.New("no plugin type: a single-plugin config needs \"type\" (a list needs the .conflist extension)")
	}
	return libcni.ConfListFromConf(conf)
}
