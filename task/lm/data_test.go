package lm

import (
	"bytes"
	"errors"
	"testing"
)

// TestSplitIsDisjointAndDeterministic: on the real Go tree, held-out
// directories give no client text, every client holds one piece of one
// directory, the split is the same for the same seed and differs for
// another, and the prose (pre-training) holds no client's text.
func TestSplitIsDisjointAndDeterministic(t *testing.T) {
	root, err := LocateGoroot("")
	if err != nil {
		t.Fatal(err)
	}
	c, err := LoadCorpus(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.ProseTrain) < 100000 || len(c.ProseHeld) < 10000 || len(c.Dirs) < 100 {
		t.Fatalf("corpus: %d + %d bytes of prose, %d code directories", len(c.ProseTrain), len(c.ProseHeld), len(c.Dirs))
	}
	s1, err := c.SplitCode(500, 20, 4096, 1)
	if err != nil {
		t.Fatal(err)
	}
	s2, _ := c.SplitCode(500, 20, 4096, 1)
	s3, _ := c.SplitCode(500, 20, 4096, 2)
	held := map[string]bool{}
	for _, d := range s1.HeldDirs {
		held[d] = true
	}
	if len(held) != 20 {
		t.Fatalf("%d held-out directories, want 20", len(held))
	}
	same, pieces := 0, map[string]bool{}
	for i, sh := range s1.Shards {
		if held[sh.Dir] {
			t.Fatalf("client %d holds text of held-out directory %s", i, sh.Dir)
		}
		if len(sh.Text) < 1024 || len(sh.Text) > 4096 {
			t.Fatalf("client %d holds %d bytes, want 1024..4096", i, len(sh.Text))
		}
		if s2.Shards[i].Dir != sh.Dir || !bytes.Equal(s2.Shards[i].Text, sh.Text) {
			t.Fatalf("client %d differs between two splits of seed 1", i)
		}
		if s3.Shards[i].Dir == sh.Dir && bytes.Equal(s3.Shards[i].Text, sh.Text) {
			same++
		}
		key := sh.Dir + string(sh.Text[:64])
		if pieces[key] {
			t.Fatalf("two clients hold the same piece of %s", sh.Dir)
		}
		pieces[key] = true
	}
	if same > 10 {
		t.Errorf("%d of 500 clients hold the same piece under seeds 1 and 2", same)
	}
	if bytes.Contains(c.ProseTrain, s1.Shards[0].Text[:256]) {
		t.Error("the pre-training prose contains a client's code")
	}
	if _, err := c.SplitCode(1<<20, 20, 4096, 1); !errors.Is(err, ErrConfig) {
		t.Errorf("a million clients: %v, want ErrConfig", err)
	}
	if _, err := LocateGoroot(t.TempDir()); !errors.Is(err, ErrNoCorpus) {
		t.Errorf("a tree without the corpus: %v, want ErrNoCorpus", err)
	}
}

// TestPretrainIsDeterministic: the same seed gives the same backbone
// whatever the number of workers; the loss falls.
func TestPretrainIsDeterministic(t *testing.T) {
	root, err := LocateGoroot("")
	if err != nil {
		t.Fatal(err)
	}
	c, err := LoadCorpus(root)
	if err != nil {
		t.Fatal(err)
	}
	a := Arch{Layers: 1, DModel: 16, Heads: 2, Context: 16, Hidden: 32}
	var losses []float64
	run := func(workers int) *Weights {
		w, err := Pretrain(t.Context(), c.ProseTrain, PretrainConfig{Arch: a, Steps: 100, Batch: 8, LR: 3e-3, Seed: 4, Workers: workers,
			OnStep: func(_ int, l float64) { losses = append(losses, l) }})
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	w1, w2 := run(1), run(3)
	x, y := w1.Tensors(), w2.Tensors()
	for i := range x {
		for j := range x[i].Data {
			if x[i].Data[j] != y[i].Data[j] {
				t.Fatalf("%s[%d]: %v with 1 worker, %v with 3", x[i].Name, j, x[i].Data[j], y[i].Data[j])
			}
		}
	}
	init, _ := InitWeights(a, 4)
	r0, _ := (&Net{W: init}).Pass(Tiles(c.ProseHeld, a.Context+1)[:64], nil, 0)
	r1, _ := (&Net{W: w1}).Pass(Tiles(c.ProseHeld, a.Context+1)[:64], nil, 0)
	if !(r1.BitsPerByte() < r0.BitsPerByte()-1) {
		t.Errorf("held-out prose %.3f bits per byte after 100 steps, %.3f before: want at least 1 lower", r1.BitsPerByte(), r0.BitsPerByte())
	}
}
