package round

import (
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"time"

	"github.com/strata-fl/strata/global/ledger"
)

// LeftOpen is a round a previous leader opened (its OpenRound is
// committed, its cost charged) and neither committed nor aborted: what the
// ledger holds of it, copied out as View is.
type LeftOpen struct {
	Round        uint64
	ModelVersion uint64
	// Eligible is N of the fixed denominator q·N; Retired the clients
	// that left the population before the round.
	Eligible int
	Retired  []string
	// Sampled lists each region's sampled clients, sorted.
	Sampled      map[string][]string
	Noise        ledger.Noise
	Clip         float64
	Lattice      float64
	EpsilonAfter ledger.PerObserver[float64]
	// Opened is when the round was planned, Deadline the deadline the
	// regions were told (zero for a round written before the ledger kept
	// it: such a round cannot be finished as it would have been).
	Opened, Deadline time.Time
}

// LeftOpenOf copies the open round out of l, if there is one. It only
// reads l.
func LeftOpenOf(l *ledger.Ledger) (LeftOpen, bool) {
	e, ok := l.OpenRoundEntry()
	if !ok {
		return LeftOpen{}, false
	}
	o := LeftOpen{Round: e.Round, ModelVersion: e.ModelVersion, Eligible: e.Eligible, Retired: slices.Clone(e.Retired),
		Sampled: map[string][]string{}, Noise: e.Noise, Clip: e.ClipNorm, Lattice: e.Lattice, EpsilonAfter: e.EpsilonAfter,
		Opened: time.UnixMilli(e.OpenedUnixMs)}
	if e.DeadlineUnixMs != 0 {
		o.Deadline = time.UnixMilli(e.DeadlineUnixMs)
	}
	for _, c := range l.Clients {
		if slices.Contains(c.Sampled, e.Round) {
			o.Sampled[c.Region] = append(o.Sampled[c.Region], c.ID)
		}
	}
	for _, ids := range o.Sampled {
		sort.Strings(ids)
	}
	return o, true
}

// Resume asks a machine that has run no round yet to finish the round a
// previous leader left open (round.resume), instead of aborting it. The
// runner sends it first, in place of Next, when the ledger has an open
// round.
type Resume struct {
	View *View
	Open LeftOpen
	// Stored are the partials the regions delivered for the round so far,
	// as the partial log kept them, in the order they arrived, each At
	// its arrival: merged as the previous leader would have merged them.
	Stored []PartialMsg
	// Now is the time the runner read before sending the event.
	Now time.Time
	// Candidate says the model store already holds a blob for the version
	// the round would commit: the previous leader drew its global noise
	// and stored the result before it died. A second draw over the same
	// sum would release more than the ledger charged: the round commits
	// that very candidate (Adopt) or, when what it merged is not on
	// record, is aborted.
	Candidate bool
	// Adopt is the stored candidate, with the record of what it merged.
	Adopt *Adopted
	// LogErr says the partial log could not be read: what the regions
	// delivered is unknown, so the round is aborted.
	LogErr error
}

func (Resume) event() {}

// Merged is what a round's candidate merged, recorded beside it (after
// its blobs) so that the next leader can commit it.
type Merged struct {
	Round   uint64 `json:"round"`
	Version uint64 `json:"version"`
	// Hash is the candidate model blob's (the runner sets it once the
	// blob is stored).
	Hash string `json:"hash"`
	// Partials are the merged partials, sorted by region; BitSum their
	// clipping bits (adaptive clipping).
	Partials []ledger.PartialRef `json:"partials"`
	BitSum   float64             `json:"bit_sum"`
}

// Adopted is a candidate a previous leader stored and recorded: its
// parameters and optimizer state as the model store holds them.
type Adopted struct {
	Merged   Merged
	Theta    []float64
	Velocity []float64
}

// Abort reasons of a round left open.
const (
	abortLeftOpen  = "coordinator restarted mid-round; spend kept"
	abortOldFormat = "coordinator restarted mid-round and the ledger does not hold the round's deadline and lattice (written before round.resume); spend kept"
)

