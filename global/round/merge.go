package round

import (
	"encoding/hex"
	"errors"
	"fmt"
	"math"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/mesh/wire"
)

// closeCollection ends the round's collection: too few regions abort it
// (its spend stays), enough are merged.
func (m *Machine) closeCollection() []Action {
	r, t := m.r, m.top
	c := &r.collect
	r.report = Report{Round: r.number, Planned: t.Train.Rounds, Epsilon: r.plan.Cost.EpsilonAfter, Regions: len(c.parts),
		Noise: r.plan.Noise, ClipNorm: r.plan.Clip, Retired: len(r.retire), Merged: m.merged(), Rejected: c.rejections()}
	if len(c.parts) < t.Privacy.MinRegions {
		reason := fmt.Sprintf("only %d of %d regions reported, %d required", len(c.parts), len(t.Regions), t.Privacy.MinRegions)
		r.report.Aborted = reason
		m.phase = aborting
		return []Action{Propose{Cmd: &ledger.AbortRound{Round: r.number, Reason: reason}}}
	}
	sum, err := m.sum()
	if err != nil {
		return m.stop(err)
	}
	r.next = sum
	if sg := r.plan.Noise.Global * r.plan.Clip; sg > 0 {
		m.phase = noising
		return []Action{AddNoise{Values: sum, Sigma: sg, Lattice: r.plan.Lattice}}
	}
	return m.step()
}

// merged lists the accepted partials by region.
func (m *Machine) merged() []MergedPartial {
	c := &m.r.collect
	var out []MergedPartial
	for _, id := range c.regions() {
		p := c.parts[id].p
		out = append(out, MergedPartial{Region: id, Count: p.Count, Rejected: p.Rejected})
	}
	return out
}

// sum adds the accepted partials.
func (m *Machine) sum() ([]float64, error) {
	c := &m.r.collect
	sum := make([]float64, len(m.theta))
	for _, id := range c.regions() {
		if err := wire.AddFloat64sTo(sum, c.parts[id].p.Sum); err != nil {
			return nil, fmt.Errorf("global: partial of %s: %w", id, err)
		}
	}
	return sum, nil
}

func (m *Machine) noised(e Noised) []Action {
	if e.Err != nil {
		return m.stop(fmt.Errorf("global: noise: %w", e.Err))
	}
	return m.step()
}

// step is the DP-FedAvg server step: the merged noisy sum divided by the
// fixed denominator q·N, server momentum, values rounded to float32 as the
// model store keeps them. The candidate goes into new slices; the serving
// ones stay until the gate has spoken.
func (m *Machine) step() []Action {
	r, t := m.r, m.top
	avg := r.next
	denom := t.Privacy.SamplingRate * float64(r.population)
	mom, lr := t.Train.ServerMomentum, t.Train.ServerLR
	theta, vel := make([]float64, len(m.theta)), make([]float64, len(m.theta))
	for i := range theta {
		vel[i] = float64(float32(mom*m.velocity[i] + avg[i]/denom))
		theta[i] = float64(float32(m.theta[i] + lr*vel[i]))
	}
	if !finite(theta) {
		return m.stop(errors.New("global: server step produced a non-finite parameter"))
	}
	r.prevTheta, r.prevVelocity = m.theta, m.velocity
	m.theta, m.velocity = theta, vel
	r.next = nil
	m.phase = storing
	refs, _, bits := m.mergedParts()
	return []Action{StoreModel{Version: r.view.Latest + 1, Theta: theta, Velocity: vel,
		Merged: Merged{Round: r.number, Version: r.view.Latest + 1, Partials: refs, BitSum: bits}}}
}

func (m *Machine) stored(e Stored) []Action {
	if e.Err != nil {
		return m.stop(e.Err)
	}
	m.r.hashNew = e.Hash
	m.phase = evaluating
	return []Action{Evaluate{Version: m.r.view.Latest + 1, Theta: m.theta}}
}

