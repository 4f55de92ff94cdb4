package global

import (
	"math"
	"testing"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/privacy"
	"github.com/strata-fl/strata/topology"
)

// TestSecAggLedgerClaims: secure aggregation changes no noise multiplier
// against the regional operator (∞ without edge noise, the edge noise with
// it; never the other clients' noise), keeps it ∞ with adaptive clipping
// (the bits' sum is un-noised at that tier), and against the global
// operator and the public credits the better of the edge noise alone and
// the later tiers' noise over the rounding-widened sensitivity — never
// their combination, and never more than without secagg.
func TestSecAggLedgerClaims(t *testing.T) {
	const dim = 10000
	for _, tc := range []struct {
		name     string
		noise    topology.Noise
		adaptive bool
		regional float64 // expected multiplier against the regional operator
	}{
		{"no edge noise", topology.Noise{Regional: 0.6, Global: 0.6}, false, 0},
		{"edge noise", topology.Noise{Edge: 0.5, Regional: 0.6, Global: 0.6}, false, 0.5},
		{"edge only", topology.Noise{Edge: 0.9}, false, 0.9},
		{"adaptive clipping", topology.Noise{Edge: 0.5, Regional: 0.6, Global: 0.6}, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			top := topology.Default()
			top.Privacy.Noise = tc.noise
			top.Privacy.AdaptiveClip.Enabled = tc.adaptive
			top.SecAgg = topology.SecAgg{On: true}
			top.ApplyDefaults()
			if err := top.Validate(); err != nil {
				t.Fatal(err)
			}
			plain := top.Clone()
			plain.SecAgg.On = false
			in := Costing{Noise: tc.noise, Clip: top.Privacy.ClipNorm, Dim: dim}
			on, off := Mechanisms(top, in), Mechanisms(plain, in)
			snap := off[ledger.RegionalOperator].Sigma / math.Max(tc.noise.Edge, 1e-300) // the sampler's widening, ≤ 1
			if tc.noise.Edge == 0 {
				snap = 1
			}
			if got := on[ledger.RegionalOperator].Sigma; math.Abs(got-tc.regional*snap) > 1e-12 {
				t.Fatalf("regional operator credited %v, want %v", got, tc.regional*snap)
			}
			if on[ledger.RegionalOperator].Sigma != off[ledger.RegionalOperator].Sigma {
				t.Fatalf("secagg changed the regional operator's multiplier: %v, %v without", on[ledger.RegionalOperator].Sigma, off[ledger.RegionalOperator].Sigma)
			}
			for _, o := range []ledger.Observer{ledger.Public, ledger.GlobalOperator} {
				got, was := on[o].Step(), off[o].Step()
				for i := range got {
					if got[i] < was[i]*(1-1e-12) {
						t.Fatalf("%s: order %v costs %v with secagg, %v without: secagg must never cost less", o, privacy.Orders()[i], got[i], was[i])
					}
					if tc.noise.Edge == 0 && got[i] > 1.01*was[i] {
						t.Fatalf("%s: order %v costs %v with secagg, %v without: without edge noise only the rounding's widening (√d/scale ≈ %.1e) may raise it", o, privacy.Orders()[i], got[i], was[i], math.Sqrt(dim)/top.SecAgg.Scale)
					}
				}
				if tc.noise.Edge > 0 && !tc.adaptive && on[o].credited() < snap*tc.noise.Edge*(1-1e-12) {
					t.Fatalf("%s: %v with secagg is below the edge noise alone %v", o, on[o].credited(), snap*tc.noise.Edge)
				}
			}
			// Secure aggregation tells a client its neighbours: fellow clients
			// get no amplification.
			if f := on[ledger.FellowClients]; f.Q != 1 || !f.Revealed {
				t.Fatalf("fellow clients under secagg: %+v, want q = 1 and participation revealed", f)
			}
		})
	}
}

// TestCheckRequireSecAgg: policy.require_secagg fails a plan without
// secure aggregation and passes the same plan with it.
func TestCheckRequireSecAgg(t *testing.T) {
	top := topology.Default()
	top.Policy.RequireSecAgg = true
	_, vs, err := Check(top, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 1 || vs[0].Rule != "require_secagg" {
		t.Fatalf("violations %v, want require_secagg alone", vs)
	}
	top.SecAgg = topology.SecAgg{On: true}
	top.ApplyDefaults()
	if err := top.Validate(); err != nil {
		t.Fatal(err)
	}
	if _, vs, err = Check(top, 1000); err != nil || len(vs) != 0 {
		t.Fatalf("with secagg on: violations %v, err %v; want none", vs, err)
	}
	// A model whose masked input cannot travel as one message is refused.
	if _, vs, _ = Check(top, 3_000_000); len(vs) != 1 || vs[0].Rule != "secagg" {
		t.Fatalf("violations %v for a 3e6-parameter model, want the secagg size rule", vs)
	}
	// require_noise_against: [regional_operator] still needs edge noise
	// with secagg on: secure aggregation is not noise.
	top.Policy.RequireNoiseAgainst = []string{"regional_operator"}
	if _, vs, _ = Check(top, 1000); len(vs) != 1 || vs[0].Rule != "require_noise_against" {
		t.Fatalf("violations %v, want require_noise_against: secagg does not protect against the regional operator by itself", vs)
	}
}
