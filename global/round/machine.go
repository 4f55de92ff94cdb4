package round

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/topology"
)

// Errors the machine stops with.
var (
	// ErrBudgetExhausted reports that the job stopped because its next
	// round would exceed the privacy budget.
	ErrBudgetExhausted = errors.New("global: privacy budget exhausted")
	// ErrUnexpected reports an event the machine was not waiting for: a
	// runner's bug, never the network's (partials arrive as PartialMsg,
	// which is always expected while collecting).
	ErrUnexpected = errors.New("round: unexpected event")
	// ErrPlan reports a plan the machine cannot use (a Pricer's bug).
	ErrPlan = errors.New("round: unusable plan")
)

// maxReplans bounds how often in a row the ledger may refuse a round's
// population (a client enrolled, withdrawn or priced over its budget
// between the view and the commit) before the machine gives up.
const maxReplans = 3

// Config is what a machine is started with: the job's plan and the model
// version the runner loaded. The machine keeps the slices.
type Config struct {
	// Topology is the job's plan; required.
	Topology *topology.Topology
	// Pricer prices each round; required.
	Pricer Pricer
	// Theta is the parameters of model version Version (float32 values),
	// Velocity its server-momentum state (nil: zeros). Theta is required;
	// its length is the model's dimension.
	Theta    []float64
	Velocity []float64
	Version  uint64
	// Hash0 is the hash of version 0's blob, announced while v0 serves.
	Hash0 string
	// Base is v0's evaluation: the gate's reference while v0 serves.
	Base Evaluation
	// PartialGrace is how long after a round's deadline partials are still
	// accepted; ≥ 0.
	PartialGrace time.Duration
}

// Validate names the first field that cannot work.
func (c Config) Validate() error {
	switch {
	case c.Topology == nil:
		return errors.New("round: Config.Topology is required")
	case c.Pricer == nil:
		return errors.New("round: Config.Pricer is required")
	case len(c.Theta) == 0:
		return errors.New("round: Config.Theta is empty (the model has no parameters)")
	case c.Velocity != nil && len(c.Velocity) != len(c.Theta):
		return fmt.Errorf("round: Config.Velocity has %d values, Theta %d", len(c.Velocity), len(c.Theta))
	case c.PartialGrace < 0:
		return fmt.Errorf("round: Config.PartialGrace %v is negative", c.PartialGrace)
	}
	return nil
}

type phase int

const (
	idle       phase = iota // between rounds: waiting for Next
	loading                 // LoadModel asked
	probing                 // Probe asked
	drawing                 // Draw asked
	opening                 // OpenRound proposed
	announcing              // OpenRegions asked
	collecting              // Collect asked
	noising                 // AddNoise asked
	storing                 // StoreModel asked
	evaluating              // Evaluate asked
	gating                  // CanaryGate asked
	committing              // CommitModel proposed
	aborting                // AbortRound proposed
	finishing               // FinishJob proposed
	done                    // Stop emitted
)

var phaseNames = [...]string{"idle", "loading", "probing", "drawing", "opening", "announcing", "collecting",
	"noising", "storing", "evaluating", "gating", "committing", "aborting", "finishing", "done"}

func (p phase) String() string { return phaseNames[p] }

// Machine is the global tier's round coordinator as a pure state machine:
// Step takes an event and returns the actions the runner must take. It
// does no I/O, reads no clock and draws no randomness; it is not safe for
// concurrent use (one runner goroutine owns it).
type Machine struct {
	cfg      Config
	top      *topology.Topology
	theta    []float64
	velocity []float64
	version  uint64 // the model version theta holds
	phase    phase
	r        *roundState
	replans  int
	started  bool // a round was planned or resumed
	// finishReason and finishErr are announced and returned once the
	// proposed FinishJob commits.
	finishReason string
	finishErr    error
}

// New checks cfg and returns a machine between rounds.
func New(cfg Config) (*Machine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	vel := cfg.Velocity
	if vel == nil {
		vel = make([]float64, len(cfg.Theta))
	}
	return &Machine{cfg: cfg, top: cfg.Topology, theta: cfg.Theta, velocity: vel, version: cfg.Version}, nil
}

