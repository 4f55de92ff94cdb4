package global

import (
	"errors"
	"fmt"

	"github.com/strata-fl/strata/topology"
)

// ErrPacing reports a pacing target that cannot be met.
var ErrPacing = errors.New("global: budget pacing cannot meet its target")

// projectPublic returns the public ε after spending `rounds` more rounds
// at costing in on top of what the ledger has charged, as the ledger would
// record it after the last of them.
func projectPublic(t *topology.Topology, in Costing, spent Spent, rounds int) (float64, error) {
	rc, err := roundCost(Mechanisms(t, in), in, spent, t.Privacy.Delta, rounds)
	return rc.EpsilonAfter.Public, err
}

// PaceNoise returns the noise plan for the next round: the topology's plan
// scaled by the smallest factor s such that spending the remaining rounds
// at s lands the public ε at or below the target. Recomputed before every
// round from what the ledger actually recorded, it corrects for aborted
// rounds and ends within the bisection's tolerance below the target. in
// gives everything but the noise (clip norm, dimension, caps).
func PaceNoise(t *topology.Topology, in Costing, spent Spent, remaining int) (topology.Noise, float64, error) {
	target := t.Privacy.Pacing.TargetEpsilon
	base := t.Privacy.Noise
	scaled := func(s float64) topology.Noise { return scaleNoise(base, s) }
	eps := func(s float64) (float64, error) {
		c := in
		c.Noise = scaled(s)
		return projectPublic(t, c, spent, remaining)
	}
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
