package global

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/privacy"
	"github.com/strata-fl/strata/topology"
)

// TestAdaptiveClipConvergesToQuantile runs the clip-norm controller against
// a synthetic population whose update norms are log-normal with a known
// median, with Poisson sampling and the bit noise the tiers add. With the
// defaults (γ = 0.5, η = 0.2, σ_b = qN/20 per region, 3 regions) the clip
// norm must settle within 10% of the true median.
//
// Tolerance: the noisy fraction b̄ has a standard deviation of about
// √(¼·qN + 3σ_b²)/qN ≈ 0.09 per round, and the geometric update with η = 0.2
// averages it over ~1/η rounds, so log C wanders by a few percent around the
// fixed point; the mean of the last 50 rounds is within 10% with a wide
// margin. The seed is fixed, so the test is deterministic.
func TestAdaptiveClipConvergesToQuantile(t *testing.T) {
	const n, q, regions = 5000, 0.05, 3
	rng := rand.New(rand.NewPCG(11, 12))
	norms := make([]float64, n)
	for i := range norms {
		norms[i] = math.Exp(0.5 + 0.6*rng.NormFloat64())
	}
	sorted := append([]float64(nil), norms...)
	sort.Float64s(sorted)
	truth := sorted[n/2]
	noise := privacy.NewGaussian(rand.NewChaCha8([32]byte{7}))
	sigmaB := q * n / 20
	c := 0.1 // start far below
	var tail []float64
	for round := 0; round < 300; round++ {
		bits := make([]float64, regions)
		for i, v := range norms {
			if rng.Float64() < q {
				b := 0.0
				if v <= c {
					b = 1
				}
				bits[i%regions] += b - 0.5
			}
		}
		if err := noise.AddTo64(bits, sigmaB); err != nil {
			t.Fatal(err)
		}
		sum := bits[0] + bits[1] + bits[2]
		c = NextClip(c, sum, q*n, 0.5, 0.2)
		if round >= 250 {
			tail = append(tail, c)
		}
	}
	mean := 0.0
	for _, v := range tail {
		mean += v / float64(len(tail))
	}
	if rel := math.Abs(mean-truth) / truth; rel > 0.10 {
		t.Fatalf("clip norm settled at %.4f, true median %.4f: %.1f%% off, want ≤ 10%%", mean, truth, 100*rel)
	}
	t.Logf("clip norm %.4f vs true median %.4f", mean, truth)
}

// TestAdaptiveClipCostsTheSameAsFixed: with adaptive clipping on, the
// update noise is raised so that update and bits together cost the public
// exactly what the plan costs with fixed clipping at the same z.
func TestAdaptiveClipCostsTheSameAsFixed(t *testing.T) {
	const dim, rounds = 2858, 40
	fixed := topology.Default()
	adaptive := fixed.Clone()
	adaptive.Privacy.AdaptiveClip = topology.AdaptiveClip{Enabled: true}
	adaptive.ApplyDefaults()
	if err := adaptive.Validate(); err != nil {
		t.Fatal(err)
	}
	n, err := AdaptiveNoise(adaptive, Costing{Clip: adaptive.Privacy.ClipNorm, Dim: dim})
	if err != nil {
		t.Fatal(err)
	}
	if !(n.Regional > fixed.Privacy.Noise.Regional) {
		t.Fatalf("update noise %+v should be above the fixed plan's %+v", n, fixed.Privacy.Noise)
	}
	a := epsAfter(t, adaptive, n, dim, rounds).Public
	f := epsAfter(t, fixed, fixed.Privacy.Noise, dim, rounds).Public
	if math.Abs(a-f) > 1e-9*f {
		t.Fatalf("public ε with adaptive clipping %v, with fixed clipping %v", a, f)
	}
	if !math.IsInf(epsAfter(t, adaptive, n, dim, 1).RegionalOperator, 1) {
		t.Fatal("the regional operator sees the bits in clear: its ε must be ∞")
	}
}

// epsAfter is the ε per observer the ledger records after `rounds` rounds
// of noise n at the topology's clip norm.
func epsAfter(t *testing.T, top *topology.Topology, n topology.Noise, dim, rounds int) ledger.PerObserver[float64] {
	t.Helper()
	in := Costing{Noise: n, Clip: top.Privacy.ClipNorm, Dim: dim}
	rc, err := roundCost(Mechanisms(top, in), in, Spent{}, top.Privacy.Delta, rounds)
	if err != nil {
		t.Fatal(err)
	}
	return rc.EpsilonAfter
}