// Theta returns a copy of the parameters of the version the machine holds.
func (m *Machine) Theta() []float64 { return append([]float64(nil), m.theta...) }

// Version is the model version the machine holds.
func (m *Machine) Version() uint64 { return m.version }

// Idle reports whether the machine waits for Next.
func (m *Machine) Idle() bool { return m.phase == idle }

// Collecting reports whether the machine waits for partials, and until when.
func (m *Machine) Collecting() (time.Time, bool) {
	if m.phase != collecting {
		return time.Time{}, false
	}
	return m.r.until, true
}

// Done reports whether the machine has stopped.
func (m *Machine) Done() bool { return m.phase == done }

// Step applies one event and returns the actions it calls for.
func (m *Machine) Step(ev Event) []Action {
	if m.phase == done {
		return []Action{Stop{Err: fmt.Errorf("%w: %T after the machine stopped", ErrUnexpected, ev)}}
	}
	if !m.expects(ev) {
		return m.stop(fmt.Errorf("%w: %T while %s", ErrUnexpected, ev, m.phase))
	}
	switch e := ev.(type) {
	case Next:
		return m.next(e.View)
	case Resume:
		return m.resume(e)
	case ModelLoaded:
		return m.loaded(e)
	case Probed:
		return m.probed(e)
	case Drawn:
		return m.drawn(e)
	case Applied:
		return m.applied(e)
	case Acked:
		return m.acked(e)
	case PartialMsg:
		return m.partial(e)
	case Deadline:
		return m.closeCollection()
	case Noised:
		return m.noised(e)
	case Stored:
		return m.stored(e)
	case Evaluated:
		return m.evaluated(e)
	case GateChecked:
		return m.gated(e)
	}
	return m.stop(fmt.Errorf("%w: %T", ErrUnexpected, ev))
}

// expects reports whether ev answers what the machine is waiting for.
func (m *Machine) expects(ev Event) bool {
	switch ev.(type) {
	case Next:
		return m.phase == idle
	case Resume:
		// Only before the machine's own first round: a round left open
		// is found once, when a leader starts.
		return m.phase == idle && !m.started && ev.(Resume).View != nil
	case ModelLoaded:
		return m.phase == loading
	case Probed:
		return m.phase == probing
	case Drawn:
		return m.phase == drawing
	case Applied:
		return m.phase == opening || m.phase == committing || m.phase == aborting || m.phase == finishing
	case Acked:
		return m.phase == announcing
	case PartialMsg, Deadline:
		return m.phase == collecting
	case Noised:
		return m.phase == noising
	case Stored:
		return m.phase == storing
	case Evaluated:
		return m.phase == evaluating
	case GateChecked:
		return m.phase == gating
	}
	return false
}

// stop ends the run with err (nil: the job is finished).
func (m *Machine) stop(err error) []Action {
	m.phase, m.r = done, nil
	return []Action{Stop{Err: err}}
}

// next decides, between rounds, whether the job is over, the serving
// model must be loaded, or a round can be tried.
func (m *Machine) next(v *View) []Action {
	t := m.top
	switch {
	case v.Finished:
		m.phase = done
		return []Action{Announce{Reason: "finished"}, Stop{}}
	case v.Committed >= t.Train.Rounds:
		return m.finish(&ledger.FinishJob{Reason: "completed planned rounds"}, nil)
	}
	if reason := converged(t.Privacy.Pacing.Patience, v.Losses); reason != "" {
		return m.finishEarly(v, reason)
	}
	if v.Serving != m.version {
		return m.load(v)
	}
	m.phase = probing
	return []Action{Probe{}}
}

// load asks for the serving version (a rollback moved it).
func (m *Machine) load(v *View) []Action {
	m.phase = loading
	return []Action{LoadModel{Version: v.Serving, Hash: v.ServingHash}}
}

