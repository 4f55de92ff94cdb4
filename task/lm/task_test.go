package lm

import (
	"context"
	"fmt"
	"sync"
	"testing"
)

var (
	smallOnce sync.Once
	small     *Task
	smallErr  error
)

// smallTask is a tiny LM task on the real corpus, pre-trained in seconds
// (shared by the package's tests).
func smallTask(t *testing.T) *Task {
	t.Helper()
	smallOnce.Do(func() {
		c, err := ParseConfig(map[string]any{"layers": 2, "d_model": 16, "heads": 2, "context": 16, "pretrain_steps": 150,
			"pretrain_batch": 8, "lora_rank": 2, "shard_bytes": 1024, "heldout_dirs": 5, "local_steps": 8, "local_lr": 0.1, "eval_windows": 64, "final_windows": 128})
		if err != nil {
			smallErr = err
			return
		}
		ids := make([]string, 40)
		for i := range ids {
			ids[i] = fmt.Sprintf("c%d", i)
		}
		small, smallErr = Prepare(context.Background(), Spec{Config: c, Clients: ids, Seed: 1})
	})
	if smallErr != nil {
		t.Fatal(smallErr)
	}
	return small
}

// TestLocalTrainingLowersShardLoss: a client's local steps lower the loss
// on its own shard, and its delta is deterministic in (client, round).
func TestLocalTrainingLowersShardLoss(t *testing.T) {
	tk := smallTask(t)
	tr, _ := tk.Trainer()
	theta := tk.Initial()
	ctx := context.Background()
	before, err := tk.ExampleLosses(ctx, theta, []string{"c3"})
	if err != nil {
		t.Fatal(err)
	}
	d1, d2 := make([]float64, len(theta)), make([]float64, len(theta))
	if _, err := tr.Train(ctx, "c3", 1, theta, d1); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Train(ctx, "c3", 1, theta, d2); err != nil {
		t.Fatal(err)
	}
	for i := range d1 {
		if d1[i] != d2[i] {
			t.Fatalf("delta differs at %d between two identical calls", i)
		}
	}
	after := make([]float64, len(theta))
	for i := range after {
		after[i] = theta[i] + d1[i]
	}
	post, err := tk.ExampleLosses(ctx, after, []string{"c3"})
	if err != nil {
		t.Fatal(err)
	}
	mean := func(x []float64) float64 {
		s := 0.0
		for _, v := range x {
			s += v
		}
		return s / float64(len(x))
	}
	t.Logf("shard loss %.4f → %.4f nats per byte", mean(before), mean(post))
	if !(mean(post) < mean(before)) {
		t.Errorf("shard loss %.4f after local training, %.4f before: want lower", mean(post), mean(before))
	}
	if _, err := tr.Train(ctx, "nobody", 1, theta, d1); err == nil {
		t.Error("an unknown client trained")
	}
}
