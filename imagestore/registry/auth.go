package registry

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sync/singleflight"
)

// authCreds are the credentials that apply to one host of a pull.
type authCreds struct {
	username, password string
	identityToken      string
	registryToken      string
}

func (c authCreds) empty() bool { return c == authCreds{} }

func (c authCreds) hasBasic() bool { return c.username != "" || c.password != "" }

// key identifies the credentials in the token cache without holding them.
func (c authCreds) key() string {
	if c.empty() {
		return ""
	}
	h := sha256.New()
	for _, s := range []string{c.username, c.password, c.identityToken, c.registryToken} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// hostCredentials returns the credentials of c that apply when pulling from
// registry through host. Without a ServerAddress they apply to every host of
// the registry (mirrors and upstream). With one, containerd's CRI plugin
// gives them only to a host that ServerAddress names; crid also gives them
// to every host of the registry ServerAddress names, so that a mirror
// configured for it receives them too. Docker Hub's aliases (docker.io,
// index.docker.io, registry-1.docker.io) name one registry.
func hostCredentials(c *Credentials, registry, host string) (authCreds, error) {
	if c.Empty() {
		return authCreds{}, nil
	}
	if c.ServerAddress != "" {
		sa := serverAddressHost(c.ServerAddress)
		if sa != canonicalHost(registry) && sa != canonicalHost(host) {
			return authCreds{}, nil
		}
	}
	ac := authCreds{
		username:      c.Username,
		password:      c.Password,
		identityToken: c.IdentityToken,
		registryToken: c.RegistryToken,
	}
	if !ac.hasBasic() && c.Auth != "" {
		decoded, err := base64.StdEncoding.DecodeString(strings.TrimSpace(c.Auth))
		if err != nil {
			return authCreds{}, fmt.Errorf("decode auth of credentials: %w", errdefs.ErrInvalidArgument)
		}
		user, pass, ok := strings.Cut(string(decoded), ":")
		if !ok {
			return authCreds{}, fmt.Errorf("auth of credentials is not user:password: %w", errdefs.ErrInvalidArgument)
		}
		ac.username, ac.password = user, strings.Trim(pass, "\x00")
	}
	return ac, nil
}

// serverAddressHost extracts the host of a CRI ServerAddress, which may be a
// URL ("https://index.docker.io/v1/") or a bare host ("reg.example:5000").
func serverAddressHost(addr string) string {
	addr = strings.TrimSpace(addr)
	if !strings.Contains(addr, "://") {
		addr = "//" + addr
	}
	u, err := url.Parse(addr)
	if err != nil {
		return ""
	}
	return canonicalHost(u.Host)
}

func canonicalHost(host string) string {
	host = strings.ToLower(host)
	switch host {
	case "docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com":
		return "docker.io"
	}
	return host
}

// bearerToken is a cached token and when it stops being used.
type bearerToken struct {
	value   string
	expires time.Time
}

// maxCachedTokens bounds the token cache; past it expired tokens are
// dropped, and if that is not enough, all of them.
const maxCachedTokens = 512

// tokenMargin is how long before its expiry a token stops being handed out.
const tokenMargin = 10 * time.Second

// tokenFetchTimeout bounds one token request, which runs detached from the
// pull that started it because concurrent pulls share it.
const tokenFetchTimeout = time.Minute

// authCache remembers, across pulls, which challenge each host answered
// with and the bearer tokens fetched, per host, scope and credentials.
type authCache struct {
	flight singleflight.Group
	now    func() time.Time

	// mu guards the fields below.
	mu         sync.Mutex
	challenges map[string]challenge   // by host base URL
	tokens     map[string]bearerToken // by tokenKey
}

func newAuthCache() *authCache {
	return &authCache{
		now:        time.Now,
		challenges: map[string]challenge{},
		tokens:     map[string]bearerToken{},
	}
}

func (c *authCache) challenge(host string) (challenge, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch, ok := c.challenges[host]
	return ch, ok
}

func (c *authCache) setChallenge(host string, ch challenge) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.challenges[host] = ch
}

