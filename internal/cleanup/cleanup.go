// Package cleanup collects the undo steps of a multi-step operation so that a
// failure at step N releases everything steps 1..N-1 acquired, in reverse
// order, on a context that is not cancelled with the request.
package cleanup

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/crid-dev/crid/internal/log"
)

// Timeout bounds the time all cleanups of one Cleanup may take.
const Timeout = time.Minute

type step struct {
	name string
	fn   func(ctx context.Context) error
}

// Cleanup is a LIFO list of undo steps. The zero value is not usable; use New.
type Cleanup struct {
	ctx      context.Context
	steps    []step
	released bool
}

// New returns a Cleanup whose steps run on a detached copy of ctx (values kept,
// cancellation dropped).
func New(ctx context.Context) *Cleanup {
	return &Cleanup{ctx: context.WithoutCancel(ctx)}
}

// Add registers an undo step. Register it immediately after the resource it
// undoes was acquired (or before, when acquiring can half-succeed).
func (c *Cleanup) Add(name string, fn func(ctx context.Context) error) {
	c.steps = append(c.steps, step{name: name, fn: fn})
}

// Release keeps everything: later Run calls do nothing.
func (c *Cleanup) Release() { c.released = true }

// Run runs the registered steps in reverse order unless Release was called.
// Failures are logged and joined into the returned error; every step runs.
func (c *Cleanup) Run() error {
	if c.released {
		return nil
	}
	c.released = true
	ctx, cancel := context.WithTimeout(c.ctx, Timeout)
	defer cancel()
	var errs []error
	for i := len(c.steps) - 1; i >= 0; i-- {
		s := c.steps[i]
		if err := s.fn(ctx); err != nil {
			log.G(ctx).Warn("cleanup step failed", "step", s.name, "error", err)
			errs = append(errs, fmt.Errorf("%s: %w", s.name, err))
		}
	}
	return errors.Join(errs...)
}
