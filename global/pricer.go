package global

import (
	"fmt"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/global/round"
	"github.com/strata-fl/strata/privacy"
	"github.com/strata-fl/strata/topology"
)

// Pricer is the round machine's pricer for a job: the ledger's accountant
// (Mechanisms and the RDP composition of roundCost), pacing, adaptive
// noise and the top-up caps, as `strata check` projects them (Project).
// The pricing stays here, beside Project and Check and the first-principles
// tests that hold it to the privacy model, rather than in package round:
// the machine only compares what it returns.
func Pricer() round.Pricer { return round.PricerFunc(price) }

func price(t *topology.Topology, dim int, v *round.View) (round.Plan, error) {
	in, lattice, scale, err := costing(t, dim, v)
	if err != nil {
		return round.Plan{}, err
	}
	spent := Spent(v.Spent)
	rc, err := roundCost(Mechanisms(t, in), in, spent, t.Privacy.Delta, 1)
	if err != nil {
		return round.Plan{}, err
	}
	plan := round.Plan{Noise: ledger.Noise(in.Noise), Clip: in.Clip, Lattice: lattice, Cost: round.Cost(rc), PaceScale: scale}
	if len(in.Caps) > 0 {
		plan.Caps = map[string]int{}
		for _, c := range in.Caps {
			plan.Caps[c.Region] = c.Cap
		}
	}
	if remaining := t.Train.Rounds - v.Committed; t.Privacy.Pacing.Patience > 0 && remaining > 0 {
		whole, err := roundCost(Mechanisms(t, in), in, spent, t.Privacy.Delta, remaining)
		if err != nil {
			return round.Plan{}, err
		}
		c := round.Cost(whole)
		plan.Remaining, plan.RemainingRounds = &c, remaining
	}
	if plan.Groups, err = groupEpsilons(v, rc); err != nil {
		return round.Plan{}, fmt.Errorf("global: round %d: pricing the clients' budgets: %w", v.Next, err)
	}
	return plan, nil
}

// costing decides the next round's noise, clip norm, caps and lattice from
// the ledger: the clip norm adaptive clipping recorded, the active
// clients, pacing from what was spent. scale is pacing's factor (0: none).
func costing(t *topology.Topology, dim int, v *round.View) (in Costing, lattice, scale float64, err error) {
	in = Costing{Noise: t.Privacy.Noise, Clip: t.Privacy.ClipNorm, Dim: dim, Population: len(v.Clients)}
	if v.ClipNorm > 0 {
		in.Clip = v.ClipNorm
	}
	if in.Caps, err = TopUpCaps(t, v.RegionCounts()); err != nil {
		return in, 0, 0, err
	}
	if t.Privacy.AdaptiveClip.Enabled && t.Privacy.Pacing.TargetEpsilon == 0 {
		if in.Noise, err = AdaptiveNoise(t, in); err != nil {
			return in, 0, 0, err
		}
	}
	if t.Privacy.Pacing.TargetEpsilon > 0 {
		if in.Noise, scale, err = PaceNoise(t, in, Spent(v.Spent), t.Train.Rounds-v.Committed); err != nil {
			return in, 0, 0, fmt.Errorf("round %d: %w", v.Next, err)
		}
	}
	if lattice, err = in.Lattice(t); err != nil {
		return in, 0, 0, fmt.Errorf("round %d: %w", v.Next, err)
	}
	return in, lattice, scale, nil
}

// groupEpsilons is the public ε after the round of every group of clients
// eligible since the same round, converted as the ledger converts a
// client's curve (ClientEpsilon: at the δ left after every charge, this
// round's included, plus the slack of the rounds that count), and of the
// clients eligible from this round on (enrolled after the view was read).
func groupEpsilons(v *round.View, rc RoundCost) ([]ledger.GroupEpsilon, error) {
	eff, err := privacy.EffectiveDelta(v.Delta, v.Spent.Delta+rc.Delta)
	if err != nil {
		return nil, err
	}
	groups := v.Groups
	if n := len(groups); n == 0 || groups[n-1].From < v.Next {
		groups = append(append([]round.Group(nil), groups...), round.Group{From: v.Next})
	}
	out := make([]ledger.GroupEpsilon, 0, len(groups))
	for _, g := range groups {
		after := make([]float64, len(rc.RDP.Public))
		for i, s := range rc.RDP.Public {
			after[i] = s
			if i < len(g.Public) {
				after[i] += g.Public[i]
			}
		}
		e, _, err := privacy.EpsilonFromRDP(after, eff)
		if err != nil {
			return nil, err
		}
		out = append(out, ledger.GroupEpsilon{From: g.From, Epsilon: e + g.Slack + rc.Slack.Public})
	}
	return out, nil
}
