package registry

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
)

// writeServerCA writes the PEM certificate of a TLS test server to file.
func writeServerCA(t *testing.T, srv *httptest.Server, file string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(file), 0o755))
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	require.NoError(t, os.WriteFile(file, pemBytes, 0o644))
}

func TestCustomCA(t *testing.T) {
	img := newTestImage(t)
	f := newFakeTLSRegistry(t)
	want := img.serve(f, "app", "1")
	ref := "reg.example/app:1"

	for _, tc := range []struct {
		desc    string
		toml    string
		wantErr error
	}{
		{desc: "ca relative to the host directory", toml: "server = \"https://%s\"\nca = \"certs/ca.pem\"\n"},
		{desc: "ca list", toml: "server = \"https://%s\"\nca = [\"certs/ca.pem\"]\n"},
		{desc: "skip_verify", toml: "server = \"https://%s\"\nskip_verify = true\n"},
		{desc: "unknown authority", toml: "server = \"https://%s\"\n", wantErr: errdefs.ErrUnavailable},
		{desc: "missing ca file", toml: "server = \"https://%s\"\nca = \"nope.pem\"\n", wantErr: errdefs.ErrFailedPrecondition},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			r, dir := newTestResolver(t)
			writeServerCA(t, f.srv, filepath.Join(dir, "reg.example", "certs", "ca.pem"))
			writeHostsToml(t, dir, "reg.example", fmt.Sprintf(tc.toml, f.host()))
			desc, _, err := r.Resolve(t.Context(), mustRef(t, ref), nil)
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, want, desc)
		})
	}
}

// testCA is a certificate authority for client certificates.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T) testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "crid test ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return testCA{cert: cert, key: key}
}

// issueClient returns the PEM certificate and key of a client certificate.
func (ca testCA) issueClient(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "crid client"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	require.NoError(t, err)
	keyDER, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}

func TestClientCertificate(t *testing.T) {
	img := newTestImage(t)
	f := newFake()
	ca := newTestCA(t)
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	f.srv.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool, MinVersion: tls.VersionTLS12}
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	want := img.serve(f, "app", "1")

	certPEM, keyPEM := ca.issueClient(t)
	r, dir := newTestResolver(t)
	hostDir := filepath.Join(dir, "reg.example")
	writeServerCA(t, f.srv, filepath.Join(hostDir, "ca.pem"))
	require.NoError(t, os.WriteFile(filepath.Join(hostDir, "client.cert"), certPEM, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(hostDir, "client.key"), keyPEM, 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(hostDir, "both.pem"), append(append([]byte{}, certPEM...), keyPEM...), 0o600))

	for _, tc := range []struct {
		desc    string
		client  string
		wantErr bool
	}{
		{desc: "pair", client: `client = [["client.cert", "client.key"]]`},
		{desc: "one file", client: `client = "both.pem"`},
		{desc: "none", wantErr: true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			writeHostsToml(t, dir, "reg.example", fmt.Sprintf("server = \"https://%s\"\nca = \"ca.pem\"\n%s\n", f.host(), tc.client))
			desc, _, err := r.Resolve(t.Context(), mustRef(t, "reg.example/app:1"), nil)
			if tc.wantErr {
				require.ErrorIs(t, err, errdefs.ErrUnavailable)
				return
			}
			require.NoError(t, err)
			require.Equal(t, want, desc)
		})
	}

	t.Run("docker certs.d layout without hosts.toml", func(t *testing.T) {
		dockerDir := filepath.Join(dir, f.host())
		require.NoError(t, os.MkdirAll(dockerDir, 0o755))
		writeServerCA(t, f.srv, filepath.Join(dockerDir, "ca.crt"))
		require.NoError(t, os.WriteFile(filepath.Join(dockerDir, "client.cert"), certPEM, 0o644))
		require.NoError(t, os.WriteFile(filepath.Join(dockerDir, "client.key"), keyPEM, 0o600))
		desc, _, err := r.Resolve(t.Context(), mustRef(t, f.host()+"/app:1"), nil)
		require.NoError(t, err)
		require.Equal(t, want, desc)
	})
}

func TestLoopbackDefaults(t *testing.T) {
	img := newTestImage(t)

	t.Run("TLS registry, unverified", func(t *testing.T) {
		f := newFakeTLSRegistry(t)
		want := img.serve(f, "app", "1")
		r, _ := newTestResolver(t)
		desc, _, err := r.Resolve(t.Context(), mustRef(t, f.host()+"/app:1"), nil)
		require.NoError(t, err)
		require.Equal(t, want, desc)
	})

	t.Run("plain HTTP registry, remembered", func(t *testing.T) {
		f := newFake()
		var conns atomic.Int32
		f.srv = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
		f.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		}
		f.srv.Start()
		t.Cleanup(f.srv.Close)
		want := img.serve(f, "app", "1")
		r, _ := newTestResolver(t)

		desc, _, err := r.Resolve(t.Context(), mustRef(t, f.host()+"/app:1"), nil)
		require.NoError(t, err)
		require.Equal(t, want, desc)
		require.Equal(t, int32(2), conns.Load(), "one refused TLS handshake, one plain connection")
		_, _, err = r.Resolve(t.Context(), mustRef(t, f.host()+"/app:1"), nil)
		require.NoError(t, err)
		require.Equal(t, int32(2), conns.Load(), "no second TLS attempt, the connection is reused")
	})

	t.Run("localhost", func(t *testing.T) {
		f := newFakeRegistry(t)
		want := img.serve(f, "app", "1")
		_, port, err := net.SplitHostPort(f.host())
		require.NoError(t, err)
		r, _ := newTestResolver(t)
		desc, _, err := r.Resolve(t.Context(), mustRef(t, "localhost:"+port+"/app:1"), nil)
		require.NoError(t, err)
		require.Equal(t, want, desc)
	})

	t.Run("http:// host in hosts.toml is plain HTTP", func(t *testing.T) {
		f := newFakeRegistry(t)
		want := img.serve(f, "app", "1")
		r, dir := newTestResolver(t)
		writeHostsToml(t, dir, "reg.example", fmt.Sprintf("server = \"http://%s\"\n", f.host()))
		desc, _, err := r.Resolve(t.Context(), mustRef(t, "reg.example/app:1"), nil)
		require.NoError(t, err)
		require.Equal(t, want, desc)
	})

	t.Run("http:// host with TLS settings tries HTTPS first", func(t *testing.T) {
		plain := newFakeRegistry(t)
		img.serve(plain, "app", "1")
		secure := newFakeTLSRegistry(t)
		img.serve(secure, "app", "1")
		r, dir := newTestResolver(t)
		writeHostsToml(t, dir, "reg.example", fmt.Sprintf("[host.\"http://%s\"]\nskip_verify = true\n[host.\"http://%s\"]\nskip_verify = true\n", secure.host(), plain.host()))
		_, _, err := r.Resolve(t.Context(), mustRef(t, "reg.example/app:1"), nil)
		require.NoError(t, err, "the TLS server answers HTTPS")
		require.Len(t, secure.seen(), 1)
		require.Empty(t, plain.seen())

		writeHostsToml(t, dir, "reg.example", fmt.Sprintf("server = \"http://%s\"\nskip_verify = true\n", plain.host()))
		_, _, err = r.Resolve(t.Context(), mustRef(t, "reg.example/app:1"), nil)
		require.NoError(t, err, "the plain server is reached after the TLS attempt")
		require.Len(t, plain.seen(), 1)
	})
}
