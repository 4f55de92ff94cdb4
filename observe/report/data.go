// Package report turns a job's ledger into what people look at: per-round
// series, charts drawn server-side with gonum/plot (SVG for the live
// dashboard, PNG for the report), and the self-contained HTML report that
// `strata report` and `strata up` write. It reads only the ledger (and the
// topology when given): everything it shows is what the raft ledger
// recorded, so a report of a finished job and the dashboard of a running one
// agree.
package report

import (
	"fmt"
	"sort"

	"github.com/strata-fl/strata/empirical"
	"github.com/strata-fl/strata/global/ledger"
)

// Float writes ±Inf as "inf"/"-inf" and NaN as "nan" in JSON (an
// unprotected observer's ε is ∞); it is the empirical package's type, so
// report.json has one float encoding.
type Float = empirical.Float

// Floats converts a per-observer value for JSON.
func Floats(p ledger.PerObserver[float64]) ledger.PerObserver[Float] {
	return ledger.PerObserver[Float]{Public: Float(p.Public), FellowClients: Float(p.FellowClients), GlobalOperator: Float(p.GlobalOperator), RegionalOperator: Float(p.RegionalOperator)}
}

// Round is one round of a job as the ledger recorded it.
type Round struct {
	Round        uint64                    `json:"round"`
	Status       string                    `json:"status"` // open, committed, aborted
	ModelVersion uint64                    `json:"model_version"`
	Sampled      int                       `json:"sampled"`
	Eligible     int                       `json:"eligible"`
	Participants int                       `json:"participants"`
	Regions      []string                  `json:"regions"`
	Noise        ledger.Noise              `json:"noise"`
	ClipNorm     float64                   `json:"clip_norm"`
	Sigma        ledger.PerObserver[Float] `json:"sigma"`
	Epsilon      ledger.PerObserver[Float] `json:"epsilon_after"`
	OpenedMs     int64                     `json:"opened_ms"`
	AbortReason  string                    `json:"abort_reason,omitempty"`
	// SecAgg is the round's secure aggregation (nil when off).
	SecAgg *ledger.SecAggRecord `json:"secagg,omitempty"`
	// Model is the version the round produced (nil unless committed).
	Model *ledger.Model `json:"model,omitempty"`
}

// SecAggSummary says how the round aggregated in each region: "off", or
// per region its session (n clients, degree k, threshold t) and how many
// survived into the merged sum.
func (r *Round) SecAggSummary() string {
	if r.SecAgg == nil {
		return "off"
	}
	s := fmt.Sprintf("%d-bit", r.SecAgg.Bits)
	for _, x := range r.SecAgg.Sessions {
		if x.Infeasible != "" {
			s += fmt.Sprintf("; %s: none (n=%d)", x.Region, x.Clients)
			continue
		}
		s += fmt.Sprintf("; %s: n=%d k=%d t=%d, %d survived", x.Region, x.Clients, x.Degree, x.Threshold, x.Survivors)
	}
	return s
}

// Closed reports whether the round has ended (committed or aborted): an
// open round's ε is already charged (write-ahead) but it has no outcome.
func (r *Round) Closed() bool { return r.Status == "committed" || r.Status == "aborted" }

// Rounds lists every round the ledger recorded, in order.
func Rounds(l *ledger.Ledger) []Round {
	byRound := map[uint64]*ledger.Model{}
	for i := range l.Models {
		m := l.Models[i]
		byRound[m.Round] = &m
	}
	out := make([]Round, 0, len(l.Rounds))
	for _, e := range l.Rounds {
		out = append(out, Round{
			Round: e.Round, Status: e.Status, ModelVersion: e.ModelVersion, Sampled: e.Sampled, Eligible: e.Eligible,
			Participants: e.Participants, Regions: append([]string(nil), e.Regions...), Noise: e.Noise, ClipNorm: e.ClipNorm,
			Sigma: Floats(e.Sigma), Epsilon: Floats(e.EpsilonAfter), OpenedMs: e.OpenedUnixMs, AbortReason: e.AbortReason,
			Model: byRound[e.Round], SecAgg: e.SecAgg,
		})
	}
	return out
}

// Withhold returns the rounds as the public may see them: without the
// exact counts of who took part (sampled, participants, each secure
// aggregation session's size and survivors, each partial's count). A
// released exact count changes every client's effective inclusion rate
// and so weakens the sampling amplification the public's ε relies on
// (docs/privacy-model.md, "Counts"); the eligible count, the fixed
// denominator, does not depend on anyone's data under zero-out adjacency
// and stays.
func Withhold(rounds []Round) []Round {
	out := make([]Round, len(rounds))
	for i, r := range rounds {
		r.Sampled, r.Participants = 0, 0
		if r.SecAgg != nil {
			sa := *r.SecAgg
			sa.Sessions = nil
			r.SecAgg = &sa
		}
		if r.Model != nil {
			m := *r.Model
			m.Partials = nil
			r.Model = &m
		}
		out[i] = r
	}
	return out
}

// ClientSpend returns every enrolled client's ε against each observer,
// composed over exactly its own rounds (ledger.ClientEpsilon), sorted
// ascending per observer.
func ClientSpend(l *ledger.Ledger) (ledger.PerObserver[[]float64], error) {
	var out ledger.PerObserver[[]float64]
	for _, c := range l.Clients {
		e, err := l.ClientEpsilon(c.ID)
		if err != nil {
			return out, err
		}
		for _, o := range ledger.Observers {
			out.Set(o, append(out.Get(o), e.Get(o)))
		}
	}
	for _, o := range ledger.Observers {
		sort.Float64s(out.Get(o))
	}
	return out, nil
}
