package ledger

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"sort"

	"github.com/vmihailenco/msgpack/v5"
)

// Observer names a party against whom ε is reported (DESIGN.md §3).
type Observer string

// The observers of DESIGN.md §3 (docs/privacy-model.md has what each sees
// and what protects a client from it).
const (
	Public Observer = "public"
	// FellowClients is any client credential, or clients colluding with
	// each other: each learns its own sampling decision and the models,
	// under secure aggregation also its neighbours'.
	FellowClients    Observer = "fellow_clients"
	GlobalOperator   Observer = "global_operator"
	RegionalOperator Observer = "regional_operator"
)

// Observers lists every observer in report order.
var Observers = []Observer{Public, FellowClients, GlobalOperator, RegionalOperator}

// Business rejections: every replica reaches them identically.
var (
	ErrNoJob         = errors.New("ledger: no job started")
	ErrJobExists     = errors.New("ledger: a different job is already recorded in this data dir")
	ErrJobFinished   = errors.New("ledger: job is finished")
	ErrRoundOrder    = errors.New("ledger: round out of order")
	ErrRoundConflict = errors.New("ledger: round already recorded with different content")
	ErrRoundNotOpen  = errors.New("ledger: round is not open")
	ErrBudget        = errors.New("ledger: round would exceed the privacy budget")
	// ErrClientBudget refuses a round that would take a client that stays
	// eligible past its own budget: the proposer should have retired it.
	ErrClientBudget = errors.New("ledger: round would exceed a client's privacy budget")
	ErrVersion      = errors.New("ledger: model version out of order")
	ErrCurve        = errors.New("ledger: RDP curve does not match the job's orders")
	ErrUnknown      = errors.New("ledger: unknown command")
	ErrRollback     = errors.New("ledger: cannot roll back")
	ErrInvalid      = errors.New("ledger: invalid command")
)

// Noise is the noise plan of a round: multipliers of the clip norm per tier.
type Noise struct {
	Edge     float64 `msgpack:"edge" json:"edge"`
	Regional float64 `msgpack:"regional" json:"regional"`
	Global   float64 `msgpack:"global" json:"global"`
}

// Job is what StartJob fixed.
type Job struct {
	Name          string    `msgpack:"name" json:"name"`
	ConfigHash    string    `msgpack:"config_hash" json:"config_hash"`
	Delta         float64   `msgpack:"delta" json:"delta"`
	Budget        float64   `msgpack:"budget" json:"budget"`
	Population    int       `msgpack:"population" json:"population"`
	PlannedRounds int       `msgpack:"planned_rounds" json:"planned_rounds"`
	Accountant    string    `msgpack:"accountant" json:"accountant"`
	Orders        []float64 `msgpack:"orders" json:"-"`
	// SlackPerRound is the ε slack a round of this job charged before
	// rounds carried their own (OpenRound.Slack); 0 in newer jobs.
	SlackPerRound float64 `msgpack:"slack_per_round" json:"slack_per_round"`
	StartedUnixMs int64   `msgpack:"started_ms" json:"started_ms"`
	// Signed jobs sample only clients with an enrolled key, whose updates
	// regions accept only when signed.
	Signed bool `msgpack:"signed" json:"signed"`
	// ClientBudgets says every round of the job prices its eligible groups
	// (OpenRound.Groups), so Apply holds each client to its budget; jobs
	// started before rounds did are checked only where a round carries them.
	ClientBudgets bool `msgpack:"client_budgets,omitempty" json:"client_budgets,omitempty"`
}

