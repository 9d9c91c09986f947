package spec

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestUser(t *testing.T) {
	for _, tc := range []struct {
		desc      string
		imageUser string
		sec       Security
		want      specs.User
		wantErr   string
	}{
		{desc: "image default is root", want: specs.User{UID: 0, GID: 0, AdditionalGids: []uint32{0}}},
		{desc: "image numeric uid in passwd", imageUser: "1000", want: specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{1000, 10, 29}}},
		{desc: "image numeric uid not in passwd", imageUser: "4242", want: specs.User{UID: 4242, GID: 0, AdditionalGids: []uint32{0}}},
		{desc: "image uid:gid", imageUser: "4242:77", want: specs.User{UID: 4242, GID: 77, AdditionalGids: []uint32{77}}},
		{desc: "image name", imageUser: "bob", want: specs.User{UID: 1001, GID: 1001, AdditionalGids: []uint32{1001, 10, 50}}},
		{desc: "image name:group", imageUser: "alice:staff", want: specs.User{UID: 1000, GID: 50, AdditionalGids: []uint32{50, 10, 29}}},
		{desc: "image name:gid", imageUser: "alice:7", want: specs.User{UID: 1000, GID: 7, AdditionalGids: []uint32{7, 10, 29}}},
		{desc: "image uid:group name", imageUser: "0:wheel", want: specs.User{UID: 0, GID: 10, AdditionalGids: []uint32{10}}},
		{desc: "image unknown name", imageUser: "mallory", wantErr: "user mallory not found in /etc/passwd"},
		{desc: "image unknown group", imageUser: "alice:nogroup", wantErr: "group nogroup not found in /etc/group"},
		{desc: "image uid over 2^31", imageUser: "2147483648", wantErr: "out of range"},
		{desc: "image uid 2^32 never wraps to root", imageUser: "4294967296", wantErr: "out of range"},
		{desc: "image gid over 2^31", imageUser: "0:4294967296", wantErr: "out of range"},
		{desc: "image negative uid is a name", imageUser: "-1", wantErr: "not found"},
		{desc: "passwd entry with huge uid is ignored", imageUser: "evil", wantErr: "user evil not found"},
		{desc: "passwd entry with huge gid is ignored", imageUser: "wrap", wantErr: "user wrap not found"},
		{desc: "runAsUser wins over image", imageUser: "bob", sec: Security{RunAsUser: ptr[int64](1000)},
			want: specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{1000, 10, 29}}},
		{desc: "runAsUser not in passwd", sec: Security{RunAsUser: ptr[int64](5000)}, want: specs.User{UID: 5000, GID: 0, AdditionalGids: []uint32{0}}},
		{desc: "runAsUser and runAsGroup", sec: Security{RunAsUser: ptr[int64](1000), RunAsGroup: ptr[int64](3000)},
			want: specs.User{UID: 1000, GID: 3000, AdditionalGids: []uint32{3000, 10, 29}}},
		{desc: "runAsUser out of range", sec: Security{RunAsUser: ptr[int64](1 << 32)}, wantErr: "out of range"},
		{desc: "runAsUser negative", sec: Security{RunAsUser: ptr[int64](-1)}, wantErr: "out of range"},
		{desc: "runAsGroup out of range", sec: Security{RunAsUser: ptr[int64](1), RunAsGroup: ptr[int64](1 << 31)}, wantErr: "out of range"},
		{desc: "runAsUsername", sec: Security{RunAsUsername: "alice"}, want: specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{1000, 10, 29}}},
		{desc: "runAsUsername unknown", sec: Security{RunAsUsername: "zed"}, wantErr: "user zed not found in /etc/passwd"},
		{desc: "supplemental groups merge", sec: Security{RunAsUser: ptr[int64](1000), SupplementalGroups: []int64{500, 10}},
			want: specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{1000, 10, 29, 500}}},
		{desc: "supplemental groups strict", sec: Security{RunAsUser: ptr[int64](1000), SupplementalGroups: []int64{500, 1000},
			SupplementalGroupsPolicy: SupplementalGroupsStrict}, want: specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{1000, 500}}},
		{desc: "strict without groups", sec: Security{RunAsUsername: "bob", SupplementalGroupsPolicy: SupplementalGroupsStrict},
			want: specs.User{UID: 1001, GID: 1001, AdditionalGids: []uint32{1001}}},
		{desc: "supplemental group out of range", sec: Security{SupplementalGroups: []int64{1 << 40}}, wantErr: "out of range"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			in := baseInput(t)
			in.Image.User = tc.imageUser
			in.Linux.Security = tc.sec
			s, err := Generate(in)
			if tc.wantErr != "" {
				requireInvalid(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, s.Process.User)
		})
	}
}