func (c *authCache) cached(key string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.tokens[key]
	if !ok || !c.now().Add(tokenMargin).Before(t.expires) {
		return "", false
	}
	return t.value, true
}

func (c *authCache) store(key string, t bearerToken) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.tokens) >= maxCachedTokens {
		now := c.now()
		for k, v := range c.tokens {
			if !now.Before(v.expires) {
				delete(c.tokens, k)
			}
		}
		if len(c.tokens) >= maxCachedTokens {
			clear(c.tokens)
		}
	}
	c.tokens[key] = t
}

func (c *authCache) forget(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.tokens, key)
}

// tokenScopes are the scopes asked for: pull on repo, plus whatever the
// challenge named.
func tokenScopes(repo string, ch challenge) []string {
	scopes := []string{"repository:" + repo + ":pull"}
	for _, s := range strings.Fields(ch.params["scope"]) {
		if !slices.Contains(scopes, s) {
			scopes = append(scopes, s)
		}
	}
	return scopes
}

func tokenKey(host string, ch challenge, scopes []string, creds authCreds) string {
	sorted := slices.Clone(scopes)
	slices.Sort(sorted)
	return strings.Join([]string{host, ch.params["realm"], ch.params["service"], strings.Join(sorted, " "), creds.key()}, "\x00")
}

// token returns a bearer token for ep answering ch, from the cache or the
// token server. Concurrent requests for the same token share one fetch.
func (c *authCache) token(ctx context.Context, ep *endpoint, ch challenge, repo, userAgent string) (string, error) {
	scopes := tokenScopes(repo, ch)
	key := tokenKey(ep.base(), ch, scopes, ep.creds)
	if t, ok := c.cached(key); ok {
		return t, nil
	}
	res := c.flight.DoChan(key, func() (any, error) {
		if t, ok := c.cached(key); ok {
			return t, nil
		}
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), tokenFetchTimeout)
		defer cancel()
		t, err := fetchToken(fctx, ep.client, ch, scopes, ep.creds, userAgent, c.now)
		if err != nil {
			return "", err
		}
		c.store(key, t)
		return t.value, nil
	})
	select {
	case <-ctx.Done():
		return "", ctx.Err()
	case r := <-res:
		if r.Err != nil {
			return "", r.Err
		}
		return r.Val.(string), nil
	}
}

// forgetToken drops the token that ep would use for ch, after the registry
// refused it.
func (c *authCache) forgetToken(ep *endpoint, ch challenge, repo string) {
	c.forget(tokenKey(ep.base(), ch, tokenScopes(repo, ch), ep.creds))
}

// maxTokenResponse caps a token server's answer.
const maxTokenResponse = 1 << 20

// defaultTokenLifetime is the lifetime the token spec gives a token whose
// response has no expires_in.
const defaultTokenLifetime = 60 * time.Second

// fetchToken asks the token server of ch for a token with scopes. An
// identity token is exchanged with an OAuth2 refresh-token POST (as Docker
// does); a server that refuses the POST (400, 401, 404 or 405, as
// containerd tolerates) is then asked with a GET. Username and password go
// as basic auth on a GET; without credentials the GET is anonymous.
func fetchToken(ctx context.Context, client *http.Client, ch challenge, scopes []string, creds authCreds, userAgent string, now func() time.Time) (bearerToken, error) {
	realm, err := url.Parse(ch.params["realm"])
	if err != nil || (realm.Scheme != "https" && realm.Scheme != "http") || realm.Host == "" {
		return bearerToken{}, fmt.Errorf("bearer challenge has no usable realm %q: %w", ch.params["realm"], errdefs.ErrUnauthenticated)
	}
	service := ch.params["service"]
	if creds.identityToken != "" {
		t, err := postRefreshToken(ctx, client, realm, service, scopes, creds.identityToken, userAgent, now)
		var te *tokenStatusError
		if err == nil || !errors.As(err, &te) {
			return t, err
		}
		switch te.StatusCode {
		case http.StatusBadRequest, http.StatusUnauthorized, http.StatusNotFound, http.StatusMethodNotAllowed:
		default:
			return bearerToken{}, err
		}
		return getToken(ctx, client, realm, service, scopes, creds.username, creds.identityToken, userAgent, now)
	}
	return getToken(ctx, client, realm, service, scopes, creds.username, creds.password, userAgent, now)
}

