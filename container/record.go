package container

import (
	"strconv"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// State is a container's lifecycle state.
//
//	            Create
//	              │
//	              ▼
//	         ┌─────────┐  Start   ┌─────────┐
//	         │ Created │─────────▶│ Running │
//	         └─────────┘          └─────────┘
//	              │  Stop / exit       │ exit file (process exited,
//	              │  file              │ was stopped or killed)
//	              ▼                    ▼
//	         ┌──────────────────────────────┐
//	         │            Exited            │
//	         └──────────────────────────────┘
//	                       │ Remove
//	                       ▼
//	                    (gone)
//
//	Unknown: recovery found the record inconsistent with reality (a bad
//	checkpoint, no monitor and no exit file). Stop moves it to Exited, and
//	Remove works from any state.
type State string

// The states of a container.
const (
	StateCreated State = "Created"
	StateRunning State = "Running"
	StateExited  State = "Exited"
	StateUnknown State = "Unknown"
)

// Reasons set on exit.
const (
	ReasonCompleted = "Completed"
	ReasonError     = "Error"
	ReasonOOMKilled = "OOMKilled"
)

// Image names the image a container was created from.
type Image struct {
	Ref string `json:"ref,omitempty"` // the reference the user asked for
	ID  string `json:"id,omitempty"`  // the image (config) digest
}

// Record is everything crid knows about one container. It is persisted as
// the container's checkpoint. Get and List return copies.
type Record struct {
	ID          string            `json:"id"`
	SandboxID   string            `json:"sandboxID"`
	Name        string            `json:"name"`
	Attempt     uint32            `json:"attempt"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Image       Image             `json:"image"`
	LogPath     string            `json:"logPath,omitempty"`
	// Mounts are kept for status only; the spec carries the real mounts.
	Mounts    []specs.Mount `json:"mounts,omitempty"`
	Stdin     bool          `json:"stdin,omitempty"`
	StdinOnce bool          `json:"stdinOnce,omitempty"`
	TTY       bool          `json:"tty,omitempty"`
	Runtime   string        `json:"runtime"`

	State      State     `json:"state"`
	CreatedAt  time.Time `json:"createdAt"`
	StartedAt  time.Time `json:"startedAt,omitzero"`
	FinishedAt time.Time `json:"finishedAt,omitzero"`
	ExitCode   int32     `json:"exitCode"`
	Reason     string    `json:"reason,omitempty"`
	Message    string    `json:"message,omitempty"`

	// Pid is the container's init process as the host sees it.
	Pid int `json:"pid,omitempty"`
	// ConmonPid and ConmonStart (start time in clock ticks since boot, from
	// /proc/<pid>/stat) identify the monitor across PID reuse.
	ConmonPid   int    `json:"conmonPid,omitempty"`
	ConmonStart uint64 `json:"conmonStart,omitempty"`
	// Bundle is the container's directory (OCI bundle and checkpoint).
	Bundle string `json:"bundle"`
	// CgroupsPath is the spec's linux.cgroupsPath, to read OOM kills.
	CgroupsPath string `json:"cgroupsPath,omitempty"`

	// Extra is opaque data owned by the server.
	Extra []byte `json:"extra,omitempty"`
}

// nameKey is the reservation key kubelet retries with.
func nameKey(name, sandboxID string, attempt uint32) string {
	return name + "_" + sandboxID + "_" + strconv.FormatUint(uint64(attempt), 10)
}

func (r *Record) clone() *Record {
	c := *r
	c.Labels = cloneMap(r.Labels)
	c.Annotations = cloneMap(r.Annotations)
	c.Mounts = append([]specs.Mount(nil), r.Mounts...)
	c.Extra = append([]byte(nil), r.Extra...)
	return &c
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}
