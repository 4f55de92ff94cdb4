package ledger

import (
	"errors"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/strata-fl/strata/internal/msgcheck"
)

// Kind is the type byte of a log entry.
type Kind uint8

// Log entry kinds. Values are part of the on-disk format: never reuse one.
const (
	KindStartJob      Kind = 1
	KindOpenRound     Kind = 2
	KindCommitModel   Kind = 3
	KindAbortRound    Kind = 4
	KindFinishJob     Kind = 5
	KindEnrollClients Kind = 6
	KindWithdraw      Kind = 7
	KindRollback      Kind = 8
	KindEnrollNodes   Kind = 9
)

// Command is one ledger command.
type Command interface{ Kind() Kind }

// StartJob records a job's fixed parameters.
type StartJob struct {
	Job Job `msgpack:"job"`
}

// OpenRound charges a round's DP cost before the round is published.
type OpenRound struct {
	Round        uint64                 `msgpack:"round"`
	ModelVersion uint64                 `msgpack:"model_version"`
	Sampled      int                    `msgpack:"sampled"`
	Q            float64                `msgpack:"q"`
	ClipNorm     float64                `msgpack:"clip_norm"`
	Noise        Noise                  `msgpack:"noise"`
	Sigma        PerObserver[float64]   `msgpack:"sigma"`
	RDP          PerObserver[[]float64] `msgpack:"rdp"`
	EpsilonAfter PerObserver[float64]   `msgpack:"epsilon_after"`
	OpenedUnixMs int64                  `msgpack:"opened_ms"`
	// Eligible is the size N of the eligible population the sample was
	// drawn from (the fixed denominator is q·N).
	Eligible int `msgpack:"eligible"`
	// SampledClients lists the sampled clients, sorted; Retire lists the
	// clients that leave the eligible population before this round because
	// it would take them past their budget.
	SampledClients []string `msgpack:"sampled_clients"`
	Retire         []string `msgpack:"retire"`
	// SecAgg is the round's secure aggregation, nil when off.
	SecAgg *SecAggRecord `msgpack:"secagg,omitempty"`
	// Slack is the ε this round adds per observer beyond its RDP curve
	// (the noise sampler's float64 acceptance test), DeltaCharge the δ it
	// uses up (the sampler's truncated tails, a top-up cap exceeded): ε is
	// converted at the job's δ less every DeltaCharge so far.
	Slack       PerObserver[float64] `msgpack:"slack,omitempty"`
	DeltaCharge float64              `msgpack:"delta_charge,omitempty"`
	// FellowExposed says fellow clients may learn who took part in this
	// round (secure aggregation's neighbours): a client's ε against them
	// composes over the rounds it was sampled in, like an operator's.
	FellowExposed bool `msgpack:"fellow_exposed,omitempty"`
	// Groups is the public ε after this round of every group of clients
	// eligible since the same round (they share a curve), sorted by From:
	// Apply refuses the round (ErrClientBudget) if a client that stays
	// eligible would exceed its budget. The ε are computed on the proposer
	// (a conversion from RDP is floating-point work replicas need not
	// agree on); Apply only compares. Rounds written before groups were
	// priced carry none, and are not checked.
	Groups []GroupEpsilon `msgpack:"groups,omitempty"`
	// Lattice is the round's one noise lattice and DeadlineUnixMs the
	// deadline announced to the regions: with the rest of the entry, what
	// a new leader needs to finish the round its predecessor left open
	// (round.resume) exactly as it would have. Rounds written before carry
	// neither, and are aborted instead.
	Lattice        float64 `msgpack:"lattice,omitempty"`
	DeadlineUnixMs int64   `msgpack:"deadline_ms,omitempty"`
}

// GroupEpsilon is the public ε, after a round, of the clients eligible
// since round From: the ε ClientEpsilon would report for any of them once
// the round is charged.
type GroupEpsilon struct {
	From    uint64  `msgpack:"from"`
	Epsilon float64 `msgpack:"epsilon"`
}

// CommitModel records the model version a round released.
type CommitModel struct {
	Round   uint64 `msgpack:"round"`
	Version uint64 `msgpack:"version"`
	Hash    string `msgpack:"hash"`
	// Score, Loss, Metric and Metrics are the evaluation as Model
	// records it.
	Score        float64  `msgpack:"accuracy"`
	Loss         float64  `msgpack:"loss"`
	Metric       string   `msgpack:"metric,omitempty"`
	Metrics      []Metric `msgpack:"metrics,omitempty"`
	Participants int      `msgpack:"participants"`
	Regions      []string `msgpack:"regions"`
	// Partials is the model version's provenance: the verified partials
	// merged into it.
	Partials []PartialRef `msgpack:"partials,omitempty"`
	// Promoted says the version passed the evaluation gate; GateReason
	// says why not otherwise.
	Promoted   bool   `msgpack:"promoted"`
	GateReason string `msgpack:"gate_reason,omitempty"`
	// NextClipNorm is the adaptive clip norm for the next round (0 = keep).
	NextClipNorm float64 `msgpack:"next_clip_norm,omitempty"`
}

