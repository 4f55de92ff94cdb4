package lm

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/strata-fl/strata/task"
)

// ExportName is the file in an export directory that describes the model
// for an external trainer (docs/trainer-protocol.md, "lm-lora").
const ExportName = "lm.msgpack"

// exportTensor is a tensor as an export stores it: shape and
// little-endian float32 bytes, which numpy reads with frombuffer.
type exportTensor struct {
	Shape []int  `msgpack:"shape"`
	Data  []byte `msgpack:"data"`
}

type exportFile struct {
	Arch    Arch                    `msgpack:"arch"`
	NormEps float64                 `msgpack:"norm_eps"`
	Rank    int                     `msgpack:"lora_rank"`
	Alpha   float64                 `msgpack:"lora_alpha"`
	Targets []string                `msgpack:"lora_targets"`
	Tensors map[string]exportTensor `msgpack:"tensors"`
}

func float32Bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

// Export implements task.External: dir/lm.msgpack holds the shape, the
// frozen backbone and the adapters' fixed A (the names of docs/export.md),
// and dir/clients/ID.msgpack each client's text ({"text": bytes}).
// Canary clients' shards are exported with their planted secrets, as the
// built-in trainer trains them.
func (t *Task) Export(dir string, clients []string) error {
	f := exportFile{Arch: t.Weights.Arch, NormEps: normEps, Rank: t.Adapter.Rank, Alpha: t.Adapter.Alpha,
		Targets: t.Config.LoraTargets, Tensors: map[string]exportTensor{}}
	for _, ts := range [][]NamedTensor{t.Weights.Tensors(), t.Adapter.ATensors(t.Weights.Arch)} {
		for _, x := range ts {
			f.Tensors[x.Name] = exportTensor{Shape: x.Shape, Data: float32Bytes(x.Data)}
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "clients"), 0o700); err != nil {
		return fmt.Errorf("lm: export: %w", err)
	}
	if err := writeMsgpack(filepath.Join(dir, ExportName), f); err != nil {
		return err
	}
	for _, c := range clients {
		i, ok := t.index[c]
		if !ok {
			return fmt.Errorf("lm: export: unknown client %q", c)
		}
		if strings.ContainsAny(c, `/\`) || strings.HasPrefix(c, ".") {
			return fmt.Errorf("lm: export: client id %q cannot name a file", c)
		}
		if err := writeMsgpack(filepath.Join(dir, "clients", c+".msgpack"), map[string][]byte{"text": t.Split.Shards[i].Text}); err != nil {
			return err
		}
	}
	return nil
}

func writeMsgpack(path string, v any) error {
	b, err := msgpack.Marshal(v)
	if err != nil {
		return fmt.Errorf("lm: export %s: %w", filepath.Base(path), err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("lm: export: %w", err)
	}
	return nil
}

// Recipe implements task.External: the protocol task "lm-lora", whose
// trainer takes LocalSteps SGD steps (the recipe's epochs) of LocalBatch
// windows of Context+1 bytes at LocalLR on the adapters' B only.
func (t *Task) Recipe() task.Recipe {
	return task.Recipe{Task: "lm-lora", Epochs: t.Config.LocalSteps, Batch: t.Config.LocalBatch, LR: t.Config.LocalLR}
}
