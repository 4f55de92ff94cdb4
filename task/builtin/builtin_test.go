package builtin

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/strata-fl/strata/task/lm"
	"github.com/strata-fl/strata/topology"
)

func TestLMIsBuiltIn(t *testing.T) {
	if !slices.Contains(Names(), "lm") || !slices.Contains(Names(), "mnist") {
		t.Fatalf("Names() = %v", Names())
	}
	top := topology.Default()
	top.Task = topology.Task{Name: "lm", Options: map[string]any{"lora_rank": 8}}
	if err := Validate(top); err != nil {
		t.Fatal(err)
	}
	if d, err := Dim(top); err != nil || d != 2*4*64*8 {
		t.Fatalf("Dim = %d, %v; want 2 layers × 4 projections × 64 × rank 8", d, err)
	}
	o, err := Options(top)
	if err != nil || o["lora_rank"] != 8 || o["d_model"] != 64 {
		t.Fatalf("Options = %v, %v", o, err)
	}
	top.Task.Options = map[string]any{"lora_targets": []string{"x"}}
	if err := Validate(top); !errors.Is(err, lm.ErrConfig) || !strings.Contains(err.Error(), "lora_targets") {
		t.Fatalf("bad target: %v", err)
	}
	top.Task = topology.Task{Name: "gpt"}
	if err := Validate(top); !errors.Is(err, ErrUnknownTask) || !strings.Contains(err.Error(), "lm") {
		t.Fatalf("unknown task: %v", err)
	}
}
