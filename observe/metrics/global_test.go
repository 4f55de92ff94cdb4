package metrics

import (
	"testing"

	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/observe/report"
	"github.com/strata-fl/strata/topology"
)

// TestRegionsFromTheLedgerWhereThisNodeCoordinatedNothing: a node whose
// coordinator reported no round (a follower) shows, for a committed
// round, the partials the ledger records as merged, and nothing for
// rounds without a model; it never decodes the bus.
func TestRegionsFromTheLedgerWhereThisNodeCoordinatedNothing(t *testing.T) {
	top, err := topology.Parse([]byte("job: t\nregions:\n  - {id: a, clients: 2}\n  - {id: b, clients: 2}\n"))
	if err != nil {
		t.Fatal(err)
	}
	g, err := NewGlobal(GlobalConfig{Node: &global.Node{}, Topology: top, Dim: 10})
	if err != nil {
		t.Fatal(err)
	}
	rounds := []report.Round{
		{Round: 1, Status: "committed", Regions: []string{"a", "b"}, Model: &ledger.Model{Partials: []ledger.PartialRef{{Region: "a", Count: 3}, {Region: "b", Count: 1}}}},
		{Round: 2, Status: "aborted"},
		{Round: 3, Status: "open"},
	}
	got := g.Regions(rounds)
	if len(got) != 1 || got[1]["a"].Accepted != 3 || got[1]["b"].Accepted != 1 {
		t.Fatalf("regions %+v, want round 1's merged partials only", got)
	}
}

func TestReasonLabel(t *testing.T) {
	for in, want := range map[string]string{"norm_exceeded": "norm_exceeded", "": "other", "Bad": "other", "a-b": "other", "waytoolongforalabelvaluewaytoolongx": "other"} {
		if got := reasonLabel(in); got != want {
			t.Errorf("reasonLabel(%q) = %q, want %q", in, got, want)
		}
	}
}
