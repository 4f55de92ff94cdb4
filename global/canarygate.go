package global

import (
	"context"
	"fmt"
	"math"

	"github.com/strata-fl/strata/empirical"
	"github.com/strata-fl/strata/global/ledger"
)

// canaryGate holds, per canary (K inserted, then K unseen), the maximum
// over served versions of the cosine of its direction with the version's
// delta: the all-iterates statistic of what the public has been served.
// Directions are drawn again when needed rather than kept: 2K·d float64s
// would be the largest thing the global tier holds.
type canaryGate struct {
	maxCos []float64
}

// direction is canary i's direction for the model's size.
func (c *Coordinator) direction(i int) []float64 {
	return empirical.Direction(c.top.CanarySeed(), i, len(c.cfg.Initial))
}

// canaryGateReason is the audit gate (audit.max_empirical_epsilon): it
// returns why the candidate theta (trained from base) must not be promoted
// — the one-shot ε estimate over the served versions and the candidate
// exceeds the threshold — or "" to promote. With no gate configured it
// always returns "".
func (c *Coordinator) canaryGateReason(ctx context.Context, theta, base []float64) (string, error) {
	a := c.top.Audit
	if a.MaxEpsilon == 0 || a.Canaries == 0 {
		return "", nil
	}
	if c.gate == nil {
		if err := c.loadCanaryGate(ctx); err != nil {
			return "", err
		}
	}
	cand := append([]float64(nil), c.gate.maxCos...)
	delta := make([]float64, len(theta))
	for i := range delta {
		delta[i] = theta[i] - base[i]
	}
	for i := range cand {
		cand[i] = math.Max(cand[i], empirical.Cosine(c.direction(i), delta))
	}
	k := a.Canaries
	est, err := empirical.EstimateFrom(cand[:k], cand[k:], nil, c.top.Privacy.Delta)
	if err != nil {
		return "", fmt.Errorf("global: canary gate: %w", err)
	}
	if eps := float64(est.Epsilon); eps > a.MaxEpsilon {
		return fmt.Sprintf("empirical ε estimate %.4g over the served versions and this one exceeds audit.max_empirical_epsilon %.4g", eps, a.MaxEpsilon), nil
	}
	c.gate.maxCos = cand
	return "", nil
}

// loadCanaryGate rebuilds the statistics from every version ever promoted
// (a leader that takes over, or a restart, starts here).
func (c *Coordinator) loadCanaryGate(ctx context.Context) error {
	a := c.top.Audit
	g := &canaryGate{maxCos: make([]float64, 2*a.Canaries)}
	for i := range g.maxCos {
		g.maxCos[i] = math.Inf(-1)
	}
	var models []ledger.Model
	var bases []uint64
	c.cfg.Node.Read(func(l *ledger.Ledger) {
		for _, m := range l.Models {
			if m.Promoted && m.Round >= 1 && m.Round <= uint64(len(l.Rounds)) {
				models = append(models, m)
				bases = append(bases, l.Rounds[m.Round-1].ModelVersion)
			}
		}
	})
	get := func(v uint64) ([]float64, error) {
		if v == 0 {
			return roundTo32(append([]float64(nil), c.cfg.Initial...)), nil
		}
		b, err := c.cfg.Models.Get(ctx, "model", v, "")
		if err != nil {
			return nil, err
		}
		return decode64(b, len(c.cfg.Initial))
	}
	// One version at a time, directions drawn again for each: memory stays
	// O(d + K) whatever the number of rounds.
	for j, m := range models {
		theta, err := get(m.Version)
		if err != nil {
			return fmt.Errorf("global: canary gate: %w", err)
		}
		base, err := get(bases[j])
		if err != nil {
			return fmt.Errorf("global: canary gate: %w", err)
		}
		for i := range theta {
			theta[i] -= base[i]
		}
		for i := range g.maxCos {
			g.maxCos[i] = math.Max(g.maxCos[i], empirical.Cosine(c.direction(i), theta))
		}
	}
	c.gate = g
	return nil
}
