package global

import (
	"fmt"
	"math"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/topology"
)

// roundPlan is what one round uses: the noise multipliers per tier and the
// clip norm. Both can change from round to round (pacing, adaptive
// clipping); the ledger records them with the round.
type roundPlan struct {
	noise    topology.Noise
	clip     float64
	eligible int // N of the fixed denominator q·N
}

// planRound decides the next round's noise and clip norm from the ledger.
func (c *Coordinator) planRound(cum *ledger.PerObserver[[]float64], round uint64) (roundPlan, error) {
	t := c.top
	plan := roundPlan{noise: t.Privacy.Noise, clip: t.Privacy.ClipNorm}
	c.cfg.Node.Read(func(l *ledger.Ledger) {
		if l.ClipNorm > 0 {
			plan.clip = l.ClipNorm
		}
	})
	if t.Privacy.AdaptiveClip.Enabled && t.Privacy.Pacing.TargetEpsilon == 0 {
		n, err := AdaptiveNoise(t, len(c.theta))
		if err != nil {
			return plan, err
		}
		plan.noise = n
	}
	if t.Privacy.Pacing.TargetEpsilon > 0 {
		var committed int
		c.cfg.Node.Read(func(l *ledger.Ledger) { committed = l.CommittedRounds() })
		remaining := t.Train.Rounds - committed
		n, scale, err := PaceNoise(t, len(c.theta), cum.Public, round-1, remaining)
		if err != nil {
			return plan, fmt.Errorf("round %d: %w", round, err)
		}
		c.cfg.Logger.Debug("paced noise", "round", round, "scale", scale, "remaining", remaining)
		plan.noise = n
	}
	return plan, nil
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
		return fmt.Sprintf("converged: evaluation loss has not improved for %d rounds (best %.4f at model v%d); remaining budget left unspent", k, best, bestAt+1)
	}
	return ""
}

// AdaptiveNoise returns the update noise plan that, together with the
// clipping bits' noise, costs the public exactly what the plan would cost
// with fixed clipping: z_Δ = (z⁻² − z_b⁻²)^(−1/2) (Andrew et al. 2021), with
// every tier scaled by the same factor.
func AdaptiveNoise(t *topology.Topology, dim int) (topology.Noise, error) {
	fixed := t.Clone()
	fixed.Privacy.AdaptiveClip.Enabled = false
	z := Mechanisms(fixed, t.Privacy.Noise, dim)[ledger.Public].Sigma
	if z == 0 {
		return t.Privacy.Noise, nil
	}
	// Find s with Mechanisms(t, s·noise).Public = z; it is monotone in s.
	lo, hi := 1.0, 1.0
	at := func(s float64) float64 {
		return Mechanisms(t, scaleNoise(t.Privacy.Noise, s), dim)[ledger.Public].Sigma
	}
	for at(hi) < z {
		if hi > 1e6 {
			return topology.Noise{}, fmt.Errorf("global: adaptive clipping: bit_noise %v is too small to keep the public noise multiplier at %.4g: raise privacy.adaptive_clip.bit_noise", t.Privacy.AdaptiveClip.BitNoise, z)
		}
		lo, hi = hi, hi*2
	}
	for i := 0; i < 200 && hi-lo > 1e-15*hi; i++ {
		mid := (lo + hi) / 2
		if at(mid) < z {
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
