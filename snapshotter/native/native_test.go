package native

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/crid-dev/crid/snapshotter"
	"github.com/crid-dev/crid/snapshotter/testsuite"
)

func TestSuite(t *testing.T) {
	testsuite.Run(t, func(t *testing.T, root string) snapshotter.Snapshotter {
		s, err := New(root)
		require.NoError(t, err)
		return s
	})
}
