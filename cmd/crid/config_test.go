package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestDeployConfigIsTheDefault(t *testing.T) {
	cfg, err := loadConfig("../../deploy/config.toml", true)
	require.NoError(t, err)
	require.Equal(t, defaultConfig(), cfg)

	var out bytes.Buffer
	require.NoError(t, run([]string{"config", "default"}, &out, &out))
	file, err := os.ReadFile("../../deploy/config.toml")
	require.NoError(t, err)
	require.Contains(t, string(file), out.String(), "deploy/config.toml must hold `crid config default`")
}

func TestMissingDefaultConfigIsFine(t *testing.T) {
	cfg, err := loadConfig(filepath.Join(t.TempDir(), "config.toml"), false)
	require.NoError(t, err)
	require.Equal(t, defaultConfig(), cfg)

	_, err = loadConfig(filepath.Join(t.TempDir(), "config.toml"), true)
	require.Error(t, err, "an explicitly named config file must exist")
}

func TestDropInsOverrideInOrder(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644))
	}
	write("config.toml", "root = '/srv/crid'\nlog_level = 'warn'\n[image]\nmax_concurrent_downloads = 4\n")
	write("config.d/20-b.toml", "log_level = 'debug'\n")
	write("config.d/10-a.toml", "log_level = 'error'\n[image]\npull_progress_timeout = '90s'\n")
	write("config.d/ignored.conf", "this is not toml")

	cfg, err := loadConfig(filepath.Join(dir, "config.toml"), true)
	require.NoError(t, err)
	require.Equal(t, "/srv/crid", cfg.Root)
	require.Equal(t, "debug", cfg.LogLevel, "20-b is applied after 10-a")
	require.Equal(t, 4, cfg.Image.MaxConcurrentDownloads)
	require.Equal(t, Duration(90*time.Second), cfg.Image.PullProgressTimeout)
	require.Equal(t, "/run/crid", cfg.State, "unset fields keep their defaults")
}

func TestBadConfigIsRejected(t *testing.T) {
	for _, tc := range []struct {
		desc, body, want string
	}{
		{"unknown field", "roots = '/x'\n", "roots"},
		{"relative root", "root = 'var/lib'\n", "absolute"},
		{"bad level", "log_level = 'loud'\n", "log_level"},
		{"bad snapshotter", "[image]\nsnapshotter = 'zfs'\n", "snapshotter"},
		{"zero downloads", "[image]\nmax_concurrent_downloads = 0\n", "max_concurrent_downloads"},
		{"bad duration", "[image]\npull_progress_timeout = 'soon'\n", "pull_progress_timeout"},
		{"not toml", "root = \n", "config"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "config.toml")
			require.NoError(t, os.WriteFile(p, []byte(tc.body), 0o644))
			_, err := loadConfig(p, true)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestFlagsOverrideTheFile(t *testing.T) {
	cfg := defaultConfig()
	cfg.override(options{root: "/a", state: "/b", listen: "/b/s.sock", logLevel: "debug"})
	require.Equal(t, "/a", cfg.Root)
	require.Equal(t, "/b", cfg.State)
	require.Equal(t, "/b/s.sock", cfg.Listen)
	require.Equal(t, "debug", cfg.LogLevel)
	require.NoError(t, cfg.validate())
}
