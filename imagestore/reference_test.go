package imagestore

import (
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	hexA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	hexB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

func TestParseRef(t *testing.T) {
	for _, tc := range []struct {
		desc, in, want string
		tag            string // repoTag of the result
		key            string // lookupKey of the result
	}{
		{desc: "familiar name gets registry, library and latest", in: "busybox",
			want: "docker.io/library/busybox:latest", tag: "docker.io/library/busybox:latest", key: "docker.io/library/busybox:latest"},
		{desc: "familiar name with tag", in: "busybox:1.36",
			want: "docker.io/library/busybox:1.36", tag: "docker.io/library/busybox:1.36", key: "docker.io/library/busybox:1.36"},
		{desc: "library path", in: "library/busybox", want: "docker.io/library/busybox:latest",
			tag: "docker.io/library/busybox:latest", key: "docker.io/library/busybox:latest"},
		{desc: "docker.io without library", in: "docker.io/busybox", want: "docker.io/library/busybox:latest",
			tag: "docker.io/library/busybox:latest", key: "docker.io/library/busybox:latest"},
		{desc: "user repository", in: "user/app:v1", want: "docker.io/user/app:v1",
			tag: "docker.io/user/app:v1", key: "docker.io/user/app:v1"},
		{desc: "other registry", in: "registry.k8s.io/pause:3.10", want: "registry.k8s.io/pause:3.10",
			tag: "registry.k8s.io/pause:3.10", key: "registry.k8s.io/pause:3.10"},
		{desc: "registry with port", in: "localhost:5000/app", want: "localhost:5000/app:latest",
			tag: "localhost:5000/app:latest", key: "localhost:5000/app:latest"},
		{desc: "digest kept, no tag added", in: "busybox@sha256:" + hexA,
			want: "docker.io/library/busybox@sha256:" + hexA, tag: "", key: "docker.io/library/busybox@sha256:" + hexA},
		{desc: "tag and digest both kept", in: "busybox:1.36@sha256:" + hexA,
			want: "docker.io/library/busybox:1.36@sha256:" + hexA, tag: "docker.io/library/busybox:1.36", key: "docker.io/library/busybox@sha256:" + hexA},
		{desc: "already normalized", in: "docker.io/library/busybox:latest", want: "docker.io/library/busybox:latest",
			tag: "docker.io/library/busybox:latest", key: "docker.io/library/busybox:latest"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			named, err := ParseRef(tc.in)
			require.NoError(t, err)
			assert.Equal(t, tc.want, named.String())
			assert.Equal(t, tc.tag, repoTag(named))
			assert.Equal(t, tc.key, lookupKey(named))
			_, digested := named.(reference.Digested)
			assert.Equal(t, strings.Contains(tc.in, "@"), digested)
		})
	}
}

func TestParseRefInvalid(t *testing.T) {
	for _, tc := range []struct{ desc, in string }{
		{"empty", ""},
		{"upper case name", "BusyBox"},
		{"empty tag", "busybox:"},
		{"image id", hexA},
		{"short digest", "busybox@sha256:abc"},
		{"unknown digest algorithm", "busybox@md5:" + hexA},
		{"space", "busy box"},
		{"only a tag", ":latest"},
		{"double slash", "a//b"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			_, err := ParseRef(tc.in)
			require.Error(t, err)
			assert.True(t, errdefs.IsInvalidArgument(err), "error %v is not InvalidArgument", err)
		})
	}
}

func TestIDForm(t *testing.T) {
	for _, tc := range []struct {
		desc, in string
		hex      string
		full, ok bool
	}{
		{"full with algorithm", "sha256:" + hexA, hexA, true, true},
		{"full hex", hexA, hexA, true, true},
		{"short", hexA[:12], hexA[:12], false, true},
		{"short with algorithm", "sha256:" + hexA[:5], hexA[:5], false, true},
		{"name", "busybox", "", false, false},
		{"upper case hex", strings.ToUpper(hexA[:12]), "", false, false},
		{"too long", hexA + "a", "", false, false},
		{"algorithm only", "sha256:", "", false, false},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			hex, full, ok := idForm(tc.in)
			assert.Equal(t, tc.hex, hex)
			assert.Equal(t, tc.full, full)
			assert.Equal(t, tc.ok, ok)
		})
	}
}
