package sandbox

import (
	"context"
	"time"
)

// Network attaches pods to the pod network (server adapts the cni
// package to it). A pod that uses the node's network is never attached.
type Network interface {
	// Setup attaches sb's network namespace and returns the pod's IPs,
	// primary first. When it fails it has deleted whatever it set up.
	Setup(ctx context.Context, sb *Sandbox) (ips []string, err error)
	// Teardown detaches sb. It is idempotent and must work when the
	// network namespace is already gone.
	Teardown(ctx context.Context, sb *Sandbox) error
}

// networkTeardownTimeout bounds one CNI DEL. It runs on a fresh context:
// a cancelled StopPodSandbox must not leave an address allocated.
const networkTeardownTimeout = time.Minute

// teardownNetwork detaches sb if it may be attached. Precondition: e.mu
// held, or e not shared yet.
func (m *Manager) teardownNetwork(ctx context.Context, sb *Sandbox) error {
	if !sb.NetworkAttached || m.network == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), networkTeardownTimeout)
	defer cancel()
	return m.network.Teardown(ctx, sb)
}