// RoundEntry is one committed round.
type RoundEntry struct {
	Round        uint64  `msgpack:"round" json:"round"`
	ModelVersion uint64  `msgpack:"model_version" json:"model_version"` // the version the round trains from
	Sampled      int     `msgpack:"sampled" json:"sampled"`
	Q            float64 `msgpack:"q" json:"q"`
	ClipNorm     float64 `msgpack:"clip_norm" json:"clip_norm"`
	Noise        Noise   `msgpack:"noise" json:"noise"`
	// Sigma is the effective noise multiplier each observer is credited
	// with (0 = unprotected).
	Sigma PerObserver[float64] `msgpack:"sigma" json:"sigma"`
	// EpsilonAfter is the cumulative ε per observer once this round is
	// charged.
	EpsilonAfter  PerObserver[float64] `msgpack:"epsilon_after" json:"epsilon_after"`
	OpenedUnixMs  int64                `msgpack:"opened_ms" json:"opened_ms"`
	Status        string               `msgpack:"status" json:"status"` // open, committed, aborted
	AbortReason   string               `msgpack:"abort_reason,omitempty" json:"abort_reason,omitempty"`
	Participants  int                  `msgpack:"participants" json:"participants"`
	Regions       []string             `msgpack:"regions" json:"regions"`
	ResultVersion uint64               `msgpack:"result_version" json:"result_version"`
	Index         uint64               `msgpack:"index" json:"index"` // raft index of the OpenRound
	Eligible      int                  `msgpack:"eligible" json:"eligible"`
	Retired       []string             `msgpack:"retired" json:"retired,omitempty"`
	// RDP is this round's one-step curve per observer, kept so that each
	// client's spend can be composed over exactly its own rounds.
	// (The curves themselves live once in Ledger.Steps; rounds with the same
	// mechanism share one, so the state does not grow by a curve a round.)
	Step int `msgpack:"step" json:"-"`
	// SecAgg is the round's secure aggregation (nil when off); its
	// sessions' survivor counts are set at commit.
	SecAgg *SecAggRecord `msgpack:"secagg,omitempty" json:"secagg,omitempty"`
	// Slack, DeltaCharge and FellowExposed are as in OpenRound.
	Slack         PerObserver[float64] `msgpack:"slack,omitempty" json:"slack"`
	DeltaCharge   float64              `msgpack:"delta_charge,omitempty" json:"delta_charge"`
	FellowExposed bool                 `msgpack:"fellow_exposed,omitempty" json:"fellow_exposed,omitempty"`
	// Lattice and DeadlineUnixMs are as in OpenRound.
	Lattice        float64 `msgpack:"lattice,omitempty" json:"lattice,omitempty"`
	DeadlineUnixMs int64   `msgpack:"deadline_ms,omitempty" json:"deadline_ms,omitempty"`
}

// StepCurves returns the round's one-step RDP curves per observer.
func (l *Ledger) StepCurves(e *RoundEntry) PerObserver[[]float64] {
	if e.Step < 0 || e.Step >= len(l.Steps) {
		return PerObserver[[]float64]{}
	}
	return l.Steps[e.Step]
}

// stepIndex returns the index of an identical curve set in l.Steps,
// appending it if new. Comparison is exact, so every replica agrees.
func (l *Ledger) stepIndex(c PerObserver[[]float64]) int {
	for i, s := range l.Steps {
		if equalCurves(s.Public, c.Public) && equalCurves(s.FellowClients, c.FellowClients) && equalCurves(s.GlobalOperator, c.GlobalOperator) && equalCurves(s.RegionalOperator, c.RegionalOperator) {
			return i
		}
	}
	l.Steps = append(l.Steps, PerObserver[[]float64]{
		Public:           append([]float64(nil), c.Public...),
		FellowClients:    append([]float64(nil), c.FellowClients...),
		GlobalOperator:   append([]float64(nil), c.GlobalOperator...),
		RegionalOperator: append([]float64(nil), c.RegionalOperator...),
	})
	return len(l.Steps) - 1
}

func equalCurves(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] && !(math.IsNaN(a[i]) && math.IsNaN(b[i])) {
			return false
		}
	}
	return true
}

