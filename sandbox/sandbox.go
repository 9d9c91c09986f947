package sandbox

import (
	"errors"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
)

// State is a sandbox's lifecycle state.
//
//	Run ──► Created ──(namespaces, files, pause ok)──► Ready
//	           │                                        │ Stop
//	           │ (any step fails: rolled back,           ▼
//	           │  name released, record deleted)     Stopping ──(teardown done or failed)──► NotReady
//	           ▼                                                                              │ Remove
//	         (gone)        New: Ready whose ns/shm/pause is gone ─────────► NotReady          ▼
//	                       New: Created (Run never finished) ──► rolled back               (gone)
//
// Containers may be created only while Ready ([Manager.WithReady]); Stopping
// exists so that a CreateContainer racing a StopPodSandbox is refused at
// once instead of waiting. Stop and Remove are idempotent: Stop of a
// NotReady sandbox retries the teardown, Remove stops first.
type State string

const (
	StateCreated  State = "created"
	StateReady    State = "ready"
	StateStopping State = "stopping"
	StateNotReady State = "notready"
)

// Sandbox is a sandbox's record, as returned by [Manager.Get] and
// [Manager.List]: a copy, safe to read and to keep; changing it changes
// nothing (use [Manager.Update]).
//
// Paths point into the sandbox's state directory unless the pod uses a
// node namespace: a path is empty when the pod uses the node's namespace
// of that kind (NetNSPath, IPCNSPath, UTSNSPath, PausePID), and ShmPath is
// "/dev/shm" when IPC is NODE. The namespaces, shm and pause process exist
// while the sandbox is Ready; Stop releases them but the paths stay
// recorded.
type Sandbox struct {
	ID        string    `json:"id"` // 64 lower-case hex characters
	Config    Config    `json:"config"`
	State     State     `json:"state"`
	CreatedAt time.Time `json:"createdAt"`

	NetNSPath string `json:"netnsPath,omitempty"` // nsfs bind mount; what CNI gets
	IPCNSPath string `json:"ipcnsPath,omitempty"`
	UTSNSPath string `json:"utsnsPath,omitempty"`
	// PIDNSPath is /proc/<PausePID>/ns/pid when PID is POD: containers
	// join it. Valid only while the pause process lives.
	PIDNSPath string `json:"pidnsPath,omitempty"`
	PausePID  int    `json:"pausePID,omitempty"`
	// PauseStartTime is the pause process's start time in clock ticks
	// (/proc/<pid>/stat field 22), to tell it from a reused PID.
	PauseStartTime uint64 `json:"pauseStartTime,omitempty"`

	Hostname       string `json:"hostname"` // what the pod sees
	HostnamePath   string `json:"hostnamePath"`
	HostsPath      string `json:"hostsPath"`
	ResolvConfPath string `json:"resolvConfPath"`
	ShmPath        string `json:"shmPath"`

	// IP and AdditionalIPs are what the pod network gave the pod.
	IP            string   `json:"ip,omitempty"`
	AdditionalIPs []string `json:"additionalIPs,omitempty"`
	// NetworkAttached is set (and persisted) before the pod network is
	// set up and cleared only when its teardown succeeded: while it is
	// set, Stop, Remove and recovery run the teardown.
	NetworkAttached bool `json:"networkAttached,omitempty"`
}

func (s *Sandbox) clone() *Sandbox {
	c := *s
	c.Config = s.Config.clone()
	c.AdditionalIPs = cloneSlice(s.AdditionalIPs)
	return &c
}

var (
	// ErrSandboxStopping is returned (wrapping errdefs.ErrFailedPrecondition)
	// by WithReady while the sandbox is being stopped.
	ErrSandboxStopping = fmt.Errorf("sandbox is stopping: %w", errdefs.ErrFailedPrecondition)
	// ErrSandboxNotReady is returned (wrapping
	// errdefs.ErrFailedPrecondition) by WithReady for a sandbox that is not
	// Ready.
	ErrSandboxNotReady = fmt.Errorf("sandbox is not ready: %w", errdefs.ErrFailedPrecondition)
)

// ReservedError is returned by Run when the sandbox name is held by a
// sandbox that is not Ready (stopping or stopped): kubelet must stop and
// remove that one first. It is a FailedPrecondition (errors.Is) and carries
// the Conflict marker, like containerd's registrar.ReservedErr.
type ReservedError struct {
	Name string // the reserved key, Metadata.Key()
	ID   string // the holder
}

func (e *ReservedError) Error() string {
	return fmt.Sprintf("sandbox name %q is reserved for %s", e.Name, e.ID)
}

// Conflict marks the error for errdefs.IsConflict.
func (*ReservedError) Conflict() {}

// Unwrap makes errors.Is(err, errdefs.ErrFailedPrecondition) true.
func (*ReservedError) Unwrap() error { return errdefs.ErrFailedPrecondition }

var _ interface{ Conflict() } = (*ReservedError)(nil)

// errAmbiguous is wrapped when an ID prefix matches several sandboxes.
var errAmbiguous = errors.New("ambiguous sandbox id prefix")
