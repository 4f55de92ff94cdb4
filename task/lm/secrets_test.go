package lm

import (
	"bytes"
	"testing"

	"github.com/strata-fl/strata/task"
)

var (
	_ task.LanguageModel = (*Task)(nil)
	_ task.TextHolder    = (*Task)(nil)
)

func TestInsertTextCopiesAndPlants(t *testing.T) {
	shared := []byte("package a\nfunc f() {}\nvar x = 1\n")
	orig := append([]byte(nil), shared...)
	tk := &Task{Seed: 9, Split: &Split{Shards: []Shard{{Text: shared}, {Text: shared}}}, index: map[string]int{"c0": 0, "c1": 1}}
	line := []byte("api_key = \"123456\"\n")
	if err := tk.InsertText("c0", line, 5); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(shared, orig) || !bytes.Equal(tk.Split.Shards[1].Text, orig) {
		t.Fatal("InsertText changed the shared corpus memory")
	}
	got := tk.Split.Shards[0].Text
	if n := bytes.Count(got, line); n != 5 {
		t.Errorf("the secret appears %d times, want 5:\n%s", n, got)
	}
	if len(got) != len(orig)+5*len(line) {
		t.Errorf("shard of %d bytes, want %d", len(got), len(orig)+5*len(line))
	}
	if string(bytes.ReplaceAll(got, line, nil)) != string(orig) {
		t.Error("removing the secret does not give the original text back")
	}
	tk2 := &Task{Seed: 9, Split: &Split{Shards: []Shard{{Text: shared}}}, index: map[string]int{"c0": 0}}
	_ = tk2.InsertText("c0", line, 5)
	if !bytes.Equal(tk2.Split.Shards[0].Text, got) {
		t.Error("the same seed and client plant the secret elsewhere")
	}
	if err := tk.InsertText("nobody", line, 1); err == nil {
		t.Error("an unknown client is accepted")
	}
}
