package global

import (
	"fmt"
	"math"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/topology"
)

// roundPlan is what one round uses: the noise multipliers per tier, the
// clip norm and the top-up caps. All can change from round to round
// (pacing, adaptive clipping, retirements); the ledger records them with
// the round.
type roundPlan struct {
	cost     Costing
	lattice  float64 // the round's one noise lattice
	eligible int     // N of the fixed denominator q·N
}

// planRound decides the next round's noise, clip norm and caps from the
// ledger.
func (c *Coordinator) planRound(spent Spent, round uint64) (roundPlan, error) {
	t := c.top
	in := Costing{Noise: t.Privacy.Noise, Clip: t.Privacy.ClipNorm, Dim: len(c.theta)}
	var committed int
	counts := map[string]int{}
	c.cfg.Node.Read(func(l *ledger.Ledger) {
		if l.ClipNorm > 0 {
			in.Clip = l.ClipNorm
		}
		committed = l.CommittedRounds()
		for _, cl := range l.Clients {
			if cl.Status == ledger.ClientActive {
				counts[cl.Region]++
				in.Population++
			}
		}
	})
	var err error
	if in.Caps, err = TopUpCaps(t, counts); err != nil {
		return roundPlan{}, err
	}
	if t.Privacy.AdaptiveClip.Enabled && t.Privacy.Pacing.TargetEpsilon == 0 {
		if in.Noise, err = AdaptiveNoise(t, in); err != nil {
			return roundPlan{}, err
		}
	}
	if t.Privacy.Pacing.TargetEpsilon > 0 {
		remaining := t.Train.Rounds - committed
		n, scale, err := PaceNoise(t, in, spent, remaining)
		if err != nil {
			return roundPlan{}, fmt.Errorf("round %d: %w", round, err)
		}
		c.cfg.Logger.Debug("paced noise", "round", round, "scale", scale, "remaining", remaining)
		in.Noise = n
	}
	g, err := in.Lattice(t)
	if err != nil {
		return roundPlan{}, fmt.Errorf("round %d: %w", round, err)
	}
	return roundPlan{cost: in, lattice: g}, nil
}

// updateEncoding is the encoding a round's updates must use: float64 on
// the lattice when the ledger adds the edge noise to the later noise (no
// secure aggregation, no compression), so that nothing rounds between
// them; "" (the client's own choice) otherwise.
func updateEncoding(t *topology.Topology, n topology.Noise) string {
	if n.Edge > 0 && !t.SecAgg.On && !t.DataPath.Compressed() {
		return wire.EncodingF64
	}
	return ""
}

// converged reports why the job should stop early: the evaluation loss has
// not improved for Patience rounds. It reads the committed models, so a new
// leader reaches the same verdict.
func (c *Coordinator) converged() string {
	k := c.top.Privacy.Pacing.Patience
	if k <= 0 {
		return ""
	}
	var losses []float64
	c.cfg.Node.Read(func(l *ledger.Ledger) {
		for _, m := range l.Models {
			losses = append(losses, m.Loss)
		}
	})
	if len(losses) <= k {
		return ""
	}
	best := losses[0]
	bestAt := 0
	for i, v := range losses {
		if v < best {
			best, bestAt = v, i
		}
	}
	if len(losses)-1-bestAt >= k {
		return fmt.Sprintf("converged: evaluation loss has not improved for %d rounds (best %.4f at model v%d); the planned rounds not run are charged (stopping on the outputs is post-processing of the planned run)", k, best, bestAt+1)
	}
	return ""
}

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
// not clipped, estimated with the expected participant count.
func NextClip(c, bitSum, expected, gamma, eta float64) float64 {
	if expected <= 0 {
		return c
	}
	frac := bitSum/expected + 0.5
	return c * math.Exp(-eta*(frac-gamma))
}
