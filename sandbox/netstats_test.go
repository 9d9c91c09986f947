package sandbox

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/crid-dev/crid/internal/testutil"
)

func TestParseNetDev(t *testing.T) {
	const dev = `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     560       8    0    0    0     0          0         0      560       8    0    0    0     0       0          0
  eth0: 1000000    700    1    2    0     0          0         5   200000     300    3    4    0     0       0          0
`
	got, err := parseNetDev([]byte(dev))
	require.NoError(t, err)
	require.Equal(t, []InterfaceStats{{
		Name:    "eth0",
		RxBytes: 1000000, RxPackets: 700, RxErrors: 1, RxDropped: 2,
		TxBytes: 200000, TxPackets: 300, TxErrors: 3, TxDropped: 4,
	}}, got, "lo left out")

	_, err = parseNetDev([]byte("eth0: 1 2 3\n"))
	require.Error(t, err, "a short line")
	_, err = parseNetDev([]byte("eth0: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 x\n"))
	require.Error(t, err, "a bad number")
}

// TestNetDevStats pins a network namespace of its own, gives it a veth pair
// and sends UDP from one end to the other (a static neighbour entry saves
// ARP) and through loopback: NetDevStats sees the pair's counters, not
// loopback, and not the host's interfaces. (The test kernel loads no
// modules: dummy is not there, veth is.)
func TestNetDevStats(t *testing.T) {
	testutil.RequiresRoot(t)
	nsPath := filepath.Join(t.TempDir(), "netns")
	require.NoError(t, createNamespaces(nsSetup{net: true, netPath: nsPath}))
	t.Cleanup(func() { assert.NoError(t, releaseNamespace(nsPath)) })

	const packets, payload = 5, 100
	require.NoError(t, inNamespace(t, nsPath, unix.CLONE_NEWNET, func() error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "veth0"}, PeerName: "veth1"}
		if err := netlink.LinkAdd(veth); err != nil {
			return err
		}
		peer, err := netlink.LinkByName("veth1")
		if err != nil {
			return err
		}
		for _, l := range []netlink.Link{veth, peer} {
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		addr, err := netlink.ParseAddr("10.99.0.1/24")
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(veth, addr); err != nil {
			return err
		}
		// Until linkwatch has seen the carrier (asynchronously, up to a
		// second later under load) the device drops what is sent to it.
		for _, name := range []string{"veth0", "veth1"} {
			deadline := time.Now().Add(10 * time.Second)
			for {
				l, err := netlink.LinkByName(name)
				if err != nil {
					return err
				}
				if l.Attrs().OperState == netlink.OperUp {
					break
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("%s still %s", name, l.Attrs().OperState)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
		if err := netlink.NeighAdd(&netlink.Neigh{
			LinkIndex: veth.Attrs().Index, State: netlink.NUD_PERMANENT,
			IP: net.ParseIP("10.99.0.2"), HardwareAddr: peer.Attrs().HardwareAddr,
		}); err != nil {
			return err
		}
		for _, dst := range []string{"10.99.0.2:9", "127.0.0.1:9"} {
			c, err := net.Dial("udp4", dst)
			if err != nil {
				return err
			}
			for range packets {
				_, _ = c.Write(make([]byte, payload)) // an ICMP answer may fail a later write: ignore
			}
			c.Close()
		}
		return nil
	}))

	stats, err := NetDevStats(context.Background(), nsPath)
	require.NoError(t, err)
	byName := map[string]InterfaceStats{}
	for _, s := range stats {
		byName[s.Name] = s
	}
	require.Len(t, byName, 2, "veth0 and veth1: loopback is left out, the host's interfaces are elsewhere: %+v", stats)
	// IPv6 may add a router solicitation or two: at least, not exactly.
	frame := uint64(payload + 8 + 20 + 14) // UDP, IPv4 and Ethernet headers
	tx, rx := byName["veth0"], byName["veth1"]
	assert.GreaterOrEqual(t, tx.TxPackets, uint64(packets))
	assert.GreaterOrEqual(t, tx.TxBytes, packets*frame)
	assert.GreaterOrEqual(t, rx.RxPackets, uint64(packets))
	assert.GreaterOrEqual(t, rx.RxBytes, packets*frame)
	assert.Zero(t, tx.TxErrors+rx.RxErrors)

	// The calling thread is still in the host's namespace.
	host, err := NetDevStats(context.Background(), "/proc/self/ns/net")
	require.NoError(t, err)
	for _, i := range host {
		assert.NotEqual(t, "dummy0", i.Name)
	}

	_, err = NetDevStats(context.Background(), filepath.Join(t.TempDir(), "gone"))
	require.True(t, errdefs.IsNotFound(err), "%v", err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := NetDevStats(ctx, nsPath); err != nil {
		require.ErrorIs(t, err, context.Canceled)
	}
}

func TestManagerNetworkStats(t *testing.T) {
	m, _ := newManager(t)
	ctx := context.Background()
	sb := run(t, m, podConfig("netstats"))
	stats, err := m.NetworkStats(ctx, sb.ID)
	require.NoError(t, err)
	require.Empty(t, stats, "a pod network namespace without a pod network has only loopback")

	hostCfg := podConfig("netstats-host")
	hostCfg.Namespaces = NamespaceOptions{Network: NamespaceNode}
	host := run(t, m, hostCfg)
	stats, err = m.NetworkStats(ctx, host.ID)
	require.NoError(t, err)
	require.Nil(t, stats, "a host-network pod has no interfaces of its own")

	require.NoError(t, m.Stop(ctx, sb.ID))
	_, err = m.NetworkStats(ctx, sb.ID)
	require.ErrorIs(t, err, ErrSandboxNotReady)
	_, err = m.NetworkStats(ctx, "f00")
	require.True(t, errdefs.IsNotFound(err), "%v", err)
}
