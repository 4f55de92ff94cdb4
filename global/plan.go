package global

import (
	"fmt"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/global/round"
	"github.com/strata-fl/strata/topology"
)

// AdaptiveNoise returns the update noise plan that, together with the
// clipping bits' noise, costs the public exactly what the plan would cost
// with fixed clipping: z_Δ = (z⁻² − z_b⁻²)^(−1/2) (Andrew et al. 2021), with
// every tier scaled by the same factor. in gives the clip norm, dimension
// and caps; its noise is ignored (the topology's plan is the base).
func AdaptiveNoise(t *topology.Topology, in Costing) (topology.Noise, error) {
	fixed := t.Clone()
	fixed.Privacy.AdaptiveClip.Enabled = false
	at := func(top *topology.Topology, n topology.Noise) float64 {
		c := in
		c.Noise = n
		return Mechanisms(top, c)[ledger.Public].Sigma
	}
	z := at(fixed, t.Privacy.Noise)
	if z == 0 {
		return t.Privacy.Noise, nil
	}
	// Find s with the public multiplier at s·noise equal to z; it is
	// monotone in s.
	lo, hi := 1.0, 1.0
	for at(t, scaleNoise(t.Privacy.Noise, hi)) < z {
		if hi > 1e6 {
			return topology.Noise{}, fmt.Errorf("global: adaptive clipping: bit_noise %v is too small to keep the public noise multiplier at %.4g: raise privacy.adaptive_clip.bit_noise", t.Privacy.AdaptiveClip.BitNoise, z)
		}
		lo, hi = hi, hi*2
	}
	for i := 0; i < 200 && hi-lo > 1e-15*hi; i++ {
		mid := (lo + hi) / 2
		if at(t, scaleNoise(t.Privacy.Noise, mid)) < z {
			lo = mid
		} else {
			hi = mid
		}
	}
	return scaleNoise(t.Privacy.Noise, hi), nil
}

func scaleNoise(n topology.Noise, s float64) topology.Noise {
	return topology.Noise{Edge: s * n.Edge, Regional: s * n.Regional, Global: s * n.Global}
}

// NextClip is the geometric update of Andrew et al. (2021):
// C ← C·exp(−η(b̄ − γ)), where b̄ is the noisy fraction of updates that were
// not clipped, estimated with the expected participant count. The round
// machine applies it (round.NextClip); it is here for callers of global.
func NextClip(c, bitSum, expected, gamma, eta float64) float64 {
	return round.NextClip(c, bitSum, expected, gamma, eta)
}
