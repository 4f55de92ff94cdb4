package global

import "testing"

// TestPartialCountsAddUpAcrossRounds: what a node's coordinators report
// after each round adds up, is copied out (a reader cannot change it), and
// keeps a bounded number of rounds' figures.
func TestPartialCountsAddUpAcrossRounds(t *testing.T) {
	var n Node
	n.partials.record(RoundReport{Round: 1,
		Merged:   []MergedPartial{{Region: "a", Count: 3, Rejected: map[string]int{"norm_exceeded": 1}}, {Region: "b", Count: 2}},
		Rejected: []PartialRejection{{Region: "a", Reason: "duplicate", Count: 1}, {Region: "", Reason: "malformed", Count: 2}}})
	n.partials.record(RoundReport{Round: 2, Merged: []MergedPartial{{Region: "a", Count: 1}},
		Rejected: []PartialRejection{{Region: "a", Reason: "duplicate", Count: 1}}})
	pc := n.PartialCounts()
	if pc.Accepted["a"] != 2 || pc.Accepted["b"] != 1 || pc.Updates["a"] != 4 || pc.UpdatesRejected["a"]["norm_exceeded"] != 1 ||
		pc.Rejected["a"]["duplicate"] != 2 || pc.Rejected[""]["malformed"] != 2 || pc.Rounds != 2 {
		t.Fatalf("counts %+v", pc)
	}
	pc.Rejected["a"]["duplicate"] = 99
	if n.PartialCounts().Rejected["a"]["duplicate"] != 2 {
		t.Fatal("a copy of the counts changed the node's")
	}
	if m, ok := n.RoundPartials(1); !ok || len(m) != 2 {
		t.Fatalf("round 1: %v %v", m, ok)
	}
	if _, ok := n.RoundPartials(3); ok {
		t.Fatal("round 3 was never reported")
	}
	for r := uint64(3); r < 3+maxLoggedRounds; r++ {
		n.partials.record(RoundReport{Round: r})
	}
	if _, ok := n.RoundPartials(1); ok {
		t.Fatal("round 1 kept after more than maxLoggedRounds rounds")
	}
	if _, ok := n.RoundPartials(3); !ok {
		t.Fatal("a recent round was dropped")
	}
}
