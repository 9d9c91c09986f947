package cni

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/crid-dev/crid/internal/log"
)

// Defaults, as kubelet-side runtimes use them.
const (
	DefaultConfDir  = "/etc/cni/net.d"
	DefaultCacheDir = "/var/lib/cni"
	DefaultIfName   = "eth0"
)

// cleanupTimeout bounds the DEL that undoes a failed Setup, which runs
// even when the caller's context is done.
const cleanupTimeout = time.Minute

// DefaultBinDirs are searched for plugins in order: the upstream location,
// then where Debian's containernetworking-plugins installs them.
var DefaultBinDirs = []string{"/opt/cni/bin", "/usr/lib/cni"}

// loopbackNetwork attaches the pod's lo through the standard loopback
// plugin. Its name is what libcni's cache files are keyed by.
const loopbackNetwork = `{"cniVersion":"1.0.0","name":"cni-loopback","plugins":[{"type":"loopback"}]}`

// ErrNotReady is returned (wrapping errdefs.ErrFailedPrecondition) by Setup
// while no usable network config is installed.
var ErrNotReady = fmt.Errorf("pod network is not ready: %w", errdefs.ErrFailedPrecondition)

// Options configure a Manager. Zero values take the defaults.
type Options struct {
	ConfDir string
	BinDirs []string
	// CacheDir is libcni's cache (results/ holds one file per attachment).
	CacheDir string
	// IfName is the pod's interface on the pod network.
	IfName string
	// Exec runs plugins; nil is libcni's (fork/exec). Tests may wrap it.
	Exec invoke.Exec
}

// Manager attaches and detaches pods. Safe for concurrent use.
type Manager struct {
	confDir  string
	binDirs  []string
	ifName   string
	lib      *libcni.CNIConfig
	loopback *libcni.NetworkConfigList

	locks keyMutex // per pod ID

	mu sync.Mutex // guards the fields below
	fp string     // fingerprint of what cur was loaded from
	// racy is set when fp was taken within racyWindow of a modification
	// time in it: a change in the same timestamp tick would not alter fp.
	racy    bool
	cur     loaded
	podCIDR string
}

// New returns a Manager. It does not read the conf dir yet: the network is
// (re)loaded on use, so a missing dir only makes the network not ready.
func New(opts Options) (*Manager, error) {
	if opts.ConfDir == "" {
		opts.ConfDir = DefaultConfDir
	}
	if len(opts.BinDirs) == 0 {
		opts.BinDirs = DefaultBinDirs
	}
	if opts.CacheDir == "" {
		opts.CacheDir = DefaultCacheDir
	}
	if opts.IfName == "" {
		opts.IfName = DefaultIfName
	}
	for _, d := range append([]string{opts.ConfDir, opts.CacheDir}, opts.BinDirs...) {
		if !filepath.IsAbs(d) {
			return nil, fmt.Errorf("cni: directory %q must be absolute: %w", d, errdefs.ErrInvalidArgument)
		}
	}
	lo, err := libcni.ConfListFromBytes([]byte(loopbackNetwork))
	if err != nil {
		return nil, fmt.Errorf("cni: loopback network: %w", err)
	}
	if opts.Exec == nil {
		// libcni fills in its default on first use, unsynchronized; Setup
		// runs two plugin chains at once, and pods run concurrently.
		opts.Exec = &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}}
	}
	opts.Exec = timedExec{opts.Exec}
	return &Manager{
		confDir:  filepath.Clean(opts.ConfDir),
		binDirs:  append([]string(nil), opts.BinDirs...),
		ifName:   opts.IfName,
		lib:      libcni.NewCNIConfigWithCacheDir(opts.BinDirs, opts.CacheDir, opts.Exec),
		loopback: lo,
	}, nil
}

