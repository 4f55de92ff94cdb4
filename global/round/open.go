package round

import (
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/secagg"
)

// roundState is one round from its plan to its commit or abort.
type roundState struct {
	number  uint64
	view    *View
	plan    Plan
	opened  time.Time
	version uint64 // the version the round trains from
	hash    string
	// eligible is the population after retirement (N of q·N); retire the
	// clients that leave it before this round.
	eligible []Client
	retire   []string
	// population is N (len(eligible), or the OpenRound's Eligible for a
	// resumed round, whose eligible clients are not listed).
	population int
	// sampled lists each region's sampled clients, sorted.
	sampled map[string][]string
	secagg  map[string]*wire.SecAggPlan
	cmd     *ledger.OpenRound

	deadline, until time.Time
	acked           map[string]bool
	collect         collection

	next, prevTheta, prevVelocity []float64 // the candidate, and what it replaces
	hashNew                       string
	adopted                       *Merged // a resumed round's stored candidate
	eval                          Evaluation
	gateReason                    string
	report                        Report
}

// plan prices the round and decides who is in it; nothing is proposed
// before the draws arrive.
func (m *Machine) plan(v *View, now time.Time) []Action {
	t := m.top
	plan, err := m.cfg.Pricer.Price(t, len(m.theta), v)
	if err != nil {
		return m.stop(err)
	}
	var acts []Action
	if plan.PaceScale > 0 {
		acts = append(acts, Log{Level: slog.LevelDebug, Msg: "paced noise", Args: []any{"round", v.Next, "scale", plan.PaceScale, "remaining", t.Train.Rounds - v.Committed}})
	}
	budget := t.Privacy.Budget
	if rc := plan.Remaining; t.Privacy.Pacing.Patience > 0 && rc != nil && rc.EpsilonAfter.Public > budget {
		// A job that may stop on its outputs is charged its whole planned
		// run (finishEarly): the budget must hold for all of it.
		return append(acts, m.refuse(fmt.Errorf("%w: with early stopping the ledger charges the planned run, and its remaining rounds from %d would bring public ε to %.4g, over the budget %.4g", ErrBudgetExhausted, v.Next, rc.EpsilonAfter.Public, budget))...)
	}
	if eps := plan.Cost.EpsilonAfter.Public; eps > budget {
		return append(acts, m.refuse(fmt.Errorf("%w: round %d would bring public ε to %.4g, over the budget %.4g (spent so far %.4g); nothing of round %d was released", ErrBudgetExhausted, v.Next, eps, budget, v.SpentPublic, v.Next))...)
	}
	eligible, retire, err := population(v, &plan)
	if err != nil {
		return m.stop(err)
	}
	if len(eligible) == 0 {
		return append(acts, m.refuse(fmt.Errorf("%w: no client can take part in round %d without exceeding its budget", ErrBudgetExhausted, v.Next))...)
	}
	hash := v.ServingHash
	if m.version == 0 {
		hash = m.cfg.Hash0
	}
	m.started = true
	m.r = &roundState{number: v.Next, view: v, plan: plan, opened: now, version: m.version, hash: hash, eligible: eligible, retire: retire, population: len(eligible)}
	m.phase = drawing
	return append(acts, Draw{N: len(eligible)})
}

// population drops from the eligible population every client whose public
// ε, charged for this round too, would exceed its budget, by its group's
// priced ε: the comparison the ledger's Apply makes again.
func population(v *View, p *Plan) (eligible []Client, retire []string, err error) {
	eps := make(map[uint64]float64, len(p.Groups))
	for _, g := range p.Groups {
		eps[g.From] = g.Epsilon
	}
	if _, ok := eps[v.Next]; !ok {
		return nil, nil, fmt.Errorf("%w: round %d prices no group for the clients eligible from it", ErrPlan, v.Next)
	}
	for _, c := range v.Clients {
		e, ok := eps[c.EligibleFrom]
		if !ok {
			return nil, nil, fmt.Errorf("%w: round %d prices no group eligible from round %d (client %q)", ErrPlan, v.Next, c.EligibleFrom, c.ID)
		}
		if !(e <= c.Budget) {
			retire = append(retire, c.ID)
			continue
		}
		eligible = append(eligible, c)
	}
	sort.Strings(retire)
	return eligible, retire, nil
}

