package mnist

import (
	"context"
	"math/rand/v2"
	"testing"
)

func syntheticTask(t *testing.T, personal bool) *Task {
	t.Helper()
	rng := rand.New(rand.NewPCG(3, 4))
	h := 8
	ck := &Checkpoint{Hidden: h, W1: make([]float64, h*Pixels), B1: make([]float64, h), W2: make([]float64, Classes*h), B2: make([]float64, Classes)}
	for _, w := range [][]float64{ck.W1, ck.B1, ck.W2, ck.B2} {
		for i := range w {
			w[i] = rng.NormFloat64() * 0.1
		}
	}
	m, theta := ck.Model(false)
	data, test := randomSet(60, rng), randomSet(400, rng)
	parts, err := PartitionDirichlet(data, 3, 20, 0.3, 5)
	if err != nil {
		t.Fatal(err)
	}
	return &Task{Config: TaskConfig{Seed: 7, Personal: personal, PersonalEpochs: 5, Local: LocalConfig{Epochs: 2, Batch: 5, LR: 0.5}},
		Checkpoint: ck, Model: m, Theta0: theta, ClientData: data, Parts: parts, Test: test}
}

// TestClientEvalSetFollowsTheClientsLabels checks that a client's
// evaluation set has exactly its training partition's label proportions.
func TestClientEvalSetFollowsTheClientsLabels(t *testing.T) {
	task := syntheticTask(t, false)
	for i, part := range task.Parts {
		idx, err := task.ClientEvalSet(i)
		if err != nil {
			t.Fatal(err)
		}
		var train, eval [Classes]int
		for _, j := range part {
			train[task.ClientData.Labels[j]]++
		}
		for _, j := range idx {
			eval[task.Test.Labels[j]]++
		}
		for k := range train {
			if want := PersonalEvalExamples * train[k] / len(part); eval[k] != want {
				t.Fatalf("client %d label %d: %d eval examples, want %d (train counts %v)", i, k, eval[k], want, train)
			}
		}
	}
}

// TestPersonalHeadStaysLocal trains personalised clients: every delta is
// exactly what the same client sends without personalisation (the
// residual head never leaks into the update), each client keeps a non-zero
// residual, and the report's accuracies agree with Model.Evaluate.
func TestPersonalHeadStaysLocal(t *testing.T) {
	task := syntheticTask(t, true)
	plainTask := Task{Config: task.Config, Checkpoint: task.Checkpoint, Model: task.Model, Theta0: task.Theta0,
		ClientData: task.ClientData, Parts: task.Parts, Test: task.Test}
	plainTask.Config.Personal = false
	ids := []string{"a", "b", "c"}
	ct, err := NewClientTrainer(task, ids)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := NewClientTrainer(&plainTask, ids)
	if err != nil {
		t.Fatal(err)
	}
	m := task.Model
	lo, hi := m.HeadSpan()
	delta := make([]float64, m.Dim())
	want := make([]float64, m.Dim())
	for round := uint64(1); round <= 2; round++ {
		for _, id := range ids[:2] {
			if _, err := ct.Train(context.Background(), id, round, task.Theta0, delta); err != nil {
				t.Fatal(err)
			}
			if _, err := plain.Train(context.Background(), id, round, task.Theta0, want); err != nil {
				t.Fatal(err)
			}
			for j := range want {
				if delta[j] != want[j] {
					t.Fatalf("client %s round %d: personalised delta[%d] = %v, without personalisation %v", id, round, j, delta[j], want[j])
				}
			}
		}
	}
	r := make([]float64, hi-lo)
	if !ct.heads.get("a", r) || ct.heads.get("c", r) {
		t.Fatal("want a residual for the trained client a and none for the untrained c")
	}
	ct.heads.get("a", r)
	norm := 0.0
	for _, x := range r {
		norm += x * x
	}
	if norm == 0 {
		t.Fatal("client a's residual head is zero after two rounds")
	}
	rep, err := ct.PersonalReport(task.Theta0)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep) != 2 || rep[0].Client != "a" || rep[1].Client != "b" {
		t.Fatalf("report %+v: want clients a and b", rep)
	}
	for _, c := range rep {
		idx, _ := task.ClientEvalSet(ct.index[c.Client])
		sub := task.Test.Subset(idx)
		global, _, _ := m.Evaluate(task.Theta0, sub)
		pt := append([]float64(nil), task.Theta0...)
		ct.heads.get(c.Client, r)
		for j, x := range r {
			pt[lo+j] += x
		}
		personal, _, _ := m.Evaluate(pt, sub)
		if c.Global != global || c.Personal != personal || c.Examples != PersonalEvalExamples {
			t.Fatalf("client %s: report %+v, Evaluate gives global %v personal %v", c.Client, c, global, personal)
		}
	}
}