// current returns the network to use now, re-reading the conf dir if its
// files changed since the last look.
func (m *Manager) current(ctx context.Context) loaded {
	now := time.Now()
	fp, newest := fingerprint(m.confDir, m.binDirs)
	m.mu.Lock()
	defer m.mu.Unlock()
	if fp == m.fp && m.fp != "" && !m.racy {
		return m.cur
	}
	l := load(m.confDir, m.binDirs)
	if l.net != nil {
		if _, err := invoke.FindInPath("loopback", m.binDirs); err != nil {
			l = loaded{notReady: fmt.Sprintf("loopback plugin not found in %v", m.binDirs)}
		}
	}
	switch {
	case l.net != nil && (m.cur.net == nil || m.cur.file != l.file || string(m.cur.net.Bytes) != string(l.net.Bytes)):
		log.G(ctx).Info("CNI network loaded", "network", l.net.Name, "file", l.file, "cniVersion", l.net.CNIVersion)
	case l.net == nil && l.notReady != m.cur.notReady:
		log.G(ctx).Warn("CNI network not ready", "reason", l.notReady)
	}
	m.fp, m.cur = fp, l
	m.racy = !newest.Before(now.Add(-racyWindow))
	return l
}

// Status returns nil when pods can be attached, else an error saying why
// not (for the NetworkReady condition).
func (m *Manager) Status(ctx context.Context) error {
	if l := m.current(ctx); l.net == nil {
		return errors.New(l.notReady)
	}
	return nil
}

// Network names the network pods are attached to now ("" when not ready).
func (m *Manager) Network(ctx context.Context) string {
	if l := m.current(ctx); l.net != nil {
		return l.net.Name
	}
	return ""
}

// SetPodCIDR records the node's pod CIDR (kubelet's UpdateRuntimeConfig);
// later attachments offer it to IPAM as the ipRanges capability.
func (m *Manager) SetPodCIDR(cidr string) error {
	if cidr != "" {
		if _, _, err := net.ParseCIDR(cidr); err != nil {
			return fmt.Errorf("pod CIDR %q: %v: %w", cidr, err, errdefs.ErrInvalidArgument)
		}
	}
	m.mu.Lock()
	m.podCIDR = cidr
	m.mu.Unlock()
	return nil
}

func (m *Manager) cidr() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.podCIDR
}

// Result is what an attachment gave the pod.
type Result struct {
	Network string
	// IPs are the pod's addresses on its interface, IPv4 first (the
	// primary pod IP), then IPv6.
	IPs []string
}

// Setup attaches the pod's network namespace to the pod network and its lo
// to the loopback network, concurrently. If either fails, what was set up
// is deleted again before Setup returns.
func (m *Manager) Setup(ctx context.Context, pod Pod) (Result, error) {
	if pod.ID == "" || pod.NetNS == "" {
		return Result{}, fmt.Errorf("cni setup: pod needs an ID and a netns path: %w", errdefs.ErrInvalidArgument)
	}
	unlock := m.locks.lock(pod.ID)
	defer unlock()
	start := time.Now()
	l := m.current(ctx)
	if l.net == nil {
		return Result{}, fmt.Errorf("%w: %s", ErrNotReady, l.notReady)
	}
	rt, err := pod.runtimeConf(m.ifName, m.cidr())
	if err != nil {
		return Result{}, err
	}
	loRT := &libcni.RuntimeConf{ContainerID: pod.ID, NetNS: pod.NetNS, IfName: "lo", Args: rt.Args}

	loDone := make(chan error, 1)
	go func() {
		_, err := m.lib.AddNetworkList(ctx, m.loopback, loRT)
		loDone <- err
	}()
	res, err := m.lib.AddNetworkList(ctx, l.net, rt)
	if loErr := <-loDone; loErr != nil && err == nil {
		err = fmt.Errorf("loopback: %w", loErr)
	}
	var out Result
	if err == nil {
		out, err = podResult(l.net.Name, res)
	}
	if err != nil {
		err = fmt.Errorf("cni add pod %s/%s (%s) to network %q: %w", pod.Namespace, pod.Name, pod.ID, l.net.Name, err)
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if derr := m.teardownLocked(dctx, pod, l); derr != nil {
			log.G(ctx).Warn("deleting a failed CNI attachment failed; the caller must retry the DEL", "podsandboxid", pod.ID, "error", derr)
			err = errors.Join(err, derr)
		}
		return Result{}, err
	}
	log.G(ctx).Debug("CNI attached pod", "podsandboxid", pod.ID, "network", l.net.Name, "ips", out.IPs, "duration", time.Since(start))
	return out, nil
}