func postRefreshToken(ctx context.Context, client *http.Client, realm *url.URL, service string, scopes []string, refresh, userAgent string, now func() time.Time) (bearerToken, error) {
	form := url.Values{}
	form.Set("grant_type", "refresh_token")
	form.Set("refresh_token", refresh)
	form.Set("service", service)
	form.Set("client_id", "crid")
	form.Set("scope", strings.Join(scopes, " "))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, realm.String(), strings.NewReader(form.Encode()))
	if err != nil {
		return bearerToken{}, fmt.Errorf("token request: %w", errdefs.ErrInvalidArgument)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return doToken(ctx, client, req, userAgent, now)
}

func getToken(ctx context.Context, client *http.Client, realm *url.URL, service string, scopes []string, user, secret, userAgent string, now func() time.Time) (bearerToken, error) {
	u := *realm
	q := u.Query()
	if service != "" {
		q.Set("service", service)
	}
	for _, s := range scopes {
		q.Add("scope", s)
	}
	if user != "" {
		q.Set("account", user)
	}
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return bearerToken{}, fmt.Errorf("token request: %w", errdefs.ErrInvalidArgument)
	}
	if user != "" || secret != "" {
		req.SetBasicAuth(user, secret)
	}
	return doToken(ctx, client, req, userAgent, now)
}

func doToken(ctx context.Context, client *http.Client, req *http.Request, userAgent string, now func() time.Time) (bearerToken, error) {
	req.Header.Set("User-Agent", userAgent)
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return bearerToken{}, fmt.Errorf("fetch token: %w", transportError(ctx, err))
	}
	if resp.StatusCode != http.StatusOK {
		return bearerToken{}, &tokenStatusError{newStatusError(resp)}
	}
	defer resp.Body.Close()
	var tr struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenResponse))
	if err != nil {
		return bearerToken{}, fmt.Errorf("read token response: %w", transportError(ctx, err))
	}
	if err := json.Unmarshal(body, &tr); err != nil {
		return bearerToken{}, fmt.Errorf("decode token response from %s: %w", redactURL(req.URL), errdefs.ErrUnknown)
	}
	t := bearerToken{value: tr.Token}
	if t.value == "" {
		t.value = tr.AccessToken
	}
	if t.value == "" {
		return bearerToken{}, fmt.Errorf("token response from %s has no token: %w", redactURL(req.URL), errdefs.ErrUnauthenticated)
	}
	lifetime := defaultTokenLifetime
	if tr.ExpiresIn > 0 {
		lifetime = time.Duration(min(tr.ExpiresIn, int64(24*time.Hour/time.Second))) * time.Second
	}
	t.expires = now().Add(lifetime)
	return t, nil
}

// tokenStatusError is a token server's unexpected answer. Unlike a
// registry's, a 404 from it says nothing about the image: it unwraps to
// ErrUnauthenticated, ErrPermissionDenied, ErrUnavailable or ErrUnknown.
type tokenStatusError struct {
	*StatusError
}

func (e *tokenStatusError) Error() string { return "fetch token: " + e.StatusError.Error() }

func (e *tokenStatusError) Unwrap() error {
	switch class := statusClass(e.StatusCode); class {
	case errdefs.ErrUnauthenticated, errdefs.ErrPermissionDenied, errdefs.ErrUnavailable:
		return class
	}
	return errdefs.ErrUnknown
}