// TestUserNoPasswd: an image without /etc/passwd still runs numeric users.
func TestUserNoPasswd(t *testing.T) {
	in := baseInput(t)
	in.RootfsPath = t.TempDir()
	in.Image.User = "123:456"
	s, err := Generate(in)
	require.NoError(t, err)
	assert.Equal(t, specs.User{UID: 123, GID: 456, AdditionalGids: []uint32{456}}, s.Process.User)

	in.Image.User = "alice"
	_, err = Generate(in)
	requireInvalid(t, err, "user alice not found in /etc/passwd")
}

// TestUserHostileRootfs: /etc/passwd and /etc/group come from the image and
// must be read inside the rootfs, never from the host.
func TestUserHostileRootfs(t *testing.T) {
	// A "host" passwd outside the rootfs that knows a user the image does not.
	hostDir := t.TempDir()
	hostPasswd := filepath.Join(hostDir, "passwd")
	writeFile(t, hostPasswd, "hostonly:x:0:0::/:/bin/sh\n")

	t.Run("absolute symlink to a host file", func(t *testing.T) {
		in := baseInput(t)
		p := filepath.Join(in.RootfsPath, "etc/passwd")
		require.NoError(t, os.Remove(p))
		require.NoError(t, os.Symlink(hostPasswd, p))
		in.Image.User = "hostonly"
		_, err := Generate(in)
		requireInvalid(t, err, "user hostonly not found")
	})
	t.Run("relative symlink climbing out", func(t *testing.T) {
		in := baseInput(t)
		p := filepath.Join(in.RootfsPath, "etc/passwd")
		require.NoError(t, os.Remove(p))
		require.NoError(t, os.Symlink(strings.Repeat("../", 20)+strings.TrimPrefix(hostPasswd, "/"), p))
		in.Image.User = "hostonly"
		_, err := Generate(in)
		requireInvalid(t, err, "user hostonly not found")
	})
	t.Run("symlink to the host's /etc/passwd resolves to itself", func(t *testing.T) {
		in := baseInput(t)
		p := filepath.Join(in.RootfsPath, "etc/passwd")
		require.NoError(t, os.Remove(p))
		require.NoError(t, os.Symlink("/etc/passwd", p))
		in.Image.User = "root" // exists on the host
		_, err := Generate(in)
		require.Error(t, err) // a symlink loop inside the rootfs, not the host's root entry
	})
	t.Run("absolute symlink is followed inside the rootfs", func(t *testing.T) {
		in := baseInput(t)
		writeFile(t, filepath.Join(in.RootfsPath, hostPasswd), "inroot:x:77:78::/:/bin/sh\n")
		p := filepath.Join(in.RootfsPath, "etc/passwd")
		require.NoError(t, os.Remove(p))
		require.NoError(t, os.Symlink(hostPasswd, p))
		in.Image.User = "inroot"
		s, err := Generate(in)
		require.NoError(t, err)
		assert.Equal(t, uint32(77), s.Process.User.UID)
		assert.Equal(t, uint32(78), s.Process.User.GID)
	})
	t.Run("fifo does not block", func(t *testing.T) {
		in := baseInput(t)
		p := filepath.Join(in.RootfsPath, "etc/passwd")
		require.NoError(t, os.Remove(p))
		require.NoError(t, syscall.Mkfifo(p, 0o644))
		in.Image.User = "alice"
		done := make(chan error, 1)
		go func() { _, err := Generate(in); done <- err }()
		select {
		case err := <-done:
			requireInvalid(t, err, "not a regular file")
		case <-time.After(5 * time.Second):
			t.Fatal("Generate blocked on a FIFO /etc/passwd")
		}
	})
	t.Run("oversized passwd", func(t *testing.T) {
		in := baseInput(t)
		writeFile(t, filepath.Join(in.RootfsPath, "etc/passwd"), testPasswd+strings.Repeat("#", 2<<20))
		in.Image.User = "alice"
		_, err := Generate(in)
		requireInvalid(t, err, "larger than")
	})
}

// groupsPasswd and groupsGroup are critest's image-predefined-group (its
// default-user, uid 1000, is also in group-defined-in-image, gid 50000)
// plus multi, a user in several image groups.
const (
	groupsPasswd = `root:x:0:0:root:/root:/bin/sh
default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh
multi:x:2000:2000::/home/multi:/bin/sh
`
	groupsGroup = `root:x:0:
default-user:x:1000:
group-defined-in-image:x:50000:default-user,multi
multi:x:2000:
g1:x:60000:multi
g2:x:60001:other, multi
g3:x:60002:other
`
)

