package global

import (
	"math"
	"testing"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/topology"
)

// TestMechanismRules pins, plan by plan, which noise each observer is
// credited with and whether it sees through the sampling (the rows of
// docs/privacy-model.md). Whether those rules give a true bound is what
// the first-principles tests (privacy_model_test.go) check.
func TestMechanismRules(t *testing.T) {
	const dim, q = 1000, 0.05
	type want struct {
		q, sigma float64
		revealed bool
	}
	tests := []struct {
		name     string
		noise    topology.Noise
		compress string
		public   want
		fellow   want
		globalOp want
		regional want
	}{
		{"global only", topology.Noise{Global: 1.1}, "",
			want{q, 1.1, false}, want{q, 1.1, false}, want{1, 0, false}, want{1, 0, false}},
		{"regional and global", topology.Noise{Regional: 0.6, Global: 0.6}, "",
			want{q, math.Sqrt(3 * 0.36), false}, want{q, math.Sqrt(3 * 0.36), false}, want{1, 0.6, false}, want{1, 0, false}},
		// A client adds edge noise only when sampled: the public sees
		// participation in the variance.
		{"edge only", topology.Noise{Edge: 0.9}, "",
			want{q, 0.9, true}, want{q, 0.9, true}, want{1, 0.9, false}, want{1, 0.9, false}},
		{"all three", topology.Noise{Edge: 0.2, Regional: 0.5, Global: 0.7}, "",
			want{q, math.Sqrt(0.04 + 2*0.25 + 0.49), true}, want{q, math.Sqrt(0.04 + 2*0.25 + 0.49), true}, want{1, math.Sqrt(0.04 + 0.25), false}, want{1, 0.2, false}},
		// Compression sits between the edge noise and the later noise:
		// only the edge noise is credited.
		{"top-k after edge noise", topology.Noise{Edge: 1, Regional: 0.6}, "topk",
			want{q, 1, true}, want{q, 1, true}, want{1, 1, false}, want{1, 1, false}},
		{"q8 without edge noise", topology.Noise{Regional: 0.6, Global: 0.6}, "q8",
			want{q, math.Sqrt(3 * 0.36), false}, want{q, math.Sqrt(3 * 0.36), false}, want{1, 0.6, false}, want{1, 0, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			top := topology.Default()
			top.Privacy.Noise = tt.noise
			top.Privacy.SamplingRate = q
			top.Privacy.MinRegions = 2
			top.DataPath.Compression = tt.compress
			mech := Mechanisms(top, Costing{Noise: tt.noise, Clip: top.Privacy.ClipNorm, Dim: dim})
			for o, w := range map[ledger.Observer]want{ledger.Public: tt.public, ledger.FellowClients: tt.fellow, ledger.GlobalOperator: tt.globalOp, ledger.RegionalOperator: tt.regional} {
				m := mech[o]
				if m.Q != w.q || m.Revealed != w.revealed || len(m.Or) != 0 {
					t.Errorf("%s: q %v revealed %v (%d alternatives), want q %v revealed %v", o, m.Q, m.Revealed, len(m.Or), w.q, w.revealed)
				}
				// The sampler's widening lowers σ by a relative 1e-9 at most.
				if math.Abs(m.Sigma-w.sigma) > 1e-8*max(w.sigma, 1) || m.Sigma > w.sigma {
					t.Errorf("%s: σ %v, want %v (less the widening)", o, m.Sigma, w.sigma)
				}
			}
			rc, err := roundCost(mech, Costing{Noise: tt.noise, Clip: 1, Dim: dim}, Spent{}, 1e-5, 25)
			if err != nil {
				t.Fatal(err)
			}
			for o, w := range map[ledger.Observer]want{ledger.GlobalOperator: tt.globalOp, ledger.RegionalOperator: tt.regional} {
				if w.sigma == 0 && !math.IsInf(rc.EpsilonAfter.Get(o), 1) {
					t.Errorf("%s: ε %v, want ∞ (no noise protects against it)", o, rc.EpsilonAfter.Get(o))
				}
			}
		})
	}
}

// TestSlackCountsCreditedSamplers: the sampler's float64 slack is charged
// for every draw the credited noise comes from — with edge noise and two
// required regions, four against the public (edge, two regions, global),
// not a fixed three.
func TestSlackCountsCreditedSamplers(t *testing.T) {
	const dim = 2858
	top := topology.Default()
	in := Costing{Noise: topology.Noise{Edge: 0.5, Regional: 0.6, Global: 0.6}, Clip: 1, Dim: dim}
	mech := Mechanisms(top, in)
	slack := roundSlack(mech, dim)
	unit := float64(dim) * math.Ldexp(1, -47)
	for o, n := range map[ledger.Observer]int{ledger.Public: 2 + top.Privacy.MinRegions, ledger.GlobalOperator: 2, ledger.RegionalOperator: 1} {
		if got := slack.Get(o); math.Abs(got-float64(n)*unit) > 1e-18 {
			t.Errorf("%s: slack %v, want %d draws × d × 2^-47 = %v", o, got, n, float64(n)*unit)
		}
	}
}

// TestWideningUsesTheRoundsClip: the snap widening depends on where σ·C
// falls between powers of two, so it must be computed with the round's
// clip norm, not the topology's.
func TestWideningUsesTheRoundsClip(t *testing.T) {
	const dim = 1_000_000
	top := topology.Default()
	n := topology.Noise{Regional: 0.6, Global: 0.6}
	// C = 1: σC = 0.6 snaps to 2^-40; C = 1.7: σC = 1.02 snaps to 2^-39, a
	// relative widening about 1.2 times larger.
	at := func(c float64) float64 {
		return Mechanisms(top, Costing{Noise: n, Clip: c, Dim: dim})[ledger.GlobalOperator].Sigma
	}
	if !(at(1.7) < at(1)) {
		t.Fatalf("σ credited at C = 1.7 (%v) should be below C = 1's (%v): the round's clip norm must set the grid", at(1.7), at(1))
	}
}
