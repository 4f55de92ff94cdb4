package global

import (
	"math"
	"testing"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/privacy/privacytest"
	"github.com/strata-fl/strata/topology"
)

// The tests in this file check the ledger's ε against the privacy loss of
// the statistic each observer actually sees, written down from the
// protocol and integrated numerically (package privacytest) — never with
// the ledger's own formulas. Each builds the observer's two worlds for the
// worst case of one client c with ‖x_c‖ = C (units of C throughout): world
// P holds c's update, world Q has it zeroed out (c's participation, and so
// any noise c adds, is the same in both). Everything else in the release
// is known to the observer and cancels. The assertion is that the true δ
// at the ledger's ε (rounded up, so an upper bound) does not exceed the
// ledger's δ; where the code once claimed less, the true δ at the old
// claim (rounded down, a lower bound) is shown to exceed it.

// ledgerEpsilon is what `strata check` reports for the plan.
func ledgerEpsilon(t *testing.T, top *topology.Topology, dim int) ledger.PerObserver[float64] {
	t.Helper()
	p, err := Project(top, dim)
	if err != nil {
		t.Fatal(err)
	}
	return p.Epsilon
}

// edgeNoisePair is what the public sees of client c in one round when c
// adds edge noise of multiplier se when sampled (rate q) and the release
// carries later noise of multiplier sl whoever took part, in d dimensions.
// Sufficient statistics: t, the coordinate along x_c, and r, the squared
// norm of the other d−1 coordinates, whose scale reveals whether c's noise
// is in.
func edgeNoisePair(q, se, sl float64, d int) privacytest.Pair {
	s0, s1 := sl, math.Sqrt(sl*sl+se*se)
	k := d - 1
	logR := func(r, s float64) float64 { return privacytest.LogScaledChi2(r, k, s) }
	// r concentrates at k·s² within a relative √(2/k): cover both
	// components ±12 of their widths.
	w := 12 * math.Sqrt(2/float64(k))
	return privacytest.Pair{
		LogP: func(x []float64) float64 {
			return privacytest.LogMix(q, privacytest.LogNormal(x[0], 1, s1)+logR(x[1], s1), privacytest.LogNormal(x[0], 0, s0)+logR(x[1], s0))
		},
		LogQ: func(x []float64) float64 {
			return privacytest.LogMix(q, privacytest.LogNormal(x[0], 0, s1)+logR(x[1], s1), privacytest.LogNormal(x[0], 0, s0)+logR(x[1], s0))
		},
		Grid: []privacytest.Axis{
			{Lo: -13 * s1, Hi: 1 + 13*s1, N: 1500},
			{Lo: float64(k) * s0 * s0 * (1 - w), Hi: float64(k) * s1 * s1 * (1 + w), N: 2400},
		},
	}
}

// TestEdgeNoiseRevealsParticipation: the default plan with
// privacy.noise.edge 0.5 — a client's edge noise is in the release only
// when it is sampled. The ledger once credited it with amplification
// (public ε 2.17); the true δ at 2.17 is far above 1e-5. What it reports
// now holds.
func TestEdgeNoiseRevealsParticipation(t *testing.T) {
	const dim = 2858
	top := topology.Default()
	top.Privacy.Noise.Edge = 0.5
	n, m := top.Privacy.Noise, float64(top.Privacy.MinRegions)
	sl := math.Sqrt(m*n.Regional*n.Regional + n.Global*n.Global)
	pr := edgeNoisePair(top.Privacy.SamplingRate, n.Edge, sl, dim)
	eps := ledgerEpsilon(t, top, dim)
	for _, o := range []ledger.Observer{ledger.Public, ledger.FellowClients} {
		if got := eps.Get(o); got < 10.39 {
			t.Errorf("%s: ledger ε %v, below the revealed-sampling value 10.39", o, got)
		}
	}
	up, upRev, err := pr.Losses(2e-3, 40, privacytest.Upper)
	if err != nil {
		t.Fatal(err)
	}
	rounds := top.Train.Rounds
	if d := privacytest.ComposedDelta(up, upRev, rounds, eps.Public); d > top.Privacy.Delta {
		t.Errorf("true δ at the ledger's public ε %.4f is %.3g > δ %g", eps.Public, d, top.Privacy.Delta)
	}
	t.Logf("public: true ε at δ %g is at most %.4f", top.Privacy.Delta, privacytest.ComposedEpsilon(up, upRev, rounds, top.Privacy.Delta))
	lo, loRev, _ := pr.Losses(2e-3, 40, privacytest.Lower)
	const oldClaim = 2.17 // amplified subsampled Gaussian at σ = √(σ_e² + m·σ_r² + σ_g²)
	if d := privacytest.ComposedDelta(lo, loRev, rounds, oldClaim); !(d > 100*top.Privacy.Delta) {
		t.Errorf("true δ at the old claim ε = %v is only %.3g: the test would not have caught it", oldClaim, d)
	} else {
		t.Logf("public: ledger ε %.4f; true δ at the old claim %.2f is ≥ %.3g", eps.Public, oldClaim, d)
	}
}

// TestDefaultPlanHolds: the default plan (no edge noise) — the public sees
// the sum of at least min_regions noised partials and the global noise;
// c's participation is hidden.
func TestDefaultPlanHolds(t *testing.T) {
	const dim = 2858
	top := topology.Default()
	n, m := top.Privacy.Noise, float64(top.Privacy.MinRegions)
	s := math.Sqrt(m*n.Regional*n.Regional + n.Global*n.Global)
	q := top.Privacy.SamplingRate
	pr := privacytest.Pair{
		LogP: func(x []float64) float64 {
			return privacytest.LogMix(q, privacytest.LogNormal(x[0], 1, s), privacytest.LogNormal(x[0], 0, s))
		},
		LogQ: func(x []float64) float64 { return privacytest.LogNormal(x[0], 0, s) },
		Grid: []privacytest.Axis{{Lo: -15 * s, Hi: 1 + 15*s, N: 100000}},
	}
	eps := ledgerEpsilon(t, top, dim)
	if math.Abs(eps.Public-2.7255) > 5e-5 {
		t.Errorf("default plan: public ε %v, want 2.7255 (unchanged)", eps.Public)
	}
	up, upRev, _ := pr.Losses(5e-4, 30, privacytest.Upper)
	for _, o := range []ledger.Observer{ledger.Public, ledger.FellowClients} {
		if d := privacytest.ComposedDelta(up, upRev, top.Train.Rounds, eps.Get(o)); d > top.Privacy.Delta {
			t.Errorf("%s: true δ at ε %.4f is %.3g > %g", o, eps.Get(o), d, top.Privacy.Delta)
		}
	}
}
