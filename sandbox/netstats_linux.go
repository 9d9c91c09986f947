package sandbox

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
)

// InterfaceStats are one network interface's cumulative counters, as
// /proc/net/dev shows them.
type InterfaceStats struct {
	Name                                    string
	RxBytes, RxPackets, RxErrors, RxDropped uint64
	TxBytes, TxPackets, TxErrors, TxDropped uint64
}

// NetworkStats returns the counters of the Ready sandbox id's network
// interfaces (see [NetDevStats]). A host-network pod has none of its own:
// nil. A sandbox that is not Ready, or stops while it is read, is
// ErrSandboxNotReady; an unknown one ErrNotFound.
//
// It takes no lifecycle lock, so that a slow Stop does not hold up metrics:
// a netns unmounted meanwhile makes the read fail, and the state then says
// why.
func (m *Manager) NetworkStats(ctx context.Context, id string) ([]InterfaceStats, error) {
	e, err := m.lookup(id)
	if err != nil {
		return nil, err
	}
	sb := e.snapshot()
	if sb.State != StateReady {
		return nil, fmt.Errorf("network stats of sandbox %s in state %s: %w", sb.ID, sb.State, ErrSandboxNotReady)
	}
	if sb.NetNSPath == "" {
		return nil, nil
	}
	stats, err := NetDevStats(ctx, sb.NetNSPath)
	if err != nil {
		if s := e.state(); s != StateReady {
			return nil, fmt.Errorf("network stats of sandbox %s in state %s: %w", sb.ID, s, ErrSandboxNotReady)
		}
		return nil, fmt.Errorf("network stats of sandbox %s: %w", sb.ID, err)
	}
	return stats, nil
}

// NetDevStats reads /proc/net/dev in the network namespace pinned at nsPath
// and returns every interface but the loopback, in the kernel's order:
// cadvisor leaves "lo" out of a container's network metrics too. A
// namespace file that does not exist is ErrNotFound.
//
// The file is read from a fresh goroutine whose OS thread is locked and
// setns'd into the namespace, through /proc/thread-self: /proc/self/net
// would show the namespace of the process's main thread. The thread is
// never unlocked, so the Go runtime discards it with the goroutine.
func NetDevStats(ctx context.Context, nsPath string) ([]InterfaceStats, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b, err := inNetNS(nsPath, func() ([]byte, error) { return os.ReadFile("/proc/thread-self/net/dev") })
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("netns %s: %w", nsPath, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	stats, err := parseNetDev(b)
	if err != nil {
		return nil, fmt.Errorf("netns %s: %w", nsPath, err)
	}
	return stats, nil
}

// parseNetDev parses /proc/net/dev: two header lines, then per interface
//
//	name: rx bytes packets errs drop fifo frame compressed multicast tx bytes packets errs drop fifo colls carrier compressed
func parseNetDev(b []byte) ([]InterfaceStats, error) {
	var out []InterfaceStats
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue // a header line
		}
		name = strings.TrimSpace(name)
		f := strings.Fields(rest)
		if len(f) < 16 {
			return nil, fmt.Errorf("parse /proc/net/dev: interface %s has %d fields", name, len(f))
		}
		var v [16]uint64
		for i := range v {
			n, err := strconv.ParseUint(f[i], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("parse /proc/net/dev: interface %s: %w", name, err)
			}
			v[i] = n
		}
		if name == "lo" {
			continue
		}
		out = append(out, InterfaceStats{
			Name:    name,
			RxBytes: v[0], RxPackets: v[1], RxErrors: v[2], RxDropped: v[3],
			TxBytes: v[8], TxPackets: v[9], TxErrors: v[10], TxDropped: v[11],
		})
	}
	return out, sc.Err()
}