// Model is one committed model version.
type Model struct {
	Version uint64 `msgpack:"version" json:"version"`
	Round   uint64 `msgpack:"round" json:"round"`
	Hash    string `msgpack:"hash" json:"hash"`
	// Score is what the evaluation gate compared, higher is better: the
	// task's primary metric, negated when lower is better. (The msgpack
	// name is the one older ledgers used, when the score was always an
	// accuracy; theirs still is.)
	Score float64 `msgpack:"accuracy" json:"score"`
	Loss  float64 `msgpack:"loss" json:"loss"`
	// Metric names the primary metric Score comes from, and Metrics holds
	// every metric the task reported, in its order. Both are empty in
	// versions recorded before tasks named their metrics: Primary reads
	// those as accuracy.
	Metric  string   `msgpack:"metric,omitempty" json:"metric,omitempty"`
	Metrics []Metric `msgpack:"metrics,omitempty" json:"metrics,omitempty"`
	// Promoted is false when the version failed the evaluation gate (or
	// was superseded by a rollback during its round): it is recorded but
	// never served.
	Promoted   bool   `msgpack:"promoted" json:"promoted"`
	GateReason string `msgpack:"gate_reason,omitempty" json:"gate_reason,omitempty"`
	// Partials records the provenance: which regions' partials, with the
	// digests they signed.
	Partials []PartialRef `msgpack:"partials,omitempty" json:"partials,omitempty"`
}

// Metric is one named evaluation score of a model version. A slice of
// them, not a map, so that every node encodes a snapshot byte for byte
// alike.
type Metric struct {
	Name  string  `msgpack:"name" json:"name"`
	Value float64 `msgpack:"value" json:"value"`
}

// Primary is the version's primary metric as the task reported it (not
// negated): its name and value.
func (m Model) Primary() (string, float64) {
	if m.Metric == "" {
		return "accuracy", m.Score
	}
	for _, x := range m.Metrics {
		if x.Name == m.Metric {
			return x.Name, x.Value
		}
	}
	return m.Metric, m.Score
}

// RollbackEntry records a rollback of the serving model version.
type RollbackEntry struct {
	From   uint64 `msgpack:"from" json:"from"`
	To     uint64 `msgpack:"to" json:"to"`
	Reason string `msgpack:"reason" json:"reason"`
	UnixMs int64  `msgpack:"unix_ms" json:"unix_ms"`
}

// Ledger is the replicated state. The zero value is an empty ledger.
type Ledger struct {
	Job     *Job                   `msgpack:"job"`
	Rounds  []RoundEntry           `msgpack:"rounds"`
	Models  []Model                `msgpack:"models"`
	RDP     PerObserver[[]float64] `msgpack:"rdp"`     // cumulative curve per observer
	Clients []Client               `msgpack:"clients"` // sorted by ID
	// Serving is the model version new rounds train from (0 = the
	// pre-trained checkpoint); it moves on promotion and on rollback.
	Serving uint64 `msgpack:"serving"`
	// Steps holds the distinct one-step RDP curve sets rounds refer to.
	Steps []PerObserver[[]float64] `msgpack:"steps"`
	// Audit is the hash-chained record of every applied log entry.
	Audit     []AuditRecord   `msgpack:"audit"`
	Rollbacks []RollbackEntry `msgpack:"rollbacks"`
	// ClipNorm is the clip norm the next round uses under adaptive
	// clipping (0 = the topology's).
	ClipNorm     float64 `msgpack:"clip_norm"`
	Finished     bool    `msgpack:"finished"`
	FinishReason string  `msgpack:"finish_reason"`
	Applied      uint64  `msgpack:"applied"` // last applied index
	// Nodes are the enrolled region and global node identities, sorted by
	// kind and id; RegistryVersion counts changes to any identity (keys,
	// consent), so receivers know when their copy is stale.
	Nodes           []Node `msgpack:"nodes"`
	RegistryVersion uint64 `msgpack:"registry_version"`
	// Slack and DeltaCharged are the cumulative ε slack per observer and δ
	// charged by every round so far (RoundEntry.Slack, DeltaCharge).
	Slack        PerObserver[float64] `msgpack:"slack"`
	DeltaCharged float64              `msgpack:"delta_charged"`
	// Planned is the charge for planned rounds a job that stopped early
	// did not run (FinishJob.Planned).
	Planned *PlannedCharge `msgpack:"planned,omitempty"`
}

// New returns an empty ledger.
func New() *Ledger { return &Ledger{} }

// Result is what Apply returns for one command.
type Result struct {
	// Err is a business rejection (errors.Is-comparable to the sentinels);
	// the state is unchanged when it is set.
	Err error
	// Duplicate is true when the command repeats one already applied.
	Duplicate bool
}