// resume rebuilds the round left open from the ledger, merges the stored
// partials that arrived in time, and collects the rest until the round's
// deadline and grace; a round it must not finish is aborted, its cost
// kept, as every round left open was before round.resume.
func (m *Machine) resume(e Resume) []Action {
	o, t := e.Open, m.top
	m.started = true
	plan := Plan{Noise: o.Noise, Clip: o.Clip, Lattice: o.Lattice, Cost: Cost{EpsilonAfter: o.EpsilonAfter}}
	m.r = &roundState{number: o.Round, view: e.View, plan: plan, opened: o.Opened, version: o.ModelVersion,
		retire: o.Retired, population: o.Eligible, sampled: o.Sampled}
	r := m.r
	var reason string
	switch {
	case !t.Round.Resumes():
		reason = abortLeftOpen
	case o.Deadline.IsZero():
		reason = abortOldFormat
	case e.LogErr != nil:
		reason = fmt.Sprintf("coordinator restarted mid-round and the partial log cannot be read (%v); spend kept", e.LogErr)
	case o.ModelVersion != m.version:
		reason = fmt.Sprintf("coordinator restarted mid-round; the round trained from v%d but v%d serves now; spend kept", o.ModelVersion, m.version)
	case e.Adopt != nil:
		return m.adopt(e)
	case e.Candidate:
		reason = fmt.Sprintf("coordinator restarted mid-round after storing the round's noisy candidate v%d without a record of what it merged; a second noise draw would release more than was charged; spend kept", e.View.Latest+1)
	}
	if reason != "" {
		r.report = Report{Round: r.number, Planned: t.Train.Rounds, Epsilon: o.EpsilonAfter, Noise: o.Noise, ClipNorm: o.Clip,
			Retired: len(o.Retired), Aborted: reason}
		m.phase = aborting
		return []Action{
			Log{Level: slog.LevelWarn, Msg: "aborting round left open by a previous coordinator", Args: []any{"round", r.number, "reason", reason}},
			Propose{Cmd: &ledger.AbortRound{Round: r.number, Reason: reason}},
		}
	}
	// Any region of the topology may have acknowledged the round: only
	// one that did holds it, and so sends a partial of it.
	r.deadline = o.Deadline
	r.until = r.deadline.Add(m.cfg.PartialGrace)
	r.acked = map[string]bool{}
	for _, reg := range t.Regions {
		r.acked[reg.ID] = true
	}
	r.collect = newCollection(t, r.number, len(m.theta), e.View.RegionKeys)
	m.phase = collecting
	acts := []Action{Log{Level: slog.LevelInfo, Msg: "resuming round left open by a previous coordinator",
		Args: []any{"round", r.number, "stored", len(e.Stored), "until", r.until}}}
	for _, p := range e.Stored {
		acts = append(acts, r.collect.receive(p.Data, r.acked, !p.At.Before(r.until))...)
	}
	if len(r.collect.parts) == len(r.acked) || !e.Now.Before(r.until) {
		return append(acts, m.closeCollection()...)
	}
	return append(acts, Collect{Until: r.until})
}

// adopt commits the candidate a previous leader stored for the round: it
// is evaluated and gated as that leader would have, and nothing is drawn
// again.
func (m *Machine) adopt(e Resume) []Action {
	r, a := m.r, e.Adopt
	version := e.View.Latest + 1
	switch {
	case a.Merged.Round != r.number || a.Merged.Version != version:
		return m.stop(fmt.Errorf("%w: adopting a candidate of round %d v%d for round %d v%d", ErrUnexpected, a.Merged.Round, a.Merged.Version, r.number, version))
	case len(a.Theta) != len(m.theta) || (a.Velocity != nil && len(a.Velocity) != len(m.theta)):
		return m.stop(fmt.Errorf("%w: adopted candidate with %d parameters (velocity %d), the model has %d", ErrUnexpected, len(a.Theta), len(a.Velocity), len(m.theta)))
	}
	merged := make([]MergedPartial, len(a.Merged.Partials))
	for i, p := range a.Merged.Partials {
		merged[i] = MergedPartial{Region: p.Region, Count: p.Count}
	}
	r.adopted = &a.Merged
	r.hashNew = a.Merged.Hash
	r.prevTheta, r.prevVelocity = m.theta, m.velocity
	m.theta, m.velocity = a.Theta, a.Velocity
	if m.velocity == nil {
		m.velocity = make([]float64, len(m.theta))
	}
	r.report = Report{Round: r.number, Planned: m.top.Train.Rounds, Epsilon: r.plan.Cost.EpsilonAfter, Regions: len(merged),
		Noise: r.plan.Noise, ClipNorm: r.plan.Clip, Retired: len(r.retire), Merged: merged}
	m.phase = evaluating
	return []Action{
		Log{Level: slog.LevelInfo, Msg: "committing the candidate a previous coordinator stored for the round left open", Args: []any{"round", r.number, "version", version}},
		Evaluate{Version: version, Theta: m.theta},
	}
}