// podResult picks the pod-side addresses out of a plugin result.
func podResult(network string, res types.Result) (Result, error) {
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		return Result{}, fmt.Errorf("convert CNI result: %w", err)
	}
	var v4, v6 []string
	for _, ip := range r.IPs {
		if ip.Interface != nil {
			i := *ip.Interface
			if i < 0 || i >= len(r.Interfaces) || r.Interfaces[i].Sandbox == "" {
				continue // a host-side address
			}
		}
		if ip.Address.IP.To4() != nil {
			v4 = append(v4, ip.Address.IP.String())
		} else {
			v6 = append(v6, ip.Address.IP.String())
		}
	}
	ips := append(v4, v6...)
	if len(ips) == 0 {
		return Result{}, errors.New("CNI result has no IP address for the pod")
	}
	return Result{Network: network, IPs: ips}, nil
}

// Teardown detaches the pod from every network it was attached to, using
// the config each attachment was made with (libcni's cache), and deletes
// from the current network too when no attachment to it was cached (an
// ADD that failed or was interrupted may still have allocated an address). It is
// idempotent and works when the netns is gone.
func (m *Manager) Teardown(ctx context.Context, pod Pod) error {
	if pod.ID == "" {
		return fmt.Errorf("cni teardown: pod needs an ID: %w", errdefs.ErrInvalidArgument)
	}
	unlock := m.locks.lock(pod.ID)
	defer unlock()
	start := time.Now()
	if err := m.teardownLocked(ctx, pod, m.current(ctx)); err != nil {
		return err
	}
	log.G(ctx).Debug("CNI detached pod", "podsandboxid", pod.ID, "duration", time.Since(start))
	return nil
}

func (m *Manager) teardownLocked(ctx context.Context, pod Pod, l loaded) error {
	atts, err := m.lib.GetCachedAttachments(pod.ID)
	if err != nil {
		return fmt.Errorf("read CNI cache: %w", err)
	}
	// The attachments are independent (the pod network and loopback):
	// their DELs run at once, as their ADDs did.
	var dels []func() error
	deleted := map[string]bool{}
	for _, a := range atts {
		dels = append(dels, func() error { return m.delAttachment(ctx, a, pod.NetNS) })
		deleted[a.Network] = true
	}
	if l.net != nil && !deleted[l.net.Name] {
		dels = append(dels, func() error {
			rt, err := pod.runtimeConf(m.ifName, m.cidr())
			if err == nil {
				err = m.lib.DelNetworkList(ctx, l.net, rt)
			}
			if err != nil {
				return fmt.Errorf("cni del pod %s from network %q: %w", pod.ID, l.net.Name, err)
			}
			return nil
		})
	}
	if len(dels) == 0 {
		return nil
	}
	errs := make([]error, len(dels))
	var wg sync.WaitGroup
	for i, del := range dels[1:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i+1] = del()
		}()
	}
	errs[0] = dels[0]()
	wg.Wait()
	return errors.Join(errs...)
}

