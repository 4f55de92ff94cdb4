package global

import (
	"math"
	"testing"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/privacy"
	"github.com/strata-fl/strata/topology"
)

// TestPerObserverComposition checks, for noise at one, two and three tiers,
// that the ε the ledger would record after T rounds equals the privacy
// engine's ε for the mechanism DESIGN.md §3 prescribes, and that an observer
// whose only protection would be its own noise shows ε = ∞.
func TestPerObserverComposition(t *testing.T) {
	const dim, rounds = 1000, 25
	const q, delta = 0.05, 1e-5
	tests := []struct {
		name  string
		noise topology.Noise
		// the prescribed noise multipliers; 0 means unprotected (∞)
		public, globalOp, regionalOp float64
	}{
		{"global only", topology.Noise{Global: 1.1}, 1.1, 0, 0},
		{"regional only", topology.Noise{Regional: 0.8}, math.Sqrt(2 * 0.64), 0.8, 0},
		{"edge only", topology.Noise{Edge: 0.9}, 0.9, 0.9, 0.9},
		{"regional and global", topology.Noise{Regional: 0.6, Global: 0.6}, math.Sqrt(3 * 0.36), 0.6, 0},
		{"edge and regional", topology.Noise{Edge: 0.3, Regional: 0.6}, math.Sqrt(0.09 + 2*0.36), math.Sqrt(0.09 + 0.36), 0.3},
		{"all three", topology.Noise{Edge: 0.2, Regional: 0.5, Global: 0.7}, math.Sqrt(0.04 + 2*0.25 + 0.49), math.Sqrt(0.04 + 0.25), 0.2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			top := topology.Default()
			top.Privacy.Noise = tt.noise
			top.Privacy.SamplingRate = q
			top.Privacy.MinRegions = 2
			mech := Mechanisms(top, top.Privacy.Noise, dim)
			var cum ledger.PerObserver[[]float64]
			var eps ledger.PerObserver[float64]
			for r := uint64(1); r <= rounds; r++ {
				rdp, e, _, err := roundCost(mech, &cum, delta, samplerSlack(dim, r))
				if err != nil {
					t.Fatal(err)
				}
				for _, o := range ledger.Observers {
					next := rdp.Get(o)
					if prev := cum.Get(o); prev != nil {
						for i := range next {
							next[i] += prev[i]
						}
					}
					cum.Set(o, next)
				}
				eps = e
			}
			want := map[ledger.Observer]struct{ q, sigma float64 }{
				ledger.Public:           {q, tt.public},
				ledger.GlobalOperator:   {1, tt.globalOp},
				ledger.RegionalOperator: {1, tt.regionalOp},
			}
			for _, o := range ledger.Observers {
				w := want[o]
				got := eps.Get(o)
				if w.sigma == 0 {
					if !math.IsInf(got, 1) {
						t.Errorf("%s: got ε %v, want ∞ (no noise protects against it)", o, got)
					}
					continue
				}
				ref, err := privacy.NewRDP().Epsilon([]privacy.Part{{Q: w.q, Sigma: w.sigma, Steps: rounds}}, delta)
				if err != nil {
					t.Fatal(err)
				}
				if math.Abs(got-ref) > 1e-9*ref {
					t.Errorf("%s: ledger ε %v, engine ε %v (σ %v): relative gap %.3g", o, got, ref, w.sigma, math.Abs(got-ref)/ref)
				}
				if got < ref {
					t.Errorf("%s: ledger ε %v below the engine's %v: must never under-count", o, got, ref)
				}
			}
		})
	}
}