// Apply applies cmd committed at the given log index. It never panics on
// any command value and never reads anything but its arguments and state.
func (l *Ledger) Apply(index uint64, cmd Command) Result {
	if index <= l.Applied && index != 0 {
		return Result{Duplicate: true}
	}
	var r Result
	switch c := cmd.(type) {
	case *StartJob:
		r = l.startJob(c)
	case *OpenRound:
		r = l.openRound(index, c)
	case *CommitModel:
		r = l.commitModel(c)
	case *AbortRound:
		r = l.abortRound(c)
	case *FinishJob:
		r = l.finishJob(c)
	case *EnrollClients:
		r = l.enroll(c)
	case *Withdraw:
		r = l.withdraw(c)
	case *Rollback:
		r = l.rollback(c)
	case *EnrollNodes:
		r = l.enrollNodes(c)
	default:
		r = Result{Err: fmt.Errorf("%w: %T", ErrUnknown, cmd)}
	}
	l.Applied = index
	return r
}

func (l *Ledger) startJob(c *StartJob) Result {
	if l.Job != nil {
		if l.Job.Name == c.Job.Name && l.Job.ConfigHash == c.Job.ConfigHash {
			return Result{Duplicate: true}
		}
		return Result{Err: fmt.Errorf("%w: recorded %q (config %.12s), asked %q (config %.12s)", ErrJobExists, l.Job.Name, l.Job.ConfigHash, c.Job.Name, c.Job.ConfigHash)}
	}
	j := c.Job
	j.Orders = append([]float64(nil), j.Orders...)
	l.Job = &j
	for _, o := range Observers {
		l.RDP.Set(o, make([]float64, len(j.Orders)))
	}
	return Result{}
}

// NextRound returns the number the next OpenRound must carry.
func (l *Ledger) NextRound() uint64 { return uint64(len(l.Rounds)) + 1 }

// OpenRoundEntry returns the round that is open, if any.
func (l *Ledger) OpenRoundEntry() (RoundEntry, bool) {
	if n := len(l.Rounds); n > 0 && l.Rounds[n-1].Status == "open" {
		return l.Rounds[n-1], true
	}
	return RoundEntry{}, false
}

