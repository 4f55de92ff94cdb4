package round

import (
	"time"

	"github.com/strata-fl/strata/global/ledger"
)

// Event is something the runner tells the machine: what the ledger holds,
// what the network brought, what an action it ran returned, what time it
// is. Time and random draws reach the machine only inside events.
type Event interface{ event() }

// Next asks the machine what to do next, between rounds: finish the job,
// load the serving model, or probe the regions for a new round. The runner
// sends it first, and again after every Wait and every round.
type Next struct {
	View *View
}

// Probed answers Probe: how many regions answered, with the ledger's view
// and the time read after the probe (the round is planned from them).
type Probed struct {
	Alive int
	View  *View
	Now   time.Time
}

// ModelLoaded answers LoadModel with the version's parameters and its
// optimizer state (nil: start the momentum afresh).
type ModelLoaded struct {
	Version  uint64
	Theta    []float64
	Velocity []float64
	Err      error
}

// Drawn answers Draw: N uniform draws in [0, 1) from a secure source.
type Drawn struct {
	U   []float64
	Err error
}

// Applied answers Propose: the ledger's result, or Err when the command
// may not have been committed (not leader, timeout).
type Applied struct {
	Result ledger.Result
	Err    error
}

// Acked answers OpenRegions: the regions that acknowledged the round (and
// whose sampled clients were then invited). Err is a failure to publish
// an invitation.
type Acked struct {
	Regions []string
	Err     error
}

// PartialMsg is one message from a region's partial subject (a whole
// partial or one chunk of one), received at At.
type PartialMsg struct {
	Data []byte
	At   time.Time
}

// Deadline says the time Collect named has come.
type Deadline struct {
	At time.Time
}

// Noised answers AddNoise: the values now hold the global noise.
type Noised struct {
	Err error
}

// Stored answers StoreModel with the model blob's hash.
type Stored struct {
	Hash string
	Err  error
}

// Evaluated answers Evaluate.
type Evaluated struct {
	Evaluation
	Err error
}

// Evaluation is a model version's evaluation as the gate compares it and
// the ledger records it.
type Evaluation struct {
	// Score is higher-is-better: the primary metric, negated when lower
	// is better. The gate compares scores.
	Score float64
	Loss  float64
	// Metric names the primary metric among Metrics ("" when only Score
	// is known: an accuracy, as older ledgers recorded).
	Metric  string
	Metrics []ledger.Metric
}

// Primary is the primary metric as the task reported it: its name and
// value.
func (e Evaluation) Primary() (string, float64) {
	return ledger.Model{Score: e.Score, Metric: e.Metric, Metrics: e.Metrics}.Primary()
}

// EvaluationOf is a committed version's recorded evaluation.
func EvaluationOf(m ledger.Model) Evaluation {
	return Evaluation{Score: m.Score, Loss: m.Loss, Metric: m.Metric, Metrics: m.Metrics}
}

// GateChecked answers CanaryGate: why the candidate must not be promoted,
// or "" to promote it.
type GateChecked struct {
	Reason string
	Err    error
}

func (Next) event()        {}
func (Probed) event()      {}
func (ModelLoaded) event() {}
func (Drawn) event()       {}
func (Applied) event()     {}
func (Acked) event()       {}
func (PartialMsg) event()  {}
func (Deadline) event()    {}
func (Noised) event()      {}
func (Stored) event()      {}
func (Evaluated) event()   {}
func (GateChecked) event() {}
