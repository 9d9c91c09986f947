package registry

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/containerd/errdefs"
)

// maxTransports bounds the transports kept for hosts with their own TLS
// settings or dial timeout.
const maxTransports = 32

// transports hands out shared http.Transports, one per distinct TLS
// configuration and dial timeout, so that connections are reused across
// pulls although hosts.toml is read anew for each.
type transports struct {
	timeouts Timeouts
	base     *http.Transport

	// mu guards the fields below.
	mu    sync.Mutex
	byKey map[string]*http.Transport
}

func newTransports(t Timeouts) *transports {
	return &transports{
		timeouts: t,
		base:     newTransport(t, t.Dial, &tls.Config{MinVersion: tls.VersionTLS12}),
		byKey:    map[string]*http.Transport{},
	}
}

// newTransport is tuned for streaming large layers from few hosts, several
// at once: keep-alive with enough idle connections per host, a large read
// buffer, HTTP/2 where TLS offers it, and bodies passed through as they are
// (no transparent gzip). It sets no overall timeout: a body may take as
// long as it makes progress, which the caller watches.
func newTransport(t Timeouts, dial time.Duration, tlsConfig *tls.Config) *http.Transport {
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   dial,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:     true,
		TLSClientConfig:       tlsConfig,
		TLSHandshakeTimeout:   t.TLSHandshake,
		ResponseHeaderTimeout: t.ResponseHeader,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   16,
		DisableCompression:    true,
		ReadBufferSize:        128 << 10,
		WriteBufferSize:       32 << 10,
	}
}

// get returns the transport for h. Its CA and client files are read each
// time, so that a changed file takes effect with the next pull.
func (ts *transports) get(h *hostConfig) (*http.Transport, error) {
	if !h.explicitTLS() && h.dialTimeout == 0 {
		return ts.base, nil
	}
	dial := ts.timeouts.Dial
	if h.dialTimeout > 0 {
		dial = h.dialTimeout
	}
	key, cfg, err := tlsConfigFor(h, dial)
	if err != nil {
		return nil, err
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if t, ok := ts.byKey[key]; ok {
		return t, nil
	}
	if len(ts.byKey) >= maxTransports {
		for k, t := range ts.byKey {
			t.CloseIdleConnections()
			delete(ts.byKey, k)
			break
		}
	}
	t := newTransport(ts.timeouts, dial, cfg)
	ts.byKey[key] = t
	return t, nil
}

// closeIdle closes the idle connections of every transport.
func (ts *transports) closeIdle() {
	ts.base.CloseIdleConnections()
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for _, t := range ts.byKey {
		t.CloseIdleConnections()
	}
}

// tlsConfigFor builds the TLS configuration of h and a key naming it: a
// digest of the settings and of the files' contents.
func tlsConfigFor(h *hostConfig, dial time.Duration) (string, *tls.Config, error) {
	sum := sha256.New()
	fmt.Fprintf(sum, "dial=%d\n", dial)
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if h.skipVerify != nil {
		// skip_verify is the operator's explicit choice in hosts.toml (or
		// containerd's default for a loopback registry).
		cfg.InsecureSkipVerify = *h.skipVerify //nolint:gosec // configured per host
		fmt.Fprintf(sum, "skip=%t\n", *h.skipVerify)
	}
	if len(h.caFiles) > 0 {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		for _, f := range h.caFiles {
			data, err := os.ReadFile(f)
			if err != nil {
				return "", nil, fmt.Errorf("read ca file: %w: %w", err, errdefs.ErrFailedPrecondition)
			}
			if !pool.AppendCertsFromPEM(data) {
				return "", nil, fmt.Errorf("ca file %s holds no PEM certificate: %w", f, errdefs.ErrFailedPrecondition)
			}
			fmt.Fprintf(sum, "ca=%d\n", len(data))
			sum.Write(data)
		}
		cfg.RootCAs = pool
	}
	for _, pair := range h.clientPairs {
		certPEM, err := os.ReadFile(pair[0])
		if err != nil {
			return "", nil, fmt.Errorf("read client certificate: %w: %w", err, errdefs.ErrFailedPrecondition)
		}
		keyPEM := certPEM
		if pair[1] != "" {
			if keyPEM, err = os.ReadFile(pair[1]); err != nil {
				return "", nil, fmt.Errorf("read client key: %w: %w", err, errdefs.ErrFailedPrecondition)
			}
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return "", nil, fmt.Errorf("load client certificate %s: %w: %w", pair[0], err, errdefs.ErrFailedPrecondition)
		}
		cfg.Certificates = append(cfg.Certificates, cert)
		fmt.Fprintf(sum, "client=%d,%d\n", len(certPEM), len(keyPEM))
		sum.Write(certPEM)
		sum.Write(keyPEM)
	}
	return hex.EncodeToString(sum.Sum(nil)), cfg, nil
}

// httpFallback retries a request to host as plain HTTP when its TLS
// handshake got an HTTP answer, and remembers that the host speaks plain
// HTTP (containerd's behaviour for loopback registries).
type httpFallback struct {
	next  http.RoundTripper
	host  string
	plain *sync.Map // host → struct{}: hosts known to speak plain HTTP
}

func (f *httpFallback) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "https" || req.URL.Host != f.host {
		return f.next.RoundTrip(req)
	}
	plain := req.Clone(req.Context())
	plain.URL.Scheme = "http"
	if _, known := f.plain.Load(f.host); !known {
		resp, err := f.next.RoundTrip(req)
		if err == nil || !isHTTPAnswerToTLS(err) {
			return resp, err
		}
		f.plain.Store(f.host, struct{}{})
		if req.Body != nil && req.Body != http.NoBody {
			if req.GetBody == nil {
				return nil, fmt.Errorf("retry %s over plain http: request body cannot be replayed", f.host)
			}
			body, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			plain.Body = body
		}
	}
	return f.next.RoundTrip(plain)
}

// isHTTPAnswerToTLS reports whether err is a TLS handshake that read an
// HTTP response instead of a TLS record.
func isHTTPAnswerToTLS(err error) bool {
	var rh tls.RecordHeaderError
	return errors.As(err, &rh) && string(rh.RecordHeader[:]) == "HTTP/"
}

// checkRedirect follows up to 10 redirects and drops the Authorization
// header once a redirect leaves the host it was meant for. (The standard
// library keeps it for a different port, or a subdomain, of the same name.)
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	if req.URL.Host != via[0].URL.Host {
		req.Header.Del("Authorization")
	}
	return nil
}
