package registry

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

func get(t *testing.T, url, user, pass string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	require.NoError(t, err)
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	return resp.StatusCode
}

func TestStartAnonymous(t *testing.T) {
	r := Start(t)
	require.Equal(t, "http://"+r.Addr(), r.URL())
	require.Equal(t, http.StatusOK, get(t, r.URL()+"/v2/", "", ""))
	user, pass := r.Credentials()
	require.Empty(t, user)
	require.Empty(t, pass)
}

func TestStartBasicAuth(t *testing.T) {
	r := Start(t, WithBasicAuth("alice", "s3cret"))
	require.Equal(t, http.StatusUnauthorized, get(t, r.URL()+"/v2/", "", ""))
	require.Equal(t, http.StatusUnauthorized, get(t, r.URL()+"/v2/", "alice", "wrong"))
	require.Equal(t, http.StatusOK, get(t, r.URL()+"/v2/", "alice", "s3cret"))
}

func TestStopOnCleanup(t *testing.T) {
	var addr string
	t.Run("run", func(t *testing.T) {
		addr = Start(t).Addr()
	})
	_, err := http.Get("http://" + addr + "/v2/")
	require.Error(t, err, "the registry must be gone once its test ended")
}
