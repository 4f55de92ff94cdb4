package mnist

import (
	"math"
	"math/rand/v2"
	"testing"
)

func randomSet(n int, rng *rand.Rand) *Set {
	s := &Set{Images: make([]uint8, n*Pixels), Labels: make([]uint8, n)}
	for i := range s.Images {
		s.Images[i] = uint8(rng.IntN(256))
	}
	for i := range s.Labels {
		s.Labels[i] = uint8(rng.IntN(Classes))
	}
	return s
}

// TestGradientMatchesFiniteDifferences checks backpropagation against
// central differences on random coordinates, for the adapter-and-head model
// and for full fine-tuning.
func TestGradientMatchesFiniteDifferences(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	data := randomSet(5, rng)
	idx := []int{0, 1, 2, 3, 4}
	h := 8
	ck := &Checkpoint{Hidden: h, W1: make([]float64, h*Pixels), B1: make([]float64, h), W2: make([]float64, Classes*h), B2: make([]float64, Classes)}
	for _, w := range [][]float64{ck.W1, ck.B1, ck.W2, ck.B2} {
		for i := range w {
			w[i] = rng.NormFloat64() * 0.1
		}
	}
	for _, full := range []bool{false, true} {
		m, theta := ck.Model(full)
		for i := range theta {
			theta[i] += rng.NormFloat64() * 0.05
		}
		grad := make([]float64, m.Dim())
		var ws Workspace
		if _, err := m.LossGrad(theta, data, idx, grad, &ws, false); err != nil {
			t.Fatal(err)
		}
		scratch := make([]float64, m.Dim())
		for k := 0; k < 40; k++ {
			i := rng.IntN(m.Dim())
			const eps = 1e-5
			orig := theta[i]
			theta[i] = orig + eps
			lp, _ := m.LossGrad(theta, data, idx, scratch, &ws, false)
			theta[i] = orig - eps
			lm, _ := m.LossGrad(theta, data, idx, scratch, &ws, false)
			theta[i] = orig
			num := (lp - lm) / (2 * eps)
			if math.Abs(num-grad[i]) > 1e-6+1e-4*math.Abs(num) {
				t.Fatalf("full=%v param %d: backprop %v, finite difference %v", full, i, grad[i], num)
			}
		}
	}
}

func TestPartitionIsDisjointAndDeterministic(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	s := randomSet(1000, rng)
	a, err := PartitionDirichlet(s, 90, 10, 0.5, 7)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := PartitionDirichlet(s, 90, 10, 0.5, 7)
	seen := map[int]bool{}
	for c := range a {
		if len(a[c]) != 10 {
			t.Fatalf("client %d has %d examples", c, len(a[c]))
		}
		for j, i := range a[c] {
			if seen[i] {
				t.Fatalf("example %d dealt twice", i)
			}
			seen[i] = true
			if b[c][j] != i {
				t.Fatal("same seed gave a different partition")
			}
		}
	}
	if _, err := PartitionDirichlet(s, 200, 10, 0.5, 7); err == nil {
		t.Fatal("asked for more examples than exist: got nil error")
	}
}

func TestInvert(t *testing.T) {
	s := &Set{Images: make([]uint8, Pixels), Labels: []uint8{3}}
	s.Images[0] = 255
	inv := s.Invert()
	if inv.Images[0] != 0 || inv.Images[1] != 255 || s.Images[0] != 255 {
		t.Fatal("Invert must map p to 255-p on a copy")
	}
}

func TestLossesAverageToEvaluate(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	s := randomSet(1203, rng)
	ck, err := Pretrain(s, PretrainConfig{Hidden: 16, Epochs: 1, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	m, theta := ck.Model(false)
	_, mean, err := m.Evaluate(theta, s)
	if err != nil {
		t.Fatal(err)
	}
	ls, err := m.Losses(theta, s)
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, l := range ls {
		sum += l
	}
	if len(ls) != s.Len() || math.Abs(sum/float64(len(ls))-mean) > 1e-12 {
		t.Fatalf("%d losses averaging %v; Evaluate's mean loss %v over %d", len(ls), sum/float64(len(ls)), mean, s.Len())
	}
}

func TestPartitionShardsIsDisjointDeterministicAndSkewed(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	s := randomSet(1000, rng)
	a, err := PartitionShards(s, 90, 10, 2, 7)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := PartitionShards(s, 90, 10, 2, 7)
	seen := map[int]bool{}
	labels := 0
	for c := range a {
		if len(a[c]) != 10 {
			t.Fatalf("client %d has %d examples, want 10", c, len(a[c]))
		}
		distinct := map[uint8]bool{}
		for j, i := range a[c] {
			if seen[i] {
				t.Fatalf("example %d dealt twice", i)
			}
			seen[i] = true
			if b[c][j] != i {
				t.Fatal("same seed gave a different partition")
			}
			distinct[s.Labels[i]] = true
		}
		labels += len(distinct)
	}
	// Two shards of 5 label-sorted examples: a client sees 2 labels unless
	// a shard straddles a label boundary (about 1 shard in 20 here).
	if mean := float64(labels) / 90; mean > 2.5 {
		t.Fatalf("clients see %.2f labels on average, want about 2", mean)
	}
	if _, err := PartitionShards(s, 90, 9, 2, 7); err == nil {
		t.Fatal("9 examples in 2 shards: got nil error")
	}
	if _, err := PartitionShards(s, 200, 10, 2, 7); err == nil {
		t.Fatal("asked for more examples than exist: got nil error")
	}
}