func (m *Machine) loaded(e ModelLoaded) []Action {
	if e.Err != nil {
		return m.stop(fmt.Errorf("global: resuming from model v%d: %w", e.Version, e.Err))
	}
	if len(e.Theta) != len(m.theta) || (e.Velocity != nil && len(e.Velocity) != len(m.theta)) {
		return m.stop(fmt.Errorf("%w: model v%d loaded with %d parameters (velocity %d), the model has %d", ErrUnexpected, e.Version, len(e.Theta), len(e.Velocity), len(m.theta)))
	}
	m.theta, m.velocity, m.version = e.Theta, e.Velocity, e.Version
	if m.velocity == nil {
		m.velocity = make([]float64, len(m.theta))
	}
	m.phase = probing
	return []Action{Probe{}}
}

func (m *Machine) probed(e Probed) []Action {
	if e.View.Serving != m.version {
		return m.load(e.View)
	}
	if min := m.top.Privacy.MinRegions; e.Alive < min {
		// Opening a round charges its cost: never open one that cannot be
		// released.
		m.phase = idle
		return []Action{
			Log{Level: slog.LevelWarn, Msg: "waiting for regions before opening a round", Args: []any{"alive", e.Alive, "required", min}},
			Wait{For: time.Second},
		}
	}
	return m.plan(e.View, e.Now)
}

// finish proposes the end of the job; err is what the run stops with once
// it is committed (nil for a job that ran its course).
func (m *Machine) finish(cmd *ledger.FinishJob, err error) []Action {
	m.phase, m.r = finishing, nil
	m.finishReason, m.finishErr = cmd.Reason, err
	return []Action{Propose{Cmd: cmd}}
}

// refuse ends a job whose next round the budget does not allow; nothing
// of the round was published.
func (m *Machine) refuse(err error) []Action {
	return m.finish(&ledger.FinishJob{Reason: err.Error()}, err)
}

// finishEarly ends a job that stopped on its evaluation loss: the planned
// rounds it did not run are charged as the next round would be, so that
// what the ledger reports is ε(T) of the planned run, which early stopping
// only post-processes.
func (m *Machine) finishEarly(v *View, reason string) []Action {
	plan, err := m.cfg.Pricer.Price(m.top, len(m.theta), v)
	if err != nil {
		return m.stop(err)
	}
	cmd := &ledger.FinishJob{Reason: reason}
	if rc := plan.Remaining; rc != nil && plan.RemainingRounds > 0 {
		cmd.Planned = &ledger.PlannedCharge{Rounds: plan.RemainingRounds, RDP: rc.RDP, Slack: rc.Slack, DeltaCharge: rc.Delta, EpsilonAfter: rc.EpsilonAfter}
	}
	return m.finish(cmd, nil)
}

// converged reports why the job should stop early: the evaluation loss has
// not improved for patience rounds. It reads the committed models, so a
// new leader reaches the same verdict.
func converged(patience int, losses []float64) string {
	if patience <= 0 || len(losses) <= patience {
		return ""
	}
	best, bestAt := losses[0], 0
	for i, v := range losses {
		if v < best {
			best, bestAt = v, i
		}
	}
	if len(losses)-1-bestAt >= patience {
		return fmt.Sprintf("converged: evaluation loss has not improved for %d rounds (best %.4f at model v%d); the planned rounds not run are charged (stopping on the outputs is post-processing of the planned run)", patience, best, bestAt+1)
	}
	return ""
}

func (m *Machine) applied(e Applied) []Action {
	if e.Err != nil {
		return m.stop(e.Err)
	}
	switch m.phase {
	case opening:
		return m.opened(e.Result)
	case committing:
		if e.Result.Err != nil {
			return m.stop(e.Result.Err)
		}
		return m.progress()
	case aborting:
		if e.Result.Err != nil {
			return m.stop(e.Result.Err)
		}
		return m.progress()
	}
	// finishing
	if e.Result.Err != nil {
		return m.stop(e.Result.Err)
	}
	m.phase = done
	return []Action{Announce{Reason: m.finishReason}, Stop{Err: m.finishErr}}
}

// progress ends the round: the runner reports it and asks for Next.
func (m *Machine) progress() []Action {
	rep := m.r.report
	m.phase, m.r = idle, nil
	return []Action{Progress{Report: rep}}
}

// finite reports whether every value is a number.
func finite(v []float64) bool {
	for _, x := range v {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return false
		}
	}
	return true
}
