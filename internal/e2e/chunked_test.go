package e2e

import (
	"testing"

	"github.com/strata-fl/strata/roles"
)

// TestChunkedPartialsReachTheGlobalTier: with a 128 KiB message limit and
// full fine-tuning (27 018 parameters, 108 KB a vector), regions send their
// partials in chunks and the global tier reassembles them; every round
// commits with both regions.
func TestChunkedPartialsReachTheGlobalTier(t *testing.T) {
	top := smallTopology(t)
	top.Train.Rounds = 3
	setTask(top, "full", true)
	m, ctx := startMesh(t, roles.UpConfig{Topology: top, MaxPayload: 128 << 10})
	defer m.Close()
	if err := m.Run(ctx); err != nil {
		t.Fatal(err)
	}
	l, _ := m.Ledger()
	if l.CommittedRounds() != 3 {
		t.Fatalf("%d rounds committed, want 3", l.CommittedRounds())
	}
	for _, r := range l.Rounds {
		if len(r.Regions) != 2 {
			t.Fatalf("round %d merged regions %v, want both (chunked partials reassembled)", r.Round, r.Regions)
		}
	}
	if mnistOf(t, m).Model.Dim()*4 <= 64<<10 {
		t.Fatalf("model of %d parameters fits one chunk: the test would not exercise chunking", mnistOf(t, m).Model.Dim())
	}
}