// drawn Poisson-samples the eligible clients with rate q from the draws,
// grouped by region (each region's ids stay sorted), and proposes the
// round: write-ahead, its cost is committed before anything is published.
func (m *Machine) drawn(e Drawn) []Action {
	r, t := m.r, m.top
	if e.Err != nil {
		return m.stop(fmt.Errorf("global: sampling: %w", e.Err))
	}
	if len(e.U) != len(r.eligible) {
		return m.stop(fmt.Errorf("%w: %d draws for %d clients", ErrUnexpected, len(e.U), len(r.eligible)))
	}
	r.sampled = map[string][]string{}
	var all []string
	for i, c := range r.eligible {
		if e.U[i] < t.Privacy.SamplingRate {
			r.sampled[c.Region] = append(r.sampled[c.Region], c.ID)
			all = append(all, c.ID)
		}
	}
	sort.Strings(all)
	var record *ledger.SecAggRecord
	var acts []Action
	r.secagg, record, acts = m.secAggPlans(r.sampled)
	p := r.plan
	r.deadline = r.opened.Add(t.Round.Timeout.Duration)
	r.cmd = &ledger.OpenRound{
		Round: r.number, ModelVersion: r.version, Sampled: len(all), Q: t.Privacy.SamplingRate, ClipNorm: p.Clip,
		Noise: p.Noise, Sigma: p.Cost.Sigma, RDP: p.Cost.RDP, EpsilonAfter: p.Cost.EpsilonAfter, OpenedUnixMs: r.opened.UnixMilli(),
		Eligible: len(r.eligible), SampledClients: all, Retire: r.retire, SecAgg: record,
		Slack: p.Cost.Slack, DeltaCharge: p.Cost.Delta, FellowExposed: t.SecAgg.On, Groups: p.Groups,
		Lattice: p.Lattice, DeadlineUnixMs: r.deadline.UnixMilli(),
	}
	m.phase = opening
	return append(acts, Propose{Cmd: r.cmd})
}

// secAggPlans fixes each region's secure-aggregation session for a round
// from its sample: the graph degree and threshold for the topology's
// dropout and corruption fractions (secagg.ChooseParams), and the ring and
// quantization. The global tier chooses them so that a region and its
// clients hold the same parameters and neither can pick weaker ones. A
// region with no sampled client gets no session (its partial is pure
// noise); one whose sample is too small for any session gets an infeasible
// plan and contributes nothing. It returns nil, nil when secagg is off.
func (m *Machine) secAggPlans(sampled map[string][]string) (map[string]*wire.SecAggPlan, *ledger.SecAggRecord, []Action) {
	t := m.top
	s := t.SecAgg
	if !s.On {
		return nil, nil, nil
	}
	sec := secagg.Security{Dropout: s.Dropout, Corrupt: s.Corrupt}.WithDefaults()
	rec := &ledger.SecAggRecord{Bits: s.Bits, Scale: s.Scale, Dropout: sec.Dropout, Corrupt: sec.Corrupt, CorrectnessBits: sec.CorrectnessBits, SecurityBits: sec.SecurityBits}
	plans := map[string]*wire.SecAggPlan{}
	dim := len(m.theta)
	if t.Privacy.AdaptiveClip.Enabled {
		dim++
	}
	var acts []Action
	for _, reg := range t.Regions {
		n := len(sampled[reg.ID])
		if n == 0 {
			continue
		}
		plan := &wire.SecAggPlan{Bits: s.Bits, Scale: s.Scale, Range: s.Range(t.Privacy.Noise.Edge)}
		sess := ledger.SecAggSession{Region: reg.ID, Clients: n}
		if p, err := secagg.ChooseParams(n, dim, s.Bits, sec); err != nil {
			plan.Infeasible = err.Error()
			sess.Infeasible = plan.Infeasible
			acts = append(acts, Log{Level: slog.LevelWarn, Msg: "no secagg session possible: the region contributes nothing this round", Args: []any{"region", reg.ID, "sampled", n, "err", err}})
		} else {
			plan.Degree, plan.Threshold, plan.MinSurvivors = p.Degree, p.Threshold, p.MinSurvivors
			sess.Degree, sess.Threshold, sess.MinSurvivors = p.Degree, p.Threshold, p.MinSurvivors
		}
		plans[reg.ID] = plan
		rec.Sessions = append(rec.Sessions, sess)
	}
	sort.Slice(rec.Sessions, func(i, j int) bool { return rec.Sessions[i].Region < rec.Sessions[j].Region })
	return plans, rec, acts
}

