package imagestore

import (
	"bufio"
	"bytes"
	"io"
	"math/rand/v2"
	"os/exec"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/stretchr/testify/require"
)

func gzipped(t *testing.T, data []byte, name string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Name = name
	_, err := zw.Write(data)
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	return buf.Bytes()
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{1})
	_, _ = r.Read(b)
	return b
}

func TestStartsWithStoredBlock(t *testing.T) {
	text := []byte(strings.Repeat("the quick brown fox jumps over the lazy dog ", 20000))
	for _, tc := range []struct {
		desc string
		data []byte
		want bool
	}{
		{"random data is stored", gzipped(t, randomBytes(1<<20), ""), true},
		{"random data with a file name header", gzipped(t, randomBytes(1<<20), "layer.tar"), true},
		{"text is compressed", gzipped(t, text, ""), false},
		{"text with a file name header", gzipped(t, text, "layer.tar"), false},
		{"not gzip", []byte("plain tar bytes, not gzip at all"), false},
		{"truncated header", []byte{0x1f, 0x8b, 8, 0}, false},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			require.Equal(t, tc.want, startsWithStoredBlock(bufio.NewReader(bytes.NewReader(tc.data))))
		})
	}
}

func igzip(t *testing.T) []string {
	t.Helper()
	p, err := exec.LookPath("igzip")
	require.NoError(t, err, "igzip (Debian package isal) is installed by hack/install-deps.sh")
	return []string{p, "-d", "-c"}
}

func TestExternalDecompressor(t *testing.T) {
	text := []byte(strings.Repeat("layers of text inflate through igzip\n", 100000))
	t.Run("inflates", func(t *testing.T) {
		d, err := newExternalDecompressor(igzip(t), bytes.NewReader(gzipped(t, text, "")))
		require.NoError(t, err)
		got, err := io.ReadAll(d)
		require.NoError(t, err)
		require.Equal(t, text, got)
		require.NoError(t, d.Close())
	})
	t.Run("corrupt input is an error", func(t *testing.T) {
		z := gzipped(t, text, "")
		for i := 40; i < 200; i++ {
			z[i] ^= 0x5a
		}
		d, err := newExternalDecompressor(igzip(t), bytes.NewReader(z))
		require.NoError(t, err)
		_, err = io.ReadAll(d)
		require.Error(t, err)
		require.NoError(t, d.Close())
	})
	t.Run("closing early stops the child", func(t *testing.T) {
		d, err := newExternalDecompressor(igzip(t), bytes.NewReader(gzipped(t, text, "")))
		require.NoError(t, err)
		buf := make([]byte, 1024)
		_, err = io.ReadFull(d, buf)
		require.NoError(t, err)
		require.NoError(t, d.Close())
		require.NotNil(t, d.cmd.ProcessState, "the child was reaped")
	})
	t.Run("it runs as nobody", func(t *testing.T) {
		d, err := newExternalDecompressor([]string{"/bin/sh", "-c", "id -u; cat >/dev/null"}, bytes.NewReader([]byte("x")))
		require.NoError(t, err)
		out, err := io.ReadAll(d)
		require.NoError(t, err)
		require.Equal(t, "65534\n", string(out))
	})
}
