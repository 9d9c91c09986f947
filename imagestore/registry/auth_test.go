package registry

import (
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
)

func TestParseChallenges(t *testing.T) {
	for _, tc := range []struct {
		desc   string
		values []string
		want   []challenge
	}{
		{
			desc:   "basic",
			values: []string{`Basic realm="Registry Realm"`},
			want:   []challenge{{scheme: "basic", params: map[string]string{"realm": "Registry Realm"}}},
		},
		{
			desc:   "bearer with service and scope",
			values: []string{`Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull"`},
			want: []challenge{{scheme: "bearer", params: map[string]string{
				"realm": "https://auth.docker.io/token", "service": "registry.docker.io", "scope": "repository:library/busybox:pull",
			}}},
		},
		{
			desc:   "two challenges in one header, spaces and case",
			values: []string{`Basic realm="a" , BEARER Realm = "https://t/token", Service=reg`},
			want: []challenge{
				{scheme: "basic", params: map[string]string{"realm": "a"}},
				{scheme: "bearer", params: map[string]string{"realm": "https://t/token", "service": "reg"}},
			},
		},
		{
			desc:   "challenges in several headers",
			values: []string{`Basic realm="a"`, `Bearer realm="b"`},
			want: []challenge{
				{scheme: "basic", params: map[string]string{"realm": "a"}},
				{scheme: "bearer", params: map[string]string{"realm": "b"}},
			},
		},
		{
			desc:   "escapes and commas inside quotes",
			values: []string{`Bearer realm="https://t/token?a=1,b=2",error="say \"hi\"",scope="repository:a:pull repository:b:pull"`},
			want: []challenge{{scheme: "bearer", params: map[string]string{
				"realm": "https://t/token?a=1,b=2", "error": `say "hi"`, "scope": "repository:a:pull repository:b:pull",
			}}},
		},
		{
			desc:   "unquoted url",
			values: []string{`Bearer realm=https://t.example/token,service=s`},
			want:   []challenge{{scheme: "bearer", params: map[string]string{"realm": "https://t.example/token", "service": "s"}}},
		},
		{
			desc:   "token68 and unterminated quote",
			values: []string{`Negotiate abc==, Bearer realm="https://t/x`},
			want: []challenge{
				{scheme: "negotiate", params: map[string]string{"abc": ""}},
				{scheme: "bearer", params: map[string]string{"realm": "https://t/x"}},
			},
		},
		{desc: "empty", values: []string{"", " , "}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			require.Equal(t, tc.want, parseChallenges(tc.values))
		})
	}
}

func TestPickChallenge(t *testing.T) {
	chs := parseChallenges([]string{`Basic realm="a", Bearer realm="https://t"`})
	ch, ok := pickChallenge(chs)
	require.True(t, ok)
	require.Equal(t, "bearer", ch.scheme, "bearer is preferred")

	ch, ok = pickChallenge(parseChallenges([]string{`Bearer service="no realm", Basic realm="a"`}))
	require.True(t, ok)
	require.Equal(t, "basic", ch.scheme, "a bearer challenge without realm cannot be answered")

	_, ok = pickChallenge(parseChallenges([]string{`Digest realm="a"`}))
	require.False(t, ok)
}

func TestHostCredentials(t *testing.T) {
	userPass := authCreds{username: "u", password: "p"}
	for _, tc := range []struct {
		desc     string
		creds    *Credentials
		registry string
		host     string
		want     authCreds
		wantErr  error
	}{
		{desc: "nil", registry: "docker.io", host: "registry-1.docker.io"},
		{desc: "no server address: every host", creds: &Credentials{Username: "u", Password: "p"}, registry: "reg.example", host: "mirror.example", want: userPass},
		{desc: "server address names the registry", creds: &Credentials{Username: "u", Password: "p", ServerAddress: "reg.example"}, registry: "reg.example", host: "mirror.example", want: userPass},
		{desc: "server address as url", creds: &Credentials{Username: "u", Password: "p", ServerAddress: "https://reg.example:5000/v2/"}, registry: "reg.example:5000", host: "reg.example:5000", want: userPass},
		{desc: "server address names the host contacted", creds: &Credentials{Username: "u", Password: "p", ServerAddress: "mirror.example"}, registry: "reg.example", host: "mirror.example", want: userPass},
		{desc: "server address names another registry", creds: &Credentials{Username: "u", Password: "p", ServerAddress: "other.example"}, registry: "reg.example", host: "reg.example"},
		{desc: "port matters", creds: &Credentials{Username: "u", Password: "p", ServerAddress: "reg.example:5001"}, registry: "reg.example:5000", host: "reg.example:5000"},
		{desc: "docker hub aliases", creds: &Credentials{Username: "u", Password: "p", ServerAddress: "https://index.docker.io/v1/"}, registry: "docker.io", host: "registry-1.docker.io", want: userPass},
		{desc: "auth decoded", creds: &Credentials{Auth: "dTpwOmFzcw=="}, registry: "r", host: "r", want: authCreds{username: "u", password: "p:ass"}},
		{desc: "auth not base64", creds: &Credentials{Auth: "%%%"}, registry: "r", host: "r", wantErr: errdefs.ErrInvalidArgument},
		{desc: "auth without colon", creds: &Credentials{Auth: "dXNlcg=="}, registry: "r", host: "r", wantErr: errdefs.ErrInvalidArgument},
		{desc: "username wins over auth", creds: &Credentials{Username: "u", Password: "p", Auth: "eDp5"}, registry: "r", host: "r", want: userPass},
		{desc: "tokens", creds: &Credentials{IdentityToken: "id", RegistryToken: "rt"}, registry: "r", host: "r", want: authCreds{identityToken: "id", registryToken: "rt"}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			got, err := hostCredentials(tc.creds, tc.registry, tc.host)
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestCredentialsKeyHidesSecrets(t *testing.T) {
	c := authCreds{username: "u", password: "topsecret"}
	require.NotContains(t, c.key(), "topsecret")
	require.NotEqual(t, c.key(), authCreds{username: "u", password: "other"}.key())
	require.Empty(t, authCreds{}.key())
}