// delAttachment runs DEL for a cached attachment with its own config and
// arguments. netns overrides the cached path when set.
func (m *Manager) delAttachment(ctx context.Context, a *libcni.NetworkAttachment, netns string) error {
	list, err := libcni.ConfListFromBytes(a.Config)
	if err != nil {
		return fmt.Errorf("cached config of %s on network %q: %w", a.ContainerID, a.Network, err)
	}
	if netns == "" {
		netns = a.NetNS
	}
	rt := &libcni.RuntimeConf{
		ContainerID: a.ContainerID, NetNS: netns, IfName: a.IfName,
		Args: a.CniArgs, CapabilityArgs: a.CapabilityArgs,
	}
	if err := m.lib.DelNetworkList(ctx, list, rt); err != nil {
		return fmt.Errorf("cni del %s (%s) from network %q: %w", a.ContainerID, a.IfName, a.Network, err)
	}
	return nil
}

// Check runs CNI CHECK for each of the pod's attachments (diagnostics).
func (m *Manager) Check(ctx context.Context, pod Pod) error {
	if pod.ID == "" {
		// libcni reads an empty ID as "every pod".
		return fmt.Errorf("cni check: pod needs an ID: %w", errdefs.ErrInvalidArgument)
	}
	unlock := m.locks.lock(pod.ID)
	defer unlock()
	atts, err := m.lib.GetCachedAttachments(pod.ID)
	if err != nil {
		return fmt.Errorf("read CNI cache: %w", err)
	}
	if len(atts) == 0 {
		return fmt.Errorf("pod %s has no CNI attachment: %w", pod.ID, errdefs.ErrNotFound)
	}
	var errs []error
	for _, a := range atts {
		list, err := libcni.ConfListFromBytes(a.Config)
		if err == nil {
			err = m.lib.CheckNetworkList(ctx, list, &libcni.RuntimeConf{
				ContainerID: a.ContainerID, NetNS: a.NetNS, IfName: a.IfName,
				Args: a.CniArgs, CapabilityArgs: a.CapabilityArgs,
			})
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("network %q (%s): %w", a.Network, a.IfName, err))
		}
	}
	return errors.Join(errs...)
}

// GC deletes every cached attachment whose pod is not in live (a crash
// between ADD and recording the pod, or during its Stop), then asks the
// current network's plugins to collect whatever else they hold for pods
// not in live (CNI 1.1's GC verb, when the config's version has it). It
// returns the IDs of the pods it detached from every network they were
// attached to. Run it before pods are set up:
// a pod attached meanwhile is not in live and would be detached.
func (m *Manager) GC(ctx context.Context, live map[string]bool) ([]string, error) {
	atts, err := m.lib.GetCachedAttachments("")
	if err != nil {
		return nil, fmt.Errorf("read CNI cache: %w", err)
	}
	var errs []error
	var dead []string           // in cache order
	failed := map[string]bool{} // by pod ID; false: all deleted so far
	for _, a := range atts {
		if live[a.ContainerID] {
			continue
		}
		if _, ok := failed[a.ContainerID]; !ok {
			dead = append(dead, a.ContainerID)
			failed[a.ContainerID] = false
		}
		unlock := m.locks.lock(a.ContainerID)
		err := m.delAttachment(ctx, a, "")
		unlock()
		if err != nil {
			errs = append(errs, err)
			failed[a.ContainerID] = true
		}
	}
	var gone []string // detached from every network
	for _, id := range dead {
		if !failed[id] {
			gone = append(gone, id)
		}
	}
	if l := m.current(ctx); l.net != nil {
		valid := make([]types.GCAttachment, 0, len(live))
		for id := range live {
			valid = append(valid, types.GCAttachment{ContainerID: id, IfName: m.ifName})
		}
		sort.Slice(valid, func(i, j int) bool { return valid[i].ContainerID < valid[j].ContainerID })
		if err := m.lib.GCNetworkList(ctx, l.net, &libcni.GCArgs{ValidAttachments: valid}); err != nil {
			errs = append(errs, fmt.Errorf("cni gc network %q: %w", l.net.Name, err))
		}
	}
	return gone, errors.Join(errs...)
}