func (l *Ledger) openRound(index uint64, c *OpenRound) Result {
	if l.Job == nil {
		return Result{Err: ErrNoJob}
	}
	if l.Finished {
		return Result{Err: ErrJobFinished}
	}
	if c.Round == 0 {
		return Result{Err: fmt.Errorf("%w: round 0 does not exist (rounds count from 1)", ErrRoundOrder)}
	}
	if c.Round < l.NextRound() {
		prev := l.Rounds[c.Round-1]
		if prev.Sampled == c.Sampled && prev.ModelVersion == c.ModelVersion && prev.OpenedUnixMs == c.OpenedUnixMs {
			return Result{Duplicate: true}
		}
		return Result{Err: fmt.Errorf("%w: round %d", ErrRoundConflict, c.Round)}
	}
	if c.Round != l.NextRound() {
		return Result{Err: fmt.Errorf("%w: got round %d, next is %d", ErrRoundOrder, c.Round, l.NextRound())}
	}
	if _, open := l.OpenRoundEntry(); open {
		return Result{Err: fmt.Errorf("%w: round %d is still open", ErrRoundOrder, len(l.Rounds))}
	}
	rdp := c.RDP
	if rdp.FellowClients == nil {
		// Written before fellow clients had their own curve, when their view
		// was charged as the public's.
		rdp.FellowClients = rdp.Public
	}
	for _, o := range Observers {
		if n := len(rdp.Get(o)); n != len(l.Job.Orders) {
			return Result{Err: fmt.Errorf("%w: observer %s has %d values, job has %d orders", ErrCurve, o, n, len(l.Job.Orders))}
		}
	}
	if !(c.DeltaCharge >= 0) || (c.DeltaCharge > 0 && !(l.DeltaCharged+c.DeltaCharge < l.Job.Delta)) {
		return Result{Err: fmt.Errorf("%w: round %d charges δ %g on top of %g, the job's δ is %g", ErrBudget, c.Round, c.DeltaCharge, l.DeltaCharged, l.Job.Delta)}
	}
	slack := c.Slack
	if slack == (PerObserver[float64]{}) && l.Job.SlackPerRound > 0 {
		// Written when one slack per round was fixed for the whole job.
		v := l.Job.SlackPerRound
		slack = PerObserver[float64]{Public: v, FellowClients: v, GlobalOperator: v, RegionalOperator: v}
	}
	for _, o := range Observers {
		if v := slack.Get(o); !(v >= 0) {
			return Result{Err: fmt.Errorf("%w: round %d: slack %v against %s", ErrInvalid, c.Round, v, o)}
		}
	}
	if eps := c.EpsilonAfter.Public; !(eps <= l.Job.Budget) {
		return Result{Err: fmt.Errorf("%w: round %d would bring public ε to %.4g, budget is %.4g (spent so far %.4g)", ErrBudget, c.Round, eps, l.Job.Budget, l.Spent(Public))}
	}
	if err := l.checkRoundClients(c); err != nil {
		return Result{Err: err}
	}
	l.applyRoundClients(c)
	l.upgrade()
	for _, o := range Observers {
		cum := l.RDP.Get(o)
		for i, v := range rdp.Get(o) {
			cum[i] += v
		}
		l.Slack.Set(o, l.Slack.Get(o)+slack.Get(o))
	}
	l.DeltaCharged += c.DeltaCharge
	l.Rounds = append(l.Rounds, RoundEntry{
		Round: c.Round, ModelVersion: c.ModelVersion, Sampled: c.Sampled, Q: c.Q, ClipNorm: c.ClipNorm,
		Noise: c.Noise, Sigma: c.Sigma, EpsilonAfter: c.EpsilonAfter,
		OpenedUnixMs: c.OpenedUnixMs, Status: "open", Index: index,
		Eligible: c.Eligible, Retired: append([]string(nil), c.Retire...), Step: l.stepIndex(rdp),
		SecAgg: c.SecAgg.clone(), Slack: slack, DeltaCharge: c.DeltaCharge, FellowExposed: c.FellowExposed,
		Lattice: c.Lattice, DeadlineUnixMs: c.DeadlineUnixMs,
	})
	return Result{}
}

// upgrade brings a ledger written by an earlier version to this one's
// state: fellow clients get their own curve (until then their view was
// charged as the public's, so the public's cumulative and per-round curves
// stand for it), and rounds charged one job-wide slack carry it per
// observer. Every replica does this at the same point (a restore, or the
// first round it opens), so their states stay identical.
func (l *Ledger) upgrade() {
	if l.Job == nil {
		return
	}
	if len(l.RDP.FellowClients) != len(l.Job.Orders) {
		l.RDP.FellowClients = append([]float64(nil), l.RDP.Public...)
		for i := range l.Steps {
			if l.Steps[i].FellowClients == nil {
				l.Steps[i].FellowClients = append([]float64(nil), l.Steps[i].Public...)
			}
		}
	}
	if v := l.Job.SlackPerRound; v > 0 {
		for i := range l.Rounds {
			if r := &l.Rounds[i]; r.Slack == (PerObserver[float64]{}) {
				r.Slack = PerObserver[float64]{Public: v, FellowClients: v, GlobalOperator: v, RegionalOperator: v}
				for _, o := range Observers {
					l.Slack.Set(o, l.Slack.Get(o)+v)
				}
			}
		}
	}
}

