package round

import (
	"log/slog"
	"time"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/mesh/wire"
)

// Action is something the machine asks the runner to do. Most are answered
// by one event (named in each action's doc); Log, Progress and Announce are
// not answered, and Stop ends the run.
type Action interface{ action() }

// Probe asks how many regions answer a ping (Probed).
type Probe struct{}

// Wait asks for Next again after For.
type Wait struct {
	For time.Duration
}

// LoadModel asks for a model version's parameters from the model store,
// its blob checked against Hash (ModelLoaded).
type LoadModel struct {
	Version uint64
	Hash    string
}

// Draw asks for N uniform draws in [0, 1) from a secure source (Drawn).
type Draw struct {
	N int
}

// Propose asks for a command to be committed through raft (Applied).
type Propose struct {
	Cmd ledger.Command
}

// OpenRegions asks for the round to be announced to every region, each
// region's sampled clients invited once it has acknowledged (Acked). The
// machine emits it only after the round's OpenRound is committed: the
// write-ahead rule.
type OpenRegions struct {
	Round   uint64
	Regions []RegionOpen
}

// RegionOpen is one region's announcement and its clients' invitation.
type RegionOpen struct {
	Region string
	// Open goes to the region, which must acknowledge it; Invite to each of
	// Clients on its own subject.
	Open    wire.RoundOpen
	Invite  wire.RoundOpen
	Clients []string
}

// Collect asks for the partials (PartialMsg) until the machine moves on,
// and for a Deadline at Until.
type Collect struct {
	Until time.Time
}

// AddNoise asks for Gaussian noise of standard deviation Sigma to be added
// to Values, in place, on the lattice (Noised). Values belong to the
// machine; the runner must not keep them.
type AddNoise struct {
	Values  []float64
	Sigma   float64
	Lattice float64
}

// StoreModel asks for a new version's parameters and optimizer state to be
// put into the model store (Stored).
type StoreModel struct {
	Version  uint64
	Theta    []float64
	Velocity []float64
	// Merged is what the candidate merged: the runner records it beside
	// the candidate, once both blobs are stored and with the model blob's
	// hash, so that a next leader can commit this very candidate
	// (Resume.Adopt) rather than draw the global noise again.
	Merged Merged
}

// Evaluate asks for the candidate parameters to be evaluated (Evaluated).
type Evaluate struct {
	Version uint64
	Theta   []float64
}

// CanaryGate asks the audit gate whether the candidate, trained from
// Base, may be promoted (GateChecked).
type CanaryGate struct {
	Theta []float64
	Base  []float64
}

// Progress tells the runner a round ended (committed or aborted).
type Progress struct {
	Report Report
}

// Log asks for a log line, with slog's alternating keys and values.
type Log struct {
	Level slog.Level
	Msg   string
	Args  []any
}

// Announce asks for the job's end to be published to every tier.
type Announce struct {
	Reason string
}

// Stop ends the run: Err nil means the job is finished.
type Stop struct {
	Err error
}

func (Probe) action()       {}
func (Wait) action()        {}
func (LoadModel) action()   {}
func (Draw) action()        {}
func (Propose) action()     {}
func (OpenRegions) action() {}
func (Collect) action()     {}
func (AddNoise) action()    {}
func (StoreModel) action()  {}
func (Evaluate) action()    {}
func (CanaryGate) action()  {}
func (Progress) action()    {}
func (Log) action()         {}
func (Announce) action()    {}
func (Stop) action()        {}
