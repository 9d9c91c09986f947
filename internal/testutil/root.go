// Package testutil holds helpers shared by crid's tests.
package testutil

import (
	"os"
	"testing"
)

// RequiresRoot fails the test when it does not run as root. crid's
// integration tests run as root in CI; they are never skipped.
func RequiresRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root (CI runs as root)")
	}
}