// TestSupplementalGroupsPolicy: Merge adds the image groups that list the
// user, Strict never does; the primary GID always leads additionalGids.
func TestSupplementalGroupsPolicy(t *testing.T) {
	const (
		merge  = SupplementalGroupsMerge
		strict = SupplementalGroupsStrict
	)
	for _, tc := range []struct {
		desc      string
		imageUser string
		sec       Security
		want      specs.User
	}{
		// critest "SupplementalGroupsPolicy=Merge": id -G prints 1000 1234 50000.
		{desc: "critest merge", imageUser: "1000",
			sec:  Security{RunAsUser: ptr[int64](1000), SupplementalGroups: []int64{1234}, SupplementalGroupsPolicy: merge},
			want: specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{1000, 1234, 50000}}},
		// critest "SupplementalGroupsPolicy=Strict": id -G prints 1000 1234.
		{desc: "critest strict", imageUser: "1000",
			sec:  Security{RunAsUser: ptr[int64](1000), SupplementalGroups: []int64{1234}, SupplementalGroupsPolicy: strict},
			want: specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{1000, 1234}}},
		{desc: "image user merge", imageUser: "1000",
			want: specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{1000, 50000}}},
		{desc: "image user strict", imageUser: "1000", sec: Security{SupplementalGroupsPolicy: strict},
			want: specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{1000}}},
		{desc: "image user:group strict", imageUser: "default-user:group-defined-in-image", sec: Security{SupplementalGroupsPolicy: strict},
			want: specs.User{UID: 1000, GID: 50000, AdditionalGids: []uint32{50000}}},
		// The Kubernetes blog's example: runAsUser, runAsGroup 3000,
		// supplementalGroups 4000.
		{desc: "user in several groups with runAsGroup merge",
			sec:  Security{RunAsUser: ptr[int64](2000), RunAsGroup: ptr[int64](3000), SupplementalGroups: []int64{4000}},
			want: specs.User{UID: 2000, GID: 3000, AdditionalGids: []uint32{3000, 4000, 50000, 60000, 60001}}},
		{desc: "user in several groups with runAsGroup strict",
			sec:  Security{RunAsUser: ptr[int64](2000), RunAsGroup: ptr[int64](3000), SupplementalGroups: []int64{4000}, SupplementalGroupsPolicy: strict},
			want: specs.User{UID: 2000, GID: 3000, AdditionalGids: []uint32{3000, 4000}}},
		{desc: "runAsUsername merge", sec: Security{RunAsUsername: "multi"},
			want: specs.User{UID: 2000, GID: 2000, AdditionalGids: []uint32{2000, 50000, 60000, 60001}}},
		{desc: "runAsUsername strict", sec: Security{RunAsUsername: "multi", SupplementalGroupsPolicy: strict},
			want: specs.User{UID: 2000, GID: 2000, AdditionalGids: []uint32{2000}}},
		{desc: "runAsUsername and runAsGroup strict keeps requested image groups",
			sec:  Security{RunAsUsername: "multi", RunAsGroup: ptr[int64](3000), SupplementalGroups: []int64{50000}, SupplementalGroupsPolicy: strict},
			want: specs.User{UID: 2000, GID: 3000, AdditionalGids: []uint32{3000, 50000}}},
		{desc: "merge drops duplicates of the primary and image groups",
			sec:  Security{RunAsUser: ptr[int64](1000), SupplementalGroups: []int64{50000, 1000, 1234, 1234}},
			want: specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{1000, 1234, 50000}}},
		{desc: "uid not in passwd merge", sec: Security{RunAsUser: ptr[int64](4242), SupplementalGroups: []int64{1234}},
			want: specs.User{UID: 4242, GID: 0, AdditionalGids: []uint32{0, 1234}}},
		{desc: "uid not in passwd strict", sec: Security{RunAsUser: ptr[int64](4242), SupplementalGroups: []int64{1234}, SupplementalGroupsPolicy: strict},
			want: specs.User{UID: 4242, GID: 0, AdditionalGids: []uint32{0, 1234}}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			in := baseInput(t)
			writeFile(t, filepath.Join(in.RootfsPath, "etc/passwd"), groupsPasswd)
			writeFile(t, filepath.Join(in.RootfsPath, "etc/group"), groupsGroup)
			in.Image.User = tc.imageUser
			in.Linux.Security = tc.sec
			s, err := Generate(in)
			require.NoError(t, err)
			assert.Equal(t, tc.want, s.Process.User)
		})
	}
}
