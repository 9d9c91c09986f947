package cleanup

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRunsInReverseOrderAndJoinsErrors(t *testing.T) {
	var order []string
	cu := New(context.Background())
	cu.Add("a", func(context.Context) error { order = append(order, "a"); return nil })
	cu.Add("b", func(context.Context) error { order = append(order, "b"); return errors.New("b failed") })
	cu.Add("c", func(context.Context) error { order = append(order, "c"); return nil })
	err := cu.Run()
	require.Equal(t, []string{"c", "b", "a"}, order, "LIFO, and a failing step does not stop the rest")
	require.ErrorContains(t, err, "b: b failed")
	require.NoError(t, cu.Run(), "a second Run does nothing")
	require.Len(t, order, 3)
}

func TestReleaseKeepsEverything(t *testing.T) {
	ran := false
	cu := New(context.Background())
	cu.Add("x", func(context.Context) error { ran = true; return nil })
	cu.Release()
	require.NoError(t, cu.Run())
	require.False(t, ran)
}

func TestStepsRunOnADetachedContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cu := New(ctx)
	var stepErr error
	cu.Add("x", func(ctx context.Context) error { stepErr = ctx.Err(); return nil })
	cancel()
	require.NoError(t, cu.Run())
	require.NoError(t, stepErr, "a cancelled request must not cancel its cleanup")
}
