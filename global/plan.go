package global

import (
	"fmt"

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
