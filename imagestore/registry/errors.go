package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/containerd/errdefs"
)

// StatusError is a registry answering with an HTTP status the operation did
// not expect. It unwraps to the errdefs class of the status: 401
// ErrUnauthenticated, 403 ErrPermissionDenied, 404 ErrNotFound, 408, 429
// and 5xx ErrUnavailable, anything else ErrUnknown.
type StatusError struct {
	Method string
	// URL is the request's URL without its query (which may hold a
	// signature after a redirect to a storage service).
	URL        string
	StatusCode int
	// Codes are the distribution-spec error codes of the body
	// ("MANIFEST_UNKNOWN"), if it had any.
	Codes []string
	// Message is the first error message of the body.
	Message string
}

func (e *StatusError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: %d %s", e.Method, e.URL, e.StatusCode, http.StatusText(e.StatusCode))
	if len(e.Codes) > 0 {
		fmt.Fprintf(&b, " (%s", strings.Join(e.Codes, ", "))
		if e.Message != "" {
			fmt.Fprintf(&b, ": %s", e.Message)
		}
		b.WriteString(")")
	}
	return b.String()
}

// Unwrap returns the errdefs class of the status.
func (e *StatusError) Unwrap() error { return statusClass(e.StatusCode) }

func statusClass(code int) error {
	switch {
	case code == http.StatusUnauthorized:
		return errdefs.ErrUnauthenticated
	case code == http.StatusForbidden:
		return errdefs.ErrPermissionDenied
	case code == http.StatusNotFound:
		return errdefs.ErrNotFound
	case code == http.StatusRequestTimeout, code == http.StatusTooManyRequests, code >= 500:
		return errdefs.ErrUnavailable
	default:
		return errdefs.ErrUnknown
	}
}

// maxErrorBody caps how much of an error response is read.
const maxErrorBody = 16 << 10

// newStatusError reads the (small) error body of resp, closes it and
// describes the response.
func newStatusError(resp *http.Response) *StatusError {
	defer resp.Body.Close()
	e := &StatusError{StatusCode: resp.StatusCode}
	if req := resp.Request; req != nil {
		e.Method = req.Method
		e.URL = redactURL(req.URL)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var doc struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &doc) == nil {
		for _, d := range doc.Errors {
			if d.Code != "" {
				e.Codes = append(e.Codes, d.Code)
			}
			if e.Message == "" {
				e.Message = d.Message
			}
		}
	}
	return e
}

// redactURL drops the query and any user info.
func redactURL(u *url.URL) string {
	if u == nil {
		return ""
	}
	c := *u
	c.User = nil
	c.RawQuery = ""
	c.ForceQuery = false
	c.Fragment = ""
	return c.String()
}

// transportError classifies an error of http.Client.Do: the caller's
// context ending stays as it is, anything else is a connection problem
// (ErrUnavailable). The URL in the message loses its query.
func transportError(ctx context.Context, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if u, perr := url.Parse(ue.URL); perr == nil {
			ue.URL = redactURL(u)
		}
	}
	if ctx.Err() != nil {
		return err
	}
	return fmt.Errorf("%w: %w", err, errdefs.ErrUnavailable)
}

// hostError is what one host answered.
type hostError struct {
	host string
	err  error
}

// hostsError reports an operation that failed on every host it tried. Its
// message names each host and why it failed. It unwraps to the error of
// the last host tried: hosts.toml lists mirrors first and the upstream, the
// authority on what exists, last.
type hostsError struct {
	op     string
	failed []hostError
}

func (e *hostsError) add(host string, err error) {
	e.failed = append(e.failed, hostError{host: host, err: err})
}

func (e *hostsError) Error() string {
	var b strings.Builder
	b.WriteString(e.op)
	if len(e.failed) > 1 {
		fmt.Fprintf(&b, " (all %d hosts failed)", len(e.failed))
	}
	b.WriteString(":")
	for i, f := range e.failed {
		if i > 0 {
			b.WriteString(";")
		}
		fmt.Fprintf(&b, " [%s] %v", f.host, f.err)
	}
	return b.String()
}

func (e *hostsError) Unwrap() error {
	if len(e.failed) == 0 {
		return nil
	}
	return e.failed[len(e.failed)-1].err
}
