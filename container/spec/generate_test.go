package spec

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestProcessArgs(t *testing.T) {
	for _, tc := range []struct {
		desc            string
		entrypoint, cmd []string
		command, args   []string
		want            []string
		wantErr         bool
	}{
		{desc: "image entrypoint and cmd", entrypoint: []string{"ep"}, cmd: []string{"c1"}, want: []string{"ep", "c1"}},
		{desc: "image cmd only", cmd: []string{"c1", "c2"}, want: []string{"c1", "c2"}},
		{desc: "image entrypoint only", entrypoint: []string{"ep"}, want: []string{"ep"}},
		{desc: "command replaces entrypoint and drops image cmd", entrypoint: []string{"ep"}, cmd: []string{"c1"}, command: []string{"cmd"}, want: []string{"cmd"}},
		{desc: "args replace cmd", entrypoint: []string{"ep"}, cmd: []string{"c1"}, args: []string{"a1"}, want: []string{"ep", "a1"}},
		{desc: "command and args", entrypoint: []string{"ep"}, cmd: []string{"c1"}, command: []string{"cmd"}, args: []string{"a1"}, want: []string{"cmd", "a1"}},
		{desc: "args without any entrypoint", cmd: []string{"c1"}, args: []string{"a1", "a2"}, want: []string{"a1", "a2"}},
		{desc: "nothing at all", wantErr: true},
		{desc: "NUL in argument", command: []string{"a\x00b"}, wantErr: true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			in := baseInput(t)
			in.Image = ImageConfig{Entrypoint: tc.entrypoint, Cmd: tc.cmd}
			in.Command, in.Args = tc.command, tc.args
			s, err := Generate(in)
			if tc.wantErr {
				requireInvalid(t, err, "")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, s.Process.Args)
		})
	}
	_, err := Generate(Input{ID: "c", RootfsPath: t.TempDir()})
	requireInvalid(t, err, "no command specified")
}

func TestEnv(t *testing.T) {
	for _, tc := range []struct {
		desc     string
		hostname string
		image    []string
		req      []KeyValue
		want     []string
		wantErr  bool
	}{
		{desc: "defaults", want: []string{"PATH=" + DefaultPath}},
		{desc: "hostname first", hostname: "h", want: []string{"HOSTNAME=h", "PATH=" + DefaultPath}},
		{desc: "image path kept", image: []string{"PATH=/x", "A=1"}, want: []string{"PATH=/x", "A=1"}},
		{desc: "request overrides image in place", image: []string{"A=1", "B=2"}, req: []KeyValue{{"A", "9"}, {"C", "3"}},
			want: []string{"A=9", "B=2", "C=3", "PATH=" + DefaultPath}},
		{desc: "request overrides HOSTNAME", hostname: "h", req: []KeyValue{{"HOSTNAME", "x"}}, want: []string{"HOSTNAME=x", "PATH=" + DefaultPath}},
		{desc: "value with equals", req: []KeyValue{{"A", "b=c"}}, want: []string{"A=b=c", "PATH=" + DefaultPath}},
		{desc: "image entry without value", image: []string{"EMPTY"}, want: []string{"EMPTY=", "PATH=" + DefaultPath}},
		{desc: "key with equals", req: []KeyValue{{"A=B", "c"}}, wantErr: true},
		{desc: "empty key", req: []KeyValue{{"", "c"}}, wantErr: true},
		{desc: "bad image key", image: []string{"=x"}, wantErr: true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			in := baseInput(t)
			in.Hostname = tc.hostname
			in.Image.Env, in.Env = tc.image, tc.req
			s, err := Generate(in)
			if tc.wantErr {
				requireInvalid(t, err, "")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, s.Process.Env)
		})
	}
}

func TestCwd(t *testing.T) {
	for _, tc := range []struct {
		desc, image, req, want string
		wantErr                bool
	}{
		{desc: "default", want: "/"},
		{desc: "image", image: "/app", want: "/app"},
		{desc: "request wins", image: "/app", req: "/work/", want: "/work"},
		{desc: "relative request", req: "work", wantErr: true},
		{desc: "relative image", image: "app", wantErr: true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			in := baseInput(t)
			in.Image.WorkingDir, in.WorkingDir = tc.image, tc.req
			s, err := Generate(in)
			if tc.wantErr {
				requireInvalid(t, err, "")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, s.Process.Cwd)
		})
	}
}

func TestBasics(t *testing.T) {
	in := baseInput(t)
	in.TTY = true
	in.Annotations = map[string]string{"a": "b"}
	in.Linux.CgroupsPath = "/kubepods/pod1/c1"
	in.Linux.Security.ReadonlyRootfs = true
	in.Linux.Security.NoNewPrivs = true
	s, err := Generate(in)
	require.NoError(t, err)
	assert.True(t, s.Process.Terminal)
	assert.Nil(t, s.Process.ConsoleSize)
	assert.Equal(t, map[string]string{"a": "b"}, s.Annotations)
	assert.Equal(t, "/kubepods/pod1/c1", s.Linux.CgroupsPath)
	assert.True(t, s.Root.Readonly)
	assert.Equal(t, in.RootfsPath, s.Root.Path)
	assert.True(t, s.Process.NoNewPrivileges)

	_, err = Generate(Input{ID: "c", RootfsPath: "rel", Command: []string{"x"}})
	requireInvalid(t, err, "absolute")
	_, err = Generate(Input{RootfsPath: "/", Command: []string{"x"}})
	requireInvalid(t, err, "id")
}

func TestRlimitNofile(t *testing.T) {
	for _, tc := range []struct {
		desc string
		max  uint64
		want uint64
	}{
		{desc: "may raise", max: 0, want: 1048576},
		{desc: "capped by current hard limit", max: 20000, want: 20000},
		{desc: "cap above default", max: 1 << 30, want: 1048576},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			in := baseInput(t)
			in.Host.NofileMax = tc.max
			s, err := Generate(in)
			require.NoError(t, err)
			require.Len(t, s.Process.Rlimits, 1)
			assert.Equal(t, "RLIMIT_NOFILE", s.Process.Rlimits[0].Type)
			assert.Equal(t, tc.want, s.Process.Rlimits[0].Hard)
			assert.Equal(t, tc.want, s.Process.Rlimits[0].Soft)
		})
	}
}
