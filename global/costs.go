package global

import (
	"math"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/privacy"
	"github.com/strata-fl/strata/topology"
)

// ObserverMechanism is the mechanism one observer sees in one round: the
// sampling rate it cannot see through and the noise multiplier the protocol
// guarantees against it (DESIGN.md §3).
type ObserverMechanism struct {
	Q     float64
	Sigma float64
}

// Mechanisms returns each observer's mechanism for a round of plan p.
//
//   - public: sampling is hidden (q); protected by the client's own edge
//     noise, the noise of the MinRegions regions a release requires (the
//     client's own among them) and the global noise.
//   - global operator: it chose the sample (q = 1) and sees each region's
//     partial, so only the client's region's noise and the client's own edge
//     noise protect it; its own global noise does not count.
//   - regional operator: sees individual updates, or with secure
//     aggregation (secagg.on) only the survivors' sum; either way only the
//     client's own edge noise counts. Secure aggregation adds no noise, and
//     the other survivors' edge noise is not provably added to the client's
//     (each quantizes on its own, some may collude): secagg/doc.go, "What
//     the ledger may claim".
//
// Other clients' edge noise is never credited: a client that drops out
// takes its noise with it, and the ledger only over-counts.
//
// The secure sampler snaps values to a power-of-two granularity before
// adding noise (privacy.SnapSensitivity), which can widen the gap between
// neighbouring inputs from C to C + g√d at each tier that adds noise; every
// multiplier is divided by that widened sensitivity, over all tiers at once.
func Mechanisms(t *topology.Topology, n topology.Noise, dim int) map[ledger.Observer]ObserverMechanism {
	m := float64(t.Privacy.MinRegions)
	c := t.Privacy.ClipNorm
	widened := c
	for _, mult := range []float64{n.Edge, n.Regional, n.Global} {
		if mult > 0 {
			widened += privacy.SnapSensitivity(c, mult*c, dim) - c
		}
	}
	scale := c / widened
	mech := map[ledger.Observer]ObserverMechanism{
		ledger.Public:           {Q: t.Privacy.SamplingRate, Sigma: scale * math.Sqrt(n.Edge*n.Edge+m*n.Regional*n.Regional+n.Global*n.Global)},
		ledger.GlobalOperator:   {Q: 1, Sigma: scale * math.Sqrt(n.Edge*n.Edge+n.Regional*n.Regional)},
		ledger.RegionalOperator: {Q: 1, Sigma: scale * n.Edge},
	}
	if s := t.SecAgg; s.On {
		// With secure aggregation a client's contribution to its region's
		// sum is q(x + e): its edge-noised update, rounded stochastically
		// to steps of C/scale. The rounding sits between the edge noise and
		// the noise added later, so the two no longer add up to one
		// Gaussian. Two bounds each hold on their own, and the ledger takes
		// the better, never their combination:
		//   - everything after the edge noise is post-processing of x + e:
		//     the edge noise alone, as for the regional operator;
		//   - given e and the rounding coins, q is deterministic and moves
		//     at most one step per coordinate further than x does, so the
		//     regional and global noise protect a sensitivity of
		//     C + √d·C/scale (on top of the sampler's widening).
		later := 0.0 // no scale (an unvalidated plan): credit the edge noise only
		if s.Scale > 0 {
			later = c / (widened + c*math.Sqrt(float64(dim))/s.Scale)
		}
		edgeOnly := scale * n.Edge
		mech[ledger.Public] = ObserverMechanism{Q: t.Privacy.SamplingRate, Sigma: math.Max(edgeOnly, later*math.Sqrt(m*n.Regional*n.Regional+n.Global*n.Global))}
		mech[ledger.GlobalOperator] = ObserverMechanism{Q: 1, Sigma: math.Max(edgeOnly, later*n.Regional)}
	}
	if ac := t.Privacy.AdaptiveClip; ac.Enabled {
		// The clipping bits are a second Gaussian release of the same
		// clients: Σ(bit − ½) has sensitivity ½, so region noise σ_b is a
		// multiplier 2σ_b. The public sees at least MinRegions regions'
		// bit noise, the global operator its client's region's, and the
		// regional operator the bits in clear — or, with secure
		// aggregation, only their sum over the survivors, but un-noised at
		// its tier: no claim is made for it (0, so ε stays ∞ against the
		// regional operator), which is conservative.
		sb := ac.BitNoise * 2 * widenedBit(ac.BitNoise, widened/c)
		bits := map[ledger.Observer]float64{ledger.Public: math.Sqrt(m) * sb, ledger.GlobalOperator: sb, ledger.RegionalOperator: 0}
		for o, mm := range mech {
			mm.Sigma = combine(mm.Sigma, bits[o])
			mech[o] = mm
		}
	}
	return mech
}

// widenedBit charges the bit release the same relative sensitivity
// widening as the update (the snapping of its single coordinate is far
// smaller, so this over-counts).
func widenedBit(_ float64, widening float64) float64 { return 1 / widening }

// combine returns the multiplier of two independent Gaussian releases of
// the same data, z = (z₁⁻² + z₂⁻²)^(−1/2); an unprotected part (0) makes
// the whole unprotected.
func combine(z1, z2 float64) float64 {
	if z1 == 0 || z2 == 0 {
		return 0
	}
	return 1 / math.Sqrt(1/(z1*z1)+1/(z2*z2))
}

// samplerSlack is the ε the secure sampler's float64 acceptance test may add
// per release and per coordinate (privacy.Gaussian: below 2^-47); the ledger
// charges it for each of the three tiers in every round rather than leave it
// out.
func samplerSlack(dim int, rounds uint64) float64 {
	return 3 * float64(dim) * math.Ldexp(1, -47) * float64(rounds)
}

// roundCost computes, on the proposer, one round's RDP curve per observer
// and the cumulative ε after it, given the ledger's cumulative curves.
func roundCost(mech map[ledger.Observer]ObserverMechanism, cum *ledger.PerObserver[[]float64], delta, slack float64) (rdp ledger.PerObserver[[]float64], eps, sig ledger.PerObserver[float64], err error) {
	for _, o := range ledger.Observers {
		m := mech[o]
		step := privacy.RDPStep(m.Q, m.Sigma)
		prev := cum.Get(o)
		after := make([]float64, len(step))
		for i, v := range step {
			after[i] = v
			if i < len(prev) {
				after[i] += prev[i]
			}
		}
		e, _, err := privacy.EpsilonFromRDP(after, delta)
		if err != nil {
			return rdp, eps, sig, err
		}
		rdp.Set(o, step)
		eps.Set(o, e+slack)
		sig.Set(o, m.Sigma)
	}
	return rdp, eps, sig, nil
}
