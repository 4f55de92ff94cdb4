package global

import (
	"sort"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/secagg"
)

// secAggPlans fixes each region's secure-aggregation session for a round
// from its sample: the graph degree and threshold for the topology's
// dropout and corruption fractions (secagg.ChooseParams), and the ring and
// quantization. The global tier chooses them so that a region and its
// clients hold the same parameters and neither can pick weaker ones. A
// region with no sampled client gets no session (its partial is pure
// noise); one whose sample is too small for any session gets an infeasible
// plan and contributes nothing. It returns nil, nil when secagg is off.
func (c *Coordinator) secAggPlans(sampled map[string][]string) (map[string]*wire.SecAggPlan, *ledger.SecAggRecord) {
	s := c.top.SecAgg
	if !s.On {
		return nil, nil
	}
	sec := secagg.Security{Dropout: s.Dropout, Corrupt: s.Corrupt}.WithDefaults()
	rec := &ledger.SecAggRecord{Bits: s.Bits, Scale: s.Scale, Dropout: sec.Dropout, Corrupt: sec.Corrupt, CorrectnessBits: sec.CorrectnessBits, SecurityBits: sec.SecurityBits}
	plans := map[string]*wire.SecAggPlan{}
	dim := len(c.theta)
	if c.top.Privacy.AdaptiveClip.Enabled {
		dim++
	}
	for _, r := range c.top.Regions {
		n := len(sampled[r.ID])
		if n == 0 {
			continue
		}
		plan := &wire.SecAggPlan{Bits: s.Bits, Scale: s.Scale, Range: s.Range(c.top.Privacy.Noise.Edge)}
		sess := ledger.SecAggSession{Region: r.ID, Clients: n}
		p, err := secagg.ChooseParams(n, dim, s.Bits, sec)
		if err != nil {
			plan.Infeasible = err.Error()
			sess.Infeasible = plan.Infeasible
			c.cfg.Logger.Warn("no secagg session possible: the region contributes nothing this round", "region", r.ID, "sampled", n, "err", err)
		} else {
			plan.Degree, plan.Threshold, plan.MinSurvivors = p.Degree, p.Threshold, p.MinSurvivors
			sess.Degree, sess.Threshold, sess.MinSurvivors = p.Degree, p.Threshold, p.MinSurvivors
		}
		plans[r.ID] = plan
		rec.Sessions = append(rec.Sessions, sess)
	}
	sort.Slice(rec.Sessions, func(i, j int) bool { return rec.Sessions[i].Region < rec.Sessions[j].Region })
	return plans, rec
}
