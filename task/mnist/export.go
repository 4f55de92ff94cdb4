package mnist

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"

	"github.com/vmihailenco/msgpack/v5"
)

// Files an export writes (docs/trainer-protocol.md, "Data"). External
// trainers read them; the data never passes through an aggregator.
const (
	BackboneFile = "backbone.msgpack"
	TestFile     = "test.msgpack"
	HeldOutFile  = "heldout.msgpack"
	ClientsDir   = "clients"
)

// BackboneExport is the frozen part of the checkpoint: W1 (Hidden×Pixels,
// row-major) and B1, little-endian float32.
type BackboneExport struct {
	Hidden int    `msgpack:"hidden"`
	Pixels int    `msgpack:"pixels"`
	W1     []byte `msgpack:"w1"`
	B1     []byte `msgpack:"b1"`
}

// SetExport is a labelled image set: Images holds Len×Pixels bytes
// (0–255, domain shift already applied), Labels one byte per image.
type SetExport struct {
	Images []byte `msgpack:"images"`
	Labels []byte `msgpack:"labels"`
}

// ShardExport is one client's data: its training partition and the
// indices (little-endian uint32) into the test set of its own evaluation
// data (Task.ClientEvalSet).
type ShardExport struct {
	Client    string    `msgpack:"client"`
	Train     SetExport `msgpack:"train"`
	EvalIndex []byte    `msgpack:"eval_index"`
}

// HeldOutExport names the per-round held-out set (Task.Eval), which the
// global tier's evaluation gate scores versions on: indices (little-endian
// uint32) into the test set. The whole test set is the final one.
type HeldOutExport struct {
	EvalIndex []byte `msgpack:"eval_index"`
}

// Export writes the data an external trainer needs for the listed clients
// into dir: the backbone, the (shifted) test set, which of its images are
// the per-round held-out set, and one shard per client under clients/. It is deterministic, so every agent of a job writes the
// same files.
func (c *ClientTrainer) Export(dir string, ids []string) error {
	t := c.task
	if err := os.MkdirAll(filepath.Join(dir, ClientsDir), 0o700); err != nil {
		return fmt.Errorf("mnist: export: %w", err)
	}
	bb := BackboneExport{Hidden: t.Model.Hidden, Pixels: Pixels, W1: f32bytes(t.Checkpoint.W1), B1: f32bytes(t.Checkpoint.B1)}
	if err := writeMsgpack(filepath.Join(dir, BackboneFile), &bb); err != nil {
		return err
	}
	if err := writeMsgpack(filepath.Join(dir, TestFile), &SetExport{Images: t.Test.Images, Labels: t.Test.Labels}); err != nil {
		return err
	}
	// Eval is Test's first Eval.Len() images (PrepareTask).
	held := make([]byte, 0, 4*t.Eval.Len())
	for j := range t.Eval.Len() {
		held = binary.LittleEndian.AppendUint32(held, uint32(j))
	}
	if err := writeMsgpack(filepath.Join(dir, HeldOutFile), &HeldOutExport{EvalIndex: held}); err != nil {
		return err
	}
	for _, id := range ids {
		i, ok := c.index[id]
		if !ok {
			return fmt.Errorf("mnist: export: unknown client %q", id)
		}
		part := t.ClientData.Subset(t.Parts[i])
		eval, err := t.ClientEvalSet(i)
		if err != nil {
			return err
		}
		idx := make([]byte, 0, 4*len(eval))
		for _, j := range eval {
			idx = binary.LittleEndian.AppendUint32(idx, uint32(j))
		}
		sh := ShardExport{Client: id, Train: SetExport{Images: part.Images, Labels: part.Labels}, EvalIndex: idx}
		if err := writeMsgpack(filepath.Join(dir, ClientsDir, id+".msgpack"), &sh); err != nil {
			return err
		}
	}
	return nil
}

func f32bytes(v []float64) []byte {
	b := make([]byte, 0, 4*len(v))
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(float32(x)))
	}
	return b
}

func writeMsgpack(path string, v any) error {
	b, err := msgpack.Marshal(v)
	if err != nil {
		return fmt.Errorf("mnist: export %s: %w", path, err)
	}
	if err := os.WriteFile(path+".tmp", b, 0o600); err != nil {
		return fmt.Errorf("mnist: export: %w", err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		return fmt.Errorf("mnist: export: %w", err)
	}
	return nil
}
