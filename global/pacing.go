package global

import (
	"errors"
	"fmt"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/privacy"
	"github.com/strata-fl/strata/topology"
)

// ErrPacing reports a pacing target that cannot be met.
var ErrPacing = errors.New("global: budget pacing cannot meet its target")

// projectPublic returns the public ε after spending `rounds` more rounds
// with noise plan n on top of the cumulative curve cum, as the ledger would
// record it after the last of them (done rounds already charged).
func projectPublic(t *topology.Topology, n topology.Noise, dim int, cum []float64, done uint64, rounds int) (float64, error) {
	m := Mechanisms(t, n, dim)[ledger.Public]
	step := privacy.RDPStep(m.Q, m.Sigma)
	for i := range step {
		step[i] *= float64(rounds)
		if i < len(cum) {
			step[i] += cum[i]
		}
	}
	e, _, err := privacy.EpsilonFromRDP(step, t.Privacy.Delta)
	return e + samplerSlack(dim, done+uint64(rounds)), err
}

// PaceNoise returns the noise plan for the next round: the topology's plan
// scaled by the smallest factor s such that spending the remaining rounds
// at s lands the public ε at or below the target. Recomputed before every
// round from what the ledger actually recorded, it corrects for aborted
// rounds and ends within the bisection's tolerance below the target.
func PaceNoise(t *topology.Topology, dim int, cum []float64, done uint64, remaining int) (topology.Noise, float64, error) {
	target := t.Privacy.Pacing.TargetEpsilon
	base := t.Privacy.Noise
	scaled := func(s float64) topology.Noise { return scaleNoise(base, s) }
	eps := func(s float64) (float64, error) { return projectPublic(t, scaled(s), dim, cum, done, remaining) }
	if e, err := eps(1e6); err != nil || e > target {
		return topology.Noise{}, 0, fmt.Errorf("%w: even ×1e6 noise leaves ε above %.4g after %d more rounds (spent so far is too close to the target)", ErrPacing, target, remaining)
	}
	lo, hi := 0.0, 1.0
	for {
		e, err := eps(hi)
		if err != nil {
			return topology.Noise{}, 0, err
		}
		if e <= target {
			break
		}
		lo, hi = hi, hi*2
	}
	// Keep hi on the safe side (ε ≤ target); stop at a relative width of
	// 1e-5 in s, which moves ε by far less than the 2% pacing promises.
	for hi-lo > 1e-5*hi {
		mid := (lo + hi) / 2
		e, err := eps(mid)
		if err != nil {
			return topology.Noise{}, 0, err
		}
		if e <= target {
			hi = mid
		} else {
			lo = mid
		}
	}
	return scaled(hi), hi, nil
}
