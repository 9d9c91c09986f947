package container

import (
	"os"
	"testing"
)

// TestMain lets the test binary be ExecSync's helper, as crid is
// ("exec-wait"): env's Runtime names it.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "exec-wait" {
		ExecWaitMain(os.Args[2:])
	}
	os.Exit(m.Run())
}