// evaluated applies the evaluation gate: a candidate whose primary metric
// is more than the gate allows worse than the serving version's is
// recorded but not promoted; one that passes goes to the canary gate, if
// the job has one.
func (m *Machine) evaluated(e Evaluated) []Action {
	r, t := m.r, m.top
	if e.Err != nil {
		return m.stop(fmt.Errorf("global: evaluate v%d: %w", r.view.Latest+1, e.Err))
	}
	r.eval = e.Evaluation
	serving := m.cfg.Base
	if r.view.HasServingModel {
		serving = r.view.ServingEval
	}
	if drop := serving.Score - e.Score; drop > t.Train.GateMaxDrop {
		name, got := e.Primary()
		_, was := serving.Primary()
		r.gateReason = fmt.Sprintf("evaluation %s %.4f is %.4f worse than the serving v%d's %.4f (gate allows %.4f)", name, got, drop, r.version, was, t.Train.GateMaxDrop)
		return m.commit()
	}
	if a := t.Audit; a.MaxEpsilon != 0 && a.Canaries != 0 {
		m.phase = gating
		return []Action{CanaryGate{Theta: m.theta, Base: r.prevTheta}}
	}
	return m.commit()
}

func (m *Machine) gated(e GateChecked) []Action {
	if e.Err != nil {
		return m.stop(e.Err)
	}
	m.r.gateReason = e.Reason
	return m.commit()
}

// commit records the version: promoted, or — having failed a gate —
// recorded while θ goes back to the serving version's.
func (m *Machine) commit() []Action {
	r, t := m.r, m.top
	promoted := r.gateReason == ""
	version := r.view.Latest + 1
	if promoted {
		m.version = version
	} else {
		m.theta, m.velocity = r.prevTheta, r.prevVelocity
	}
	refs, count, bits := m.mergedParts()
	regions := make([]string, len(refs))
	for i, p := range refs {
		regions[i] = p.Region
	}
	var nextClip float64
	if ac := t.Privacy.AdaptiveClip; ac.Enabled {
		nextClip = NextClip(r.plan.Clip, bits, t.Privacy.SamplingRate*float64(r.population), ac.Quantile, ac.LearningRate)
	}
	// Canaries never count as participants. Partials carry only counts, so
	// every sampled canary of a reporting region is subtracted: its update
	// needs no training and is normally in; one that missed the deadline
	// makes the count of real participants low by one, never high.
	participants := max(0, count-m.sampledCanaries(regions))
	r.report.Participants, r.report.Eval, r.report.GateFailed = participants, r.eval, r.gateReason
	m.phase = committing
	return []Action{Propose{Cmd: &ledger.CommitModel{Round: r.number, Version: version, Hash: r.hashNew,
		Score: r.eval.Score, Loss: r.eval.Loss, Metric: r.eval.Metric, Metrics: r.eval.Metrics,
		Participants: participants, Regions: regions, NextClipNorm: nextClip, Promoted: promoted, GateReason: r.gateReason, Partials: refs}}}
}

// mergedParts is what the candidate merged: each region's partial
// (sorted by region), the updates they sum and their clipping bits — from
// the collection, or from the record of an adopted candidate.
func (m *Machine) mergedParts() (refs []ledger.PartialRef, count int, bits float64) {
	r := m.r
	if r.adopted != nil {
		for _, p := range r.adopted.Partials {
			count += p.Count
		}
		return r.adopted.Partials, count, r.adopted.BitSum
	}
	c := &r.collect
	refs = make([]ledger.PartialRef, 0, len(c.parts))
	for _, id := range c.regions() {
		a := c.parts[id]
		count += a.p.Count
		bits += a.p.BitSum
		refs = append(refs, ledger.PartialRef{Region: id, Count: a.p.Count, Digest: hex.EncodeToString(a.digest[:])})
	}
	return refs, count, bits
}

// sampledCanaries counts the canary clients sampled in the given regions:
// they are taken out of the participants reported for utility.
func (m *Machine) sampledCanaries(regions []string) int {
	t := m.top
	if t.Audit.Canaries == 0 {
		return 0
	}
	canary := map[string]bool{}
	for _, cc := range t.CanaryClients() {
		canary[cc.ID] = true
	}
	n := 0
	for _, reg := range regions {
		for _, id := range m.r.sampled[reg] {
			if canary[id] {
				n++
			}
		}
	}
	return n
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
