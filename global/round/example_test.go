package round_test

import (
	"fmt"
	"time"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/global/round"
	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/topology"
)

// A runner drives one round: each action the machine returns is executed
// and answered by an event. Here the ledger, the network and the pricer
// are played by hand; the round is announced only after its OpenRound is
// committed.
func Example() {
	top, _ := topology.Parse([]byte("job: j\nregions:\n  - {id: a, clients: 1}\nprivacy: {min_regions: 1, noise: {regional: 1}}\nsecurity: {unsigned: true}\n"))
	flat := round.PricerFunc(func(t *topology.Topology, dim int, v *round.View) (round.Plan, error) {
		eps := ledger.PerObserver[float64]{Public: 0.5}
		return round.Plan{Clip: 1, Cost: round.Cost{EpsilonAfter: eps}, Groups: []ledger.GroupEpsilon{{From: 1, Epsilon: 0.5}}}, nil
	})
	m, _ := round.New(round.Config{Topology: top, Pricer: flat, Theta: []float64{0, 0}})
	view := &round.View{Next: 1, Clients: []round.Client{{ID: "a-c00000", Region: "a", Budget: 1, EligibleFrom: 1}}}
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	show := func(acts []round.Action) {
		for _, a := range acts {
			fmt.Printf("%T\n", a)
		}
	}
	show(m.Step(round.Next{View: view}))
	show(m.Step(round.Probed{Alive: 1, View: view, Now: now}))
	show(m.Step(round.Drawn{U: []float64{0}}))
	show(m.Step(round.Applied{})) // the OpenRound is committed
	show(m.Step(round.Acked{Regions: []string{"a"}}))
	p, _ := wire.Encode(wire.TypePartial, &wire.Partial{Job: "j", Round: 1, Region: "a", Count: 1, Sum: wire.AppendFloat64s(nil, []float64{1, 1})})
	show(m.Step(round.PartialMsg{Data: p, At: now.Add(time.Second)}))
	// Output:
	// round.Probe
	// round.Draw
	// round.Propose
	// round.OpenRegions
	// round.Collect
	// round.StoreModel
}
