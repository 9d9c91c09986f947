package server

import (
	"encoding/json"
	"syscall"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// containerExtra is what the server keeps with a container record (its
// Extra bytes) to answer CRI calls later: the CRI view of its mounts, the
// image's stop signal, the user it runs as, and the snapshots of its image
// volumes.
type containerExtra struct {
	Version string `json:"version"`
	// Mounts are the request's mounts; an image volume's image carries
	// image_ref (the image's ID).
	Mounts     []*runtime.Mount `json:"mounts,omitempty"`
	StopSignal int              `json:"stopSignal,omitempty"`
	// ImageVolumes are the keys of the image volumes' snapshot views,
	// removed with the container.
	ImageVolumes []string `json:"imageVolumes,omitempty"`
	// UID, GID and Groups are the generated spec's process.user (Groups is
	// its additionalGids, the primary GID included): the identity of the
	// container's first process and of every process exec'd in it.
	UID    int64   `json:"uid"`
	GID    int64   `json:"gid"`
	Groups []int64 `json:"groups,omitempty"`
}

const containerExtraVersion = "v1"

func (e containerExtra) encode() []byte {
	e.Version = containerExtraVersion
	b, _ := json.Marshal(e) // plain data: cannot fail
	return b
}

// decodeContainerExtra is lenient: a record without (or with unreadable)
// extra data still answers status, with fewer details.
func decodeContainerExtra(b []byte) containerExtra {
	var e containerExtra
	if len(b) > 0 {
		_ = json.Unmarshal(b, &e)
	}
	return e
}

func (e containerExtra) stopSignal() syscall.Signal {
	if e.StopSignal <= 0 {
		return syscall.SIGTERM
	}
	return syscall.Signal(e.StopSignal)
}

// user is the CRI view of the container's process user, or nil when the
// record carries no (readable) extra data: reporting uid 0 for a user crid
// does not know would be wrong.
func (e containerExtra) user() *runtime.ContainerUser {
	if e.Version == "" {
		return nil
	}
	return &runtime.ContainerUser{Linux: &runtime.LinuxContainerUser{
		Uid: e.UID, Gid: e.GID, SupplementalGroups: e.Groups,
	}}
}
