package metrics

import (
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/observe/report"
	"github.com/strata-fl/strata/topology"
)

// FuzzOnPartial feeds arbitrary bytes to the tracker's partial handler (it
// listens on a subject anyone on the bus can publish to): it must never
// panic, and what it records must be a known region with counts ≥ 0.
func FuzzOnPartial(f *testing.F) {
	top, err := topology.Parse([]byte("job: t\nregions:\n  - {id: a, clients: 2}\n  - {id: b, clients: 2}\n"))
	if err != nil {
		f.Fatal(err)
	}
	whole, _ := wire.Encode(wire.TypePartial, &wire.Partial{Job: "t", Round: 1, Region: "a", Count: 3, Rejected: map[string]int{"duplicate": 1}, Sum: make([]byte, 8)})
	chunk, _ := wire.AppendPartialChunk(nil, &wire.PartialChunkHeader{Job: "t", Round: 2, Region: "b", Count: 4, Total: 2}, make([]byte, 8))
	f.Add(whole)
	f.Add(chunk)
	f.Add([]byte{byte(wire.TypePartial), wire.Version, 0xdf, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		// The handler never touches the node; a zero one satisfies NewGlobal.
		g, err := NewGlobal(GlobalConfig{Node: &global.Node{}, Topology: top, Dim: 10})
		if err != nil {
			t.Fatal(err)
		}
		g.onPartial(&nats.Msg{Data: b})
		for round, m := range g.regions {
			for id, rr := range m {
				if id != "a" && id != "b" {
					t.Fatalf("round %d: recorded unknown region %q", round, id)
				}
				if rr.Accepted < 0 {
					t.Fatalf("round %d region %s: accepted %d", round, id, rr.Accepted)
				}
			}
		}
		_ = g.Regions([]report.Round{{Round: 1, Status: "open"}, {Round: 2, Status: "committed", Regions: []string{"b"}}})
	})
}
