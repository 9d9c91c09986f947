package container

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/crid-dev/crid/internal/atomicfile"
	"github.com/crid-dev/crid/internal/mount"
)

// checkpointVersion is the version of checkpoint.json. Bump it (and keep a
// reader for the old one) whenever Record changes incompatibly.
const checkpointVersion = "v1"

const (
	checkpointFile = "checkpoint.json"
	removingPrefix = ".removing-"
	volumesDir     = "volumes"
)

type checkpoint struct {
	Version string  `json:"version"`
	Record  *Record `json:"record"`
}

// writeCheckpoint persists rec atomically into its bundle.
func writeCheckpoint(rec *Record) error {
	b, err := json.Marshal(checkpoint{Version: checkpointVersion, Record: rec})
	if err != nil {
		return fmt.Errorf("encode checkpoint of container %s: %w", rec.ID, err)
	}
	if err := atomicfile.WriteFile(filepath.Join(rec.Bundle, checkpointFile), b, 0o600); err != nil {
		return fmt.Errorf("write checkpoint of container %s: %w", rec.ID, err)
	}
	return nil
}

// readCheckpoint loads a bundle's record. A missing file is ErrNotFound; a
// bad one is ErrDataLoss.
func readCheckpoint(bundle string) (*Record, error) {
	b, err := os.ReadFile(filepath.Join(bundle, checkpointFile))
	if os.IsNotExist(err) {
		return nil, fmt.Errorf("checkpoint in %s: %w", bundle, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read checkpoint in %s: %w", bundle, err)
	}
	var cp checkpoint
	if err := json.Unmarshal(b, &cp); err != nil {
		return nil, fmt.Errorf("decode checkpoint in %s: %w: %w", bundle, err, errdefs.ErrDataLoss)
	}
	if cp.Version != checkpointVersion || cp.Record == nil {
		return nil, fmt.Errorf("checkpoint in %s: version %q: %w", bundle, cp.Version, errdefs.ErrDataLoss)
	}
	return cp.Record, nil
}

// removeBundle unmounts the rootfs and the volumes and deletes the bundle:
// renamed first so that a crash leaves a .removing- dir that recovery
// finishes, never a half-deleted bundle with a checkpoint.
func removeBundle(bundle string) error {
	if _, err := os.Lstat(bundle); os.IsNotExist(err) {
		return nil
	}
	if err := unmountBundle(bundle); err != nil {
		return err
	}
	dir, base := filepath.Split(bundle)
	target := bundle
	if !strings.HasPrefix(base, removingPrefix) {
		target = filepath.Join(dir, removingPrefix+base)
		if err := os.Rename(bundle, target); err != nil {
			return fmt.Errorf("remove bundle %s: %w", bundle, err)
		}
	}
	if err := os.RemoveAll(target); err != nil {
		return fmt.Errorf("remove bundle %s: %w", bundle, err)
	}
	return nil
}

// unmountBundle unmounts <bundle>/rootfs and every <bundle>/volumes/<i>
// and makes sure nothing is mounted in the bundle any more, so that
// deleting it can never reach into an image's or the host's files.
func unmountBundle(bundle string) error {
	targets := []string{filepath.Join(bundle, "rootfs")}
	vols, err := os.ReadDir(filepath.Join(bundle, volumesDir))
	if err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("list volumes of bundle %s: %w", bundle, err)
	}
	for _, v := range vols {
		targets = append(targets, filepath.Join(bundle, volumesDir, v.Name()))
	}
	for _, t := range targets {
		if err := mount.Unmount(t); err != nil {
			return err
		}
	}
	mounted, err := mountedUnder(bundle)
	if err != nil {
		return err
	}
	if mounted {
		return fmt.Errorf("something is still mounted in bundle %s: %w", bundle, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// mountedUnder reports whether dir or anything below it is a mount point.
func mountedUnder(dir string) (bool, error) {
	ms, err := mount.Mounts(func(m mount.Info) bool { return m.Under(dir) })
	return len(ms) > 0, err
}
