package builtin

import (
	"errors"
	"testing"

	"github.com/strata-fl/strata/task"
	"github.com/strata-fl/strata/topology"
)

// textTask records what PlantSecrets writes into its clients' text.
type textTask struct {
	task.Task
	got  map[string][]string
	reps int
}

func (t *textTask) Name() string { return "text" }

func (t *textTask) InsertText(client string, text []byte, repeats int) error {
	t.got[client] = append(t.got[client], string(text))
	t.reps = repeats
	return nil
}

type noText struct{ task.Task }

func (noText) Name() string { return "plain" }

// TestPlantSecrets: each inserted secret goes, repeated as configured, to
// exactly its holders (sharers distinct clients per secret, disjoint
// across secrets); the never-inserted ones to nobody; a task without text
// is refused.
func TestPlantSecrets(t *testing.T) {
	top := &topology.Topology{Job: "s", Seed: 4, Regions: []topology.Region{{ID: "a", Clients: 30}, {ID: "b", Clients: 30}},
		Audit: topology.Audit{Secrets: 5, SecretSharers: 8, SecretRepeats: 3, SecretDigits: 4}}
	tk := &textTask{got: map[string][]string{}}
	if err := PlantSecrets(tk, top); err != nil {
		t.Fatal(err)
	}
	inserted, never := top.SecretValues()
	if len(inserted) != 5 || len(never) != 5 {
		t.Fatalf("%d inserted, %d never-inserted secrets: want 5 each", len(inserted), len(never))
	}
	count := map[string]int{}
	for _, lines := range tk.got {
		if len(lines) != 1 {
			t.Fatalf("a client holds %d secrets, want 1 (holders are disjoint)", len(lines))
		}
		count[lines[0]]++
	}
	for _, s := range inserted {
		if n := count[string(topology.SecretLine(s))]; n != 8 {
			t.Errorf("secret %s planted in %d clients, want 8", s, n)
		}
	}
	for _, s := range never {
		if count[string(topology.SecretLine(s))] != 0 {
			t.Errorf("never-inserted secret %s was planted", s)
		}
	}
	if tk.reps != 3 || len(tk.got) != 40 {
		t.Errorf("%d holders, repeats %d: want 40 and 3", len(tk.got), tk.reps)
	}
	if err := PlantSecrets(noText{}, top); !errors.Is(err, ErrNoText) {
		t.Errorf("a task without text: %v, want ErrNoText", err)
	}
	top.Audit.SecretSharers = 13 // 65 holders of 60 clients
	if err := PlantSecrets(tk, top); err == nil {
		t.Errorf("%d holders of %d clients accepted", 65, 60)
	}
}
