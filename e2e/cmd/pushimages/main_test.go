package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/crid-dev/crid/internal/testutil/registry"
)

func TestPushBasicSet(t *testing.T) {
	reg := registry.Start(t, registry.WithBasicAuth("crid", "pw"))
	cache := t.TempDir()
	var out, errOut bytes.Buffer
	args := []string{"-registry", reg.Addr(), "-set", "basic", "-cache", cache, "-username", "crid", "-password", "pw", "-json"}
	require.NoError(t, run(t.Context(), args, &out, &errOut), errOut.String())

	var refs []string
	digests := map[string]string{}
	for line := range strings.Lines(out.String()) {
		var r result
		require.NoError(t, json.Unmarshal([]byte(line), &r))
		refs = append(refs, r.Ref)
		digests[r.Ref] = r.Digest
		require.NotEmpty(t, r.Images)
	}
	require.Equal(t, []string{
		reg.Addr() + "/crid-test/busybox:latest",
		reg.Addr() + "/crid-test/busybox-oci:latest",
		reg.Addr() + "/crid-test/multiarch:latest",
		reg.Addr() + "/crid-test/multiarch-docker:latest",
		reg.Addr() + "/crid-test/layered:latest",
	}, refs)

	req, err := http.NewRequestWithContext(t.Context(), http.MethodHead, reg.URL()+"/v2/crid-test/layered/manifests/latest", nil)
	require.NoError(t, err)
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
	req.SetBasicAuth("crid", "pw")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, digests[reg.Addr()+"/crid-test/layered:latest"], resp.Header.Get("Docker-Content-Digest"))

	// Text output, from the warm cache, names the same digests.
	out.Reset()
	args = []string{"-registry", "http://" + reg.Addr(), "-cache", cache, "-username", "crid", "-password", "pw"}
	require.NoError(t, run(t.Context(), args, &out, &errOut), errOut.String())
	for ref, d := range digests {
		require.Contains(t, out.String(), ref+"@"+d)
	}
}

func TestUsageErrors(t *testing.T) {
	var out, errOut bytes.Buffer
	require.ErrorContains(t, run(t.Context(), nil, &out, &errOut), "-registry is required")
	require.ErrorContains(t, run(t.Context(), []string{"-registry", "127.0.0.1:1", "-set", "nope"}, &out, &errOut), `unknown image set "nope"`)
}
