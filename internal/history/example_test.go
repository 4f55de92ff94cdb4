package history_test

import (
	"fmt"

	"github.com/strata-fl/strata/internal/history"
)

// A round announced on the wire that no ledger holds breaks the
// write-ahead rule.
func ExampleCheck() {
	var rec history.Recorder
	for _, node := range []string{"g1", "g2", "g3"} {
		rec.Add(history.Event{Kind: history.Round, Node: node, View: 1, Index: 3, Round: 1, Status: "open", Clients: []string{"a-c1"}, Cost: "c1"})
	}
	rec.Add(history.Event{Kind: history.Announce, Round: 1, Region: "a", Clients: []string{"a-c1"}})
	rec.Add(history.Event{Kind: history.Announce, Round: 2, Region: "a", Clients: []string{"a-c1"}})
	err := history.Check(rec.Events())
	fmt.Println(err.(*history.Violation).Invariant, err.(*history.Violation).Detail)
	// Output: write-ahead round 2 reached the wire but the ledgers of only 0 of 3 nodes hold it
}