func (l *Ledger) commitModel(c *CommitModel) Result {
	if l.Job == nil {
		return Result{Err: ErrNoJob}
	}
	if c.Round == 0 || c.Round > uint64(len(l.Rounds)) {
		return Result{Err: fmt.Errorf("%w: round %d was never opened", ErrRoundNotOpen, c.Round)}
	}
	e := &l.Rounds[c.Round-1]
	if e.Status == "committed" && e.ResultVersion == c.Version {
		return Result{Duplicate: true}
	}
	if e.Status != "open" {
		return Result{Err: fmt.Errorf("%w: round %d is %s", ErrRoundNotOpen, c.Round, e.Status)}
	}
	if c.Version != l.LatestVersion()+1 {
		return Result{Err: fmt.Errorf("%w: got v%d, latest is v%d", ErrVersion, c.Version, l.LatestVersion())}
	}
	if err := c.checkMetrics(); err != nil {
		return Result{Err: err}
	}
	promoted, reason := c.Promoted, c.GateReason
	if promoted && e.ModelVersion != l.Serving {
		promoted, reason = false, fmt.Sprintf("trained from v%d but v%d is serving (rollback during the round)", e.ModelVersion, l.Serving)
	}
	if promoted {
		l.Serving = c.Version
	}
	e.Status = "committed"
	e.Participants = c.Participants
	e.Regions = append([]string(nil), c.Regions...)
	sort.Strings(e.Regions)
	e.ResultVersion = c.Version
	if e.SecAgg != nil {
		counts := map[string]int{}
		for _, p := range c.Partials {
			counts[p.Region] = p.Count
		}
		for i := range e.SecAgg.Sessions {
			e.SecAgg.Sessions[i].Survivors = counts[e.SecAgg.Sessions[i].Region]
		}
	}
	if c.NextClipNorm > 0 {
		l.ClipNorm = c.NextClipNorm
	}
	l.Models = append(l.Models, Model{Version: c.Version, Round: c.Round, Hash: c.Hash, Score: c.Score, Loss: c.Loss, Metric: c.Metric, Metrics: append([]Metric(nil), c.Metrics...), Promoted: promoted, GateReason: reason, Partials: append([]PartialRef(nil), c.Partials...)})
	return Result{}
}

// checkMetrics refuses an evaluation whose primary metric is not among
// its metrics, or whose metrics are unnamed or repeated: Model.Primary
// could not say what the score was.
func (c *CommitModel) checkMetrics() error {
	seen := map[string]bool{}
	for _, m := range c.Metrics {
		if m.Name == "" || seen[m.Name] {
			return fmt.Errorf("%w: model v%d's metrics name %q twice or not at all", ErrInvalid, c.Version, m.Name)
		}
		seen[m.Name] = true
	}
	if c.Metric != "" && !seen[c.Metric] {
		return fmt.Errorf("%w: model v%d's primary metric %q is not among its metrics", ErrInvalid, c.Version, c.Metric)
	}
	return nil
}

func (l *Ledger) abortRound(c *AbortRound) Result {
	if c.Round == 0 || c.Round > uint64(len(l.Rounds)) {
		return Result{Err: fmt.Errorf("%w: round %d was never opened", ErrRoundNotOpen, c.Round)}
	}
	e := &l.Rounds[c.Round-1]
	if e.Status == "aborted" {
		return Result{Duplicate: true}
	}
	if e.Status != "open" {
		return Result{Err: fmt.Errorf("%w: round %d is %s", ErrRoundNotOpen, c.Round, e.Status)}
	}
	e.Status = "aborted"
	e.AbortReason = c.Reason
	return Result{}
}

func (l *Ledger) finishJob(c *FinishJob) Result {
	if l.Job == nil {
		return Result{Err: ErrNoJob}
	}
	if l.Finished {
		return Result{Duplicate: true}
	}
	if _, open := l.OpenRoundEntry(); open {
		return Result{Err: fmt.Errorf("%w: close round %d first", ErrRoundOrder, len(l.Rounds))}
	}
	if p := c.Planned; p != nil {
		if err := l.checkPlanned(p); err != nil {
			return Result{Err: err}
		}
		n := float64(p.Rounds)
		l.upgrade()
		for _, o := range Observers {
			cum := l.RDP.Get(o)
			for i, v := range p.RDP.Get(o) {
				cum[i] += n * v
			}
			l.Slack.Set(o, l.Slack.Get(o)+n*p.Slack.Get(o))
		}
		l.DeltaCharged += n * p.DeltaCharge
		cp := *p
		cp.RDP = PerObserver[[]float64]{}
		for _, o := range Observers {
			cp.RDP.Set(o, append([]float64(nil), p.RDP.Get(o)...))
		}
		l.Planned = &cp
	}
	l.Finished = true
	l.FinishReason = c.Reason
	return Result{}
}

