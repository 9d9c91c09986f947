package sandbox

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/crid-dev/crid/internal/atomicfile"
)

const (
	checkpointFile    = "checkpoint.json"
	checkpointVersion = "v1"
	// maxCheckpointSize bounds what recovery reads (a record is a few KiB;
	// annotations can be large but not this large).
	maxCheckpointSize = 4 << 20
)

// checkpoint is the on-disk record. Bump the version and keep a reader for
// the old one when a field changes meaning.
type checkpoint struct {
	Version string   `json:"version"`
	Sandbox *Sandbox `json:"sandbox"`
}

func writeCheckpoint(dir string, sb *Sandbox) error {
	b, err := json.Marshal(checkpoint{Version: checkpointVersion, Sandbox: sb})
	if err != nil {
		return fmt.Errorf("encode checkpoint: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, checkpointFile), b, 0o600); err != nil {
		return fmt.Errorf("write checkpoint: %w", err)
	}
	return nil
}

func readCheckpoint(dir string) (*Sandbox, error) {
	f, err := os.Open(filepath.Join(dir, checkpointFile))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() > maxCheckpointSize {
		return nil, fmt.Errorf("checkpoint is %d bytes, more than %d", fi.Size(), maxCheckpointSize)
	}
	var cp checkpoint
	dec := json.NewDecoder(f)
	if err := dec.Decode(&cp); err != nil {
		return nil, fmt.Errorf("decode checkpoint: %w", err)
	}
	if cp.Version != checkpointVersion {
		return nil, fmt.Errorf("checkpoint version %q, want %q", cp.Version, checkpointVersion)
	}
	if cp.Sandbox == nil {
		return nil, fmt.Errorf("checkpoint has no sandbox")
	}
	return cp.Sandbox, nil
}
