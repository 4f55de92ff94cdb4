package mnist

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// TestExportNamesTheHeldOutSet checks that heldout.msgpack selects from
// the exported test set exactly the per-round evaluation subset the
// global tier gates on, so that an external evaluator scores the same
// images the built-in one does.
func TestExportNamesTheHeldOutSet(t *testing.T) {
	tk := syntheticTask(t, false)
	tk.Eval = tk.Test.Slice(0, 150)
	ct, err := NewClientTrainer(tk, []string{"a", "b", "c"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := ct.Export(dir, nil); err != nil {
		t.Fatal(err)
	}
	var test SetExport
	var held HeldOutExport
	for name, v := range map[string]any{TestFile: &test, HeldOutFile: &held} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := msgpack.Unmarshal(b, v); err != nil {
			t.Fatal(err)
		}
	}
	if len(held.EvalIndex) != 4*tk.Eval.Len() {
		t.Fatalf("held-out set of %d indices, want %d", len(held.EvalIndex)/4, tk.Eval.Len())
	}
	for k := range tk.Eval.Len() {
		j := int(binary.LittleEndian.Uint32(held.EvalIndex[4*k:]))
		if !bytes.Equal(test.Images[j*Pixels:(j+1)*Pixels], tk.Eval.Images[k*Pixels:(k+1)*Pixels]) || test.Labels[j] != tk.Eval.Labels[k] {
			t.Fatalf("held-out index %d names test image %d, which is not Eval's image %d", k, j, k)
		}
	}
}
