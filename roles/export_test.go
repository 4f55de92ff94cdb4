package roles

import (
	"math"
	"testing"

	"github.com/strata-fl/strata/task"
)

func vals(name string, shape []int, data ...float32) task.Values {
	return task.Values{Tensor: task.Tensor{Name: name, Shape: shape}, Data: data}
}

// TestMerge: W + (alpha/r)·B·A by hand for a 2×3 projection of rank 1,
// untouched tensors kept, inputs unmodified, mismatches refused.
func TestMerge(t *testing.T) {
	w := vals("m.weight", []int{2, 3}, 1, 2, 3, 4, 5, 6)
	other := vals("norm.weight", []int{2}, 7, 8)
	a := vals("m.lora_A.weight", []int{1, 3}, 1, 0, -1)
	b := vals("m.lora_B.weight", []int{2, 1}, 0.5, 2)
	cfg := map[string]any{"r": 1, "lora_alpha": 2.0}
	out, err := Merge([]task.Values{w, other}, []task.Values{a}, []task.Values{b}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// scale 2: rows 2·0.5·[1 0 −1] = [1 0 −1] and 2·2·[1 0 −1] = [4 0 −4].
	want := []float32{2, 2, 2, 8, 5, 2}
	for i, v := range out[0].Data {
		if math.Abs(float64(v-want[i])) > 1e-6 {
			t.Fatalf("merged %v, want %v", out[0].Data, want)
		}
	}
	if w.Data[0] != 1 || &out[1].Data[0] != &other.Data[0] {
		t.Error("Merge modified its input or copied an untouched tensor")
	}
	bad := vals("m.lora_B.weight", []int{3, 1}, 1, 2, 3)
	if _, err := Merge([]task.Values{w}, []task.Values{a}, []task.Values{bad}, cfg); err == nil {
		t.Error("B of the wrong shape merged")
	}
	if _, err := Merge([]task.Values{w}, nil, []task.Values{b}, cfg); err == nil {
		t.Error("B without its A merged")
	}
	if _, err := Merge([]task.Values{w}, []task.Values{a}, []task.Values{b}, map[string]any{"r": 0, "lora_alpha": 1}); err == nil {
		t.Error("rank 0 accepted")
	}
}