// PartialRef identifies one region's partial merged into a model version.
type PartialRef struct {
	Region string `msgpack:"region" json:"region"`
	Count  int    `msgpack:"count" json:"count"`
	// Digest is the SHA-256 of the partial's sum, as its region signed it.
	Digest string `msgpack:"digest" json:"digest"`
}

// Rollback makes an earlier promoted version the one new rounds train
// from. It refunds nothing: every spend stays.
type Rollback struct {
	To     uint64 `msgpack:"to"`
	Reason string `msgpack:"reason"`
	UnixMs int64  `msgpack:"unix_ms"`
}

// Kind implements Command.
func (*Rollback) Kind() Kind { return KindRollback }

// AbortRound closes a round without a model; its spend stays.
type AbortRound struct {
	Round  uint64 `msgpack:"round"`
	Reason string `msgpack:"reason"`
}

// FinishJob ends the job.
type FinishJob struct {
	Reason string `msgpack:"reason"`
	// Planned charges the rounds the job planned and did not run, when it
	// stops at a time chosen from its outputs (early stopping on the
	// evaluation loss): ε at a data-dependent stopping time is no
	// guarantee, but stopping early is post-processing of the planned run,
	// so the ledger charges the planned run whole.
	Planned *PlannedCharge `msgpack:"planned,omitempty"`
}

// PlannedCharge is the cost of Rounds rounds that were planned and not
// run: each as RDP, Slack and DeltaCharge say, charged to the mesh and to
// every client still eligible as if it had been sampled in every one of
// them; EpsilonAfter is the cumulative ε per observer with them.
type PlannedCharge struct {
	Rounds       int                    `msgpack:"rounds" json:"rounds"`
	RDP          PerObserver[[]float64] `msgpack:"rdp" json:"-"`
	Slack        PerObserver[float64]   `msgpack:"slack" json:"slack"`
	DeltaCharge  float64                `msgpack:"delta_charge" json:"delta_charge"`
	EpsilonAfter PerObserver[float64]   `msgpack:"epsilon_after" json:"epsilon_after"`
}

// Kind implementations.
func (*StartJob) Kind() Kind    { return KindStartJob }
func (*OpenRound) Kind() Kind   { return KindOpenRound }
func (*CommitModel) Kind() Kind { return KindCommitModel }
func (*AbortRound) Kind() Kind  { return KindAbortRound }
func (*FinishJob) Kind() Kind   { return KindFinishJob }

// ErrDecode reports a log entry that cannot be decoded.
var ErrDecode = errors.New("ledger: cannot decode command")

// Encode returns the log entry for cmd: its kind byte and a msgpack body.
func Encode(cmd Command) ([]byte, error) {
	body, err := msgpack.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("ledger: encode %T: %w", cmd, err)
	}
	return append([]byte{byte(cmd.Kind())}, body...), nil
}

// Decode parses a log entry.
func Decode(b []byte) (Command, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty entry", ErrDecode)
	}
	var cmd Command
	switch Kind(b[0]) {
	case KindStartJob:
		cmd = &StartJob{}
	case KindOpenRound:
		cmd = &OpenRound{}
	case KindCommitModel:
		cmd = &CommitModel{}
	case KindAbortRound:
		cmd = &AbortRound{}
	case KindFinishJob:
		cmd = &FinishJob{}
	case KindEnrollClients:
		cmd = &EnrollClients{}
	case KindWithdraw:
		cmd = &Withdraw{}
	case KindRollback:
		cmd = &Rollback{}
	case KindEnrollNodes:
		cmd = &EnrollNodes{}
	default:
		return nil, fmt.Errorf("%w: unknown kind %d", ErrDecode, b[0])
	}
	if err := msgcheck.Validate(b[1:]); err != nil {
		return nil, fmt.Errorf("%w: kind %d: %w", ErrDecode, b[0], err)
	}
	if err := msgpack.Unmarshal(b[1:], cmd); err != nil {
		return nil, fmt.Errorf("%w: kind %d: %w", ErrDecode, b[0], err)
	}
	return cmd, nil
}