// checkPlanned validates a planned charge before anything changes.
func (l *Ledger) checkPlanned(p *PlannedCharge) error {
	if p.Rounds < 0 || p.Rounds > l.Job.PlannedRounds {
		return fmt.Errorf("%w: planned charge of %d rounds (the job planned %d)", ErrInvalid, p.Rounds, l.Job.PlannedRounds)
	}
	for _, o := range Observers {
		if n := len(p.RDP.Get(o)); n != len(l.Job.Orders) {
			return fmt.Errorf("%w: planned charge: observer %s has %d values, job has %d orders", ErrCurve, o, n, len(l.Job.Orders))
		}
		if v := p.Slack.Get(o); !(v >= 0) {
			return fmt.Errorf("%w: planned charge: slack %v against %s", ErrInvalid, v, o)
		}
	}
	if !(p.DeltaCharge >= 0) || !(l.DeltaCharged+float64(p.Rounds)*p.DeltaCharge < l.Job.Delta) {
		return fmt.Errorf("%w: planned charge uses up δ", ErrBudget)
	}
	return nil
}

// ServingVersion returns the version new rounds train from.
func (l *Ledger) ServingVersion() uint64 { return l.Serving }

// ServingModel returns the record of the serving version (false for v0).
func (l *Ledger) ServingModel() (Model, bool) {
	if l.Serving == 0 || l.Serving > uint64(len(l.Models)) {
		return Model{}, false
	}
	return l.Models[l.Serving-1], true
}

func (l *Ledger) rollback(c *Rollback) Result {
	if l.Job == nil {
		return Result{Err: ErrNoJob}
	}
	if c.To > l.LatestVersion() {
		return Result{Err: fmt.Errorf("%w: no model v%d (latest is v%d)", ErrRollback, c.To, l.LatestVersion())}
	}
	if c.To > 0 && !l.Models[c.To-1].Promoted {
		return Result{Err: fmt.Errorf("%w: v%d never passed the gate (%s)", ErrRollback, c.To, l.Models[c.To-1].GateReason)}
	}
	l.Rollbacks = append(l.Rollbacks, RollbackEntry{From: l.Serving, To: c.To, Reason: c.Reason, UnixMs: c.UnixMs})
	l.Serving = c.To
	return Result{}
}

// LatestVersion returns the latest recorded model version (0 = the
// pre-trained checkpoint), promoted or not.
func (l *Ledger) LatestVersion() uint64 {
	if n := len(l.Models); n > 0 {
		return l.Models[n-1].Version
	}
	return 0
}

// CommittedRounds counts rounds that released a model.
func (l *Ledger) CommittedRounds() int {
	n := 0
	for _, r := range l.Rounds {
		if r.Status == "committed" {
			n++
		}
	}
	return n
}

// Spent returns the cumulative ε against o as recorded by the last round,
// or by the planned charge of a job that stopped early.
func (l *Ledger) Spent(o Observer) float64 {
	if l.Planned != nil {
		return l.Planned.EpsilonAfter.Get(o)
	}
	if n := len(l.Rounds); n > 0 {
		return l.Rounds[n-1].EpsilonAfter.Get(o)
	}
	return 0
}

// Curve returns a copy of the cumulative RDP curve against o.
func (l *Ledger) Curve(o Observer) []float64 { return append([]float64(nil), l.RDP.Get(o)...) }

// Snapshot serialises the state deterministically (sorted map keys), so
// replicas that applied the same log produce identical bytes.
func (l *Ledger) Snapshot() ([]byte, error) {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.SetSortMapKeys(true)
	if err := enc.Encode(l); err != nil {
		return nil, fmt.Errorf("ledger: snapshot: %w", err)
	}
	return buf.Bytes(), nil
}

// Restore replaces the state with a snapshot.
func Restore(b []byte) (*Ledger, error) {
	l := New()
	if err := msgpack.Unmarshal(b, l); err != nil {
		return nil, fmt.Errorf("ledger: restore: %w", err)
	}
	l.upgrade()
	return l, nil
}

// Inf is how an unprotected observer's ε is written.
var Inf = math.Inf(1)
