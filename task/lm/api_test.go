package lm

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/strata-fl/strata/task"
)

var (
	_ task.Task           = (*Task)(nil)
	_ task.Membership     = (*Task)(nil)
	_ task.Generator      = (*Task)(nil)
	_ task.TensorExporter = (*Task)(nil)
)

// TestLogProbsAgreeWithPass: the next-byte distribution sums to one and
// its log-probabilities give the loss Pass computes.
func TestLogProbsAgreeWithPass(t *testing.T) {
	n, windows := gradNet(t)
	m := &Model{Net: n}
	w := windows[0]
	r, err := n.Pass([][]byte{w}, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var nll float64
	for i := 1; i < len(w); i++ {
		lp := m.LogProbs(w[:i])
		var s float64
		for _, v := range lp {
			s += math.Exp(float64(v))
		}
		if math.Abs(s-1) > 1e-4 {
			t.Fatalf("probabilities after %d bytes sum to %v", i, s)
		}
		nll -= float64(lp[w[i]])
	}
	if math.Abs(nll-r.LossSum) > 1e-3*r.LossSum {
		t.Errorf("Σ −log p from LogProbs = %v, Pass's loss = %v", nll, r.LossSum)
	}
	if got := -m.SequenceLogProb(w[:1], w[1:]); math.Abs(got-r.LossSum) > 1e-3*r.LossSum {
		t.Errorf("SequenceLogProb = %v, Pass's loss = %v", -got, r.LossSum)
	}
	// Longer than the context: SequenceLogProb slides its window.
	long := append(append([]byte(nil), w...), w...)
	if lp := m.SequenceLogProb(long[:3], long[3:]); math.IsNaN(lp) || lp >= 0 {
		t.Errorf("SequenceLogProb of %d bytes beyond the context = %v", len(long)-3, lp)
	}
}

func TestSampleIsDeterministicAndGreedyAtZero(t *testing.T) {
	n, windows := gradNet(t)
	m := &Model{Net: n}
	a := m.Sample(windows[0][:3], 20, 1, rand.New(rand.NewPCG(1, 2)))
	b := m.Sample(windows[0][:3], 20, 1, rand.New(rand.NewPCG(1, 2)))
	if string(a) != string(b) || len(a) != 20 {
		t.Fatalf("same seed gave %q and %q", a, b)
	}
	g := m.Sample(windows[0][:3], 1, 0, nil)
	lp := m.LogProbs(windows[0][:3])
	for j, v := range lp {
		if v > lp[g[0]] {
			t.Fatalf("greedy sample %d has log p %v, byte %d has %v", g[0], lp[g[0]], j, v)
		}
	}
	tk := &Task{Weights: n.W, Adapter: n.Ad}
	theta := n.flatB()
	out, err := tk.Generate(context.Background(), theta, windows[0][:3], 20, 1, 7)
	if err != nil || len(out) != 20 {
		t.Fatalf("Generate = %q, %v", out, err)
	}
}
