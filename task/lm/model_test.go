package lm

import (
	"math"
	"math/rand/v2"
	"testing"
)

// gradNet is a small model with every kind of parameter non-trivial:
// random norms, non-zero B on every projection.
func gradNet(t *testing.T) (*Net, [][]byte) {
	t.Helper()
	a := Arch{Layers: 2, DModel: 8, Heads: 2, Context: 6, Hidden: 12}
	rng := rand.New(rand.NewPCG(5, 6))
	n := perturbedNet(t, a, 3, 7, rng)
	var windows [][]byte
	for b := 0; b < 3; b++ {
		win := make([]byte, a.Context+1)
		for i := range win {
			win[i] = byte(rng.IntN(Vocab))
		}
		windows = append(windows, win)
	}
	return n, windows
}

// perturbedNet is architecture a with its initial weights (seed wseed)
// perturbed by rng — larger weights than initialisation gives, so that
// attention is far from uniform and every path carries gradient — and
// rank-2 adapters (seed adseed) on every projection with random B.
func perturbedNet(t *testing.T, a Arch, wseed, adseed uint64, rng *rand.Rand) *Net {
	t.Helper()
	w, err := InitWeights(a, wseed)
	if err != nil {
		t.Fatal(err)
	}
	for _, ts := range w.Tensors() {
		for i := range ts.Data {
			ts.Data[i] += float32(rng.NormFloat64() * 0.4)
		}
	}
	ad, err := NewAdapter(a, 2, 4, ProjNames[:], adseed)
	if err != nil {
		t.Fatal(err)
	}
	theta := make([]float64, dimOf(ad.BLayout(a)))
	for i := range theta {
		theta[i] = rng.NormFloat64() * 0.3
	}
	n, err := NewNet(w, ad, theta)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func dimOf(ts []NamedTensor) int {
	n := 0
	for _, t := range ts {
		n += size(t.Shape)
	}
	return n
}

// TestGradientsMatchFiniteDifferences checks the backward pass of every
// parameter kind — embeddings, positions, every norm, the six projections
// of every layer, the head, and LoRA's B and A — against central finite
// differences of the loss along a random direction of each tensor.
func TestGradientsMatchFiniteDifferences(t *testing.T) {
	n, windows := gradNet(t)
	a := n.W.Arch
	gw, _ := NewWeights(a)
	g := &Grads{W: gw, B: n.NewBGrads(), A: make([][numProj][]float32, a.Layers)}
	for l := range n.Ad.A {
		for p := range n.Ad.A[l] {
			if n.Ad.A[l][p] != nil {
				g.A[l][p] = make([]float32, len(n.Ad.A[l][p]))
			}
		}
	}
	tokens := len(windows) * (len(windows[0]) - 1)
	if _, err := n.Pass(windows, g, 1/float32(tokens)); err != nil {
		t.Fatal(err)
	}
	loss := func() float64 {
		r, err := n.Pass(windows, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		return r.Loss()
	}
	type pair struct {
		name       string
		param, grd []float32
	}
	var pairs []pair
	wt, gt := n.W.Tensors(), gw.Tensors()
	for i := range wt {
		pairs = append(pairs, pair{wt[i].Name, wt[i].Data, gt[i].Data})
	}
	for l := range n.B {
		for p := range n.B[l] {
			if n.B[l][p] != nil {
				pairs = append(pairs, pair{ProjModule(l, p) + ".lora_B", n.B[l][p], g.B[l][p]},
					pair{ProjModule(l, p) + ".lora_A", n.Ad.A[l][p], g.A[l][p]})
			}
		}
	}
	if len(pairs) != 2+8*a.Layers+2+12*a.Layers {
		t.Fatalf("%d tensors checked, want every backbone tensor and both LoRA factors of every projection", len(pairs))
	}
	rng := rand.New(rand.NewPCG(9, 9))
	const eps = 5e-3
	for _, pr := range pairs {
		t.Run(pr.name, func(t *testing.T) {
			dir := make([]float32, len(pr.param))
			var norm float64
			for i := range dir {
				dir[i] = float32(rng.NormFloat64())
				norm += float64(dir[i]) * float64(dir[i])
			}
			var analytic float64
			for i := range dir {
				dir[i] /= float32(math.Sqrt(norm))
				analytic += float64(dir[i]) * float64(pr.grd[i])
			}
			orig := append([]float32(nil), pr.param...)
			set := func(s float32) {
				for i := range pr.param {
					pr.param[i] = orig[i] + s*dir[i]
				}
			}
			central := func(h float32) float64 {
				set(h)
				up := loss()
				set(-h)
				down := loss()
				copy(pr.param, orig)
				return (up - down) / (2 * float64(h))
			}
			// Richardson extrapolation cancels the O(h²) term, so that a
			// step large enough for float32 still measures the slope.
			numeric := (4*central(eps/2) - central(eps)) / 3
			if math.Abs(analytic) < 1e-4 {
				t.Fatalf("directional derivative %.3g: too small to check anything", analytic)
			}
			rel := math.Abs(numeric-analytic) / math.Abs(analytic)
			t.Logf("analytic %.6g, finite differences %.6g (relative error %.2g)", analytic, numeric, rel)
			if rel > 1e-2 {
				t.Errorf("analytic %.6g, finite differences %.6g (relative error %.2g)", analytic, numeric, rel)
			}
		})
	}
}

func TestPassRejectsBadWindows(t *testing.T) {
	n, _ := gradNet(t)
	for _, w := range [][][]byte{
		{make([]byte, 1)},
		{make([]byte, n.W.Arch.Context+2)},
		{make([]byte, 4), make([]byte, 5)},
	} {
		if _, err := n.Pass(w, nil, 0); err == nil {
			t.Errorf("windows of %d bytes accepted", len(w[len(w)-1]))
		}
	}
}

func TestNewNetChecksTheta(t *testing.T) {
	n, _ := gradNet(t)
	dim := dimOf(n.Ad.BLayout(n.W.Arch))
	for _, k := range []int{0, dim - 1, dim + 1} {
		if _, err := NewNet(n.W, n.Ad, make([]float64, k)); err == nil {
			t.Errorf("θ of %d values accepted, want %d", k, dim)
		}
	}
	if _, err := NewNet(n.W, nil, []float64{1}); err == nil {
		t.Error("θ accepted for a model without adapters")
	}
}