// opened handles the OpenRound's result: only a committed round is
// announced (the write-ahead rule). A round refused because the
// population moved between the view and the commit is planned again.
func (m *Machine) opened(res ledger.Result) []Action {
	r := m.r
	switch {
	case errors.Is(res.Err, ledger.ErrBudget):
		return m.refuse(fmt.Errorf("%w: %w", ErrBudgetExhausted, res.Err))
	case errors.Is(res.Err, ledger.ErrClientBudget), errors.Is(res.Err, ledger.ErrNotEligible):
		if m.replans >= maxReplans {
			return m.stop(fmt.Errorf("round %d: the ledger refused its population %d times in a row: %w", r.number, m.replans+1, res.Err))
		}
		m.replans++
		m.phase, m.r = idle, nil
		return []Action{
			Log{Level: slog.LevelWarn, Msg: "the ledger refused the round's population; planning it again", Args: []any{"round", r.number, "err", res.Err}},
			Wait{},
		}
	case res.Err != nil:
		return m.stop(res.Err)
	}
	m.replans = 0
	m.phase = announcing
	return []Action{OpenRegions{Round: r.number, Regions: m.regionOpens()}}
}

// regionOpens builds each region's round.open and its clients' invitation.
func (m *Machine) regionOpens() []RegionOpen {
	r, t := m.r, m.top
	p := r.plan
	out := make([]RegionOpen, 0, len(t.Regions))
	for _, reg := range t.Regions {
		msg := wire.RoundOpen{
			Job: t.Job, Round: r.number, Region: reg.ID, ModelVersion: r.version, ModelHash: r.hash,
			Dim: len(m.theta), ClipNorm: p.Clip, EdgeNoise: p.Noise.Edge, RegionalNoise: p.Noise.Regional,
			DeadlineUnixMs: r.deadline.UnixMilli(), Sampled: r.sampled[reg.ID],
			ClipBits: t.Privacy.AdaptiveClip.Enabled, BitNoise: t.Privacy.AdaptiveClip.BitNoise,
			Signed: t.Security.Signed(), SecAgg: r.secagg[reg.ID],
			Lattice: p.Lattice, Encoding: UpdateEncoding(t, p.Noise), TopUpCap: p.Caps[reg.ID],
			Registry: r.view.RegistryVersion,
		}
		invite := msg
		invite.Registry = 0
		if invite.SecAgg == nil {
			// A client needs no one else's id: the invitation is the same
			// for every sampled client and names none. Under secure
			// aggregation the session needs its members (the ledger
			// accounts what fellow clients then learn).
			invite.Sampled = nil
		}
		out = append(out, RegionOpen{Region: reg.ID, Open: msg, Invite: invite, Clients: r.sampled[reg.ID]})
	}
	return out
}

// acked starts collecting the partials of the regions that acknowledged.
func (m *Machine) acked(e Acked) []Action {
	r := m.r
	if e.Err != nil {
		return m.stop(e.Err)
	}
	r.acked = map[string]bool{}
	for _, id := range e.Regions {
		r.acked[id] = true
	}
	r.until = r.deadline.Add(m.cfg.PartialGrace)
	r.collect = newCollection(m.top, r.number, len(m.theta), r.view.RegionKeys)
	m.phase = collecting
	if len(r.acked) == 0 {
		return m.closeCollection()
	}
	return []Action{Collect{Until: r.until}}
}
