package topology

import (
	"path/filepath"
	"testing"
)

// TestExampleLMIsTheBuiltInLMJob keeps examples/lm.yaml and DefaultLM
// (`strata up --task lm`) the same job: the same config hash, so the
// same ledger, ε and model.
func TestExampleLMIsTheBuiltInLMJob(t *testing.T) {
	file, err := Load(filepath.Join("..", "examples", "lm.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := file.Hash()
	if err != nil {
		t.Fatal(err)
	}
	got, err := DefaultLM().Hash()
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		a, _ := file.YAML()
		b, _ := DefaultLM().YAML()
		t.Fatalf("DefaultLM's config hash %.12s, examples/lm.yaml's %.12s:\n--- file\n%s\n--- DefaultLM\n%s", got, want, a, b)
	}
	if _, err := DefaultFor("resnet"); err == nil {
		t.Fatal("DefaultFor(\"resnet\"): want an error naming the tasks that have one")
	}
}
