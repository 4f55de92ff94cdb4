package round

import (
	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/topology"
)

// Pricer prices the next round from the ledger's view: the noise plan, the
// clip norm, the lattice and the caps, the round's cost per observer, and
// the public ε after it of every group of eligible clients. It is where
// the floating-point work of accounting happens (RDP curves and their
// conversion to ε), on the proposer only; the machine compares what it
// returns with the budgets and puts the numbers into the OpenRound, whose
// Apply only compares them again. A Pricer must be a pure function of its
// arguments. The global package's pricer is the one a job uses; tests may
// use any.
type Pricer interface {
	Price(t *topology.Topology, dim int, v *View) (Plan, error)
}

// PricerFunc adapts a function to Pricer.
type PricerFunc func(t *topology.Topology, dim int, v *View) (Plan, error)

// Price implements Pricer.
func (f PricerFunc) Price(t *topology.Topology, dim int, v *View) (Plan, error) { return f(t, dim, v) }

// Plan is one round's parameters and its price.
type Plan struct {
	// Noise holds the multipliers per tier (paced or planned), Clip the
	// round's clip norm, Lattice the round's one noise lattice.
	Noise   ledger.Noise
	Clip    float64
	Lattice float64
	// Caps are the regions' top-up caps (privacy.top_up), by region; nil
	// without.
	Caps map[string]int
	// Cost is the round's charge.
	Cost Cost
	// Remaining, when the job may stop on its outputs (pacing.patience),
	// is the charge of every planned round not yet committed, this one
	// among them, RemainingRounds of them: the ledger charges a job that
	// stops early its whole planned run, so the budget must hold for it.
	Remaining       *Cost
	RemainingRounds int
	// Groups are the public ε after this round of the clients eligible
	// since each round, sorted by From; it includes the group eligible
	// from this round (clients enrolled after the view was read).
	Groups []ledger.GroupEpsilon
	// PaceScale is the factor pacing scaled the planned noise by (0: no
	// pacing), for the log.
	PaceScale float64
}

// Cost is one round's charge: its one-step curves, ε slack and δ, and the
// cumulative ε and the credited multiplier per observer after it.
type Cost struct {
	RDP          ledger.PerObserver[[]float64]
	Slack        ledger.PerObserver[float64]
	Delta        float64
	EpsilonAfter ledger.PerObserver[float64]
	Sigma        ledger.PerObserver[float64]
}

// groupEpsilon returns the priced ε of the group eligible from round from.
func (p *Plan) groupEpsilon(from uint64) (float64, bool) {
	for _, g := range p.Groups {
		if g.From == from {
			return g.Epsilon, true
		}
	}
	return 0, false
}

// UpdateEncoding is the encoding a round's updates must use: float64 on
// the lattice when the ledger adds the edge noise to the later noise (no
// secure aggregation, no compression), so that nothing rounds between
// them; "" (the client's own choice) otherwise.
func UpdateEncoding(t *topology.Topology, n ledger.Noise) string {
	if n.Edge > 0 && !t.SecAgg.On && !t.DataPath.Compressed() {
		return wire.EncodingF64
	}
	return ""
}
