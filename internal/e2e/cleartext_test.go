package e2e

import (
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/strata-fl/strata/mesh"
	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/roles"
)

// TestUpdatesCarryNoClearTextData reads, as the regional operator can,
// every update clients send in a real job, and checks the fields it could
// read in clear: no example count ever, and the adaptive-clipping bit only
// in a job that asks for it (and accounts it: ε against the regional
// operator is then ∞). Updates once carried both in every job.
func TestUpdatesCarryNoClearTextData(t *testing.T) {
	for _, adaptive := range []bool{false, true} {
		top := smallTopology(t)
		top.Train.Rounds = 2
		top.Privacy.AdaptiveClip.Enabled = adaptive
		if adaptive {
			// A clip norm no update reaches: every bit is 1, so a job that
			// sends bits shows them (a 0 bit is not encoded).
			top.Privacy.ClipNorm = 1000
		}
		top.ApplyDefaults()
		if err := top.Validate(); err != nil {
			t.Fatal(err)
		}
		m, ctx := startMesh(t, roles.UpConfig{Topology: top})
		spy, err := m.Dialer().Connect("regional-operator")
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		fields := map[string]int{}
		updates := 0
		for _, r := range top.Regions {
			subj, _ := mesh.UpdateWildcard(top.Job, r.ID)
			if _, err := spy.Subscribe(subj, func(msg *nats.Msg) {
				if ty, _ := wire.Peek(msg.Data); ty != wire.TypeUpdate {
					return
				}
				var body map[string]any
				if err := msgpack.Unmarshal(msg.Data[2:], &body); err != nil {
					t.Errorf("update does not decode: %v", err)
					return
				}
				mu.Lock()
				updates++
				for k := range body {
					fields[k]++
				}
				mu.Unlock()
			}); err != nil {
				t.Fatal(err)
			}
		}
		spy.Flush()
		if err := m.Run(ctx); err != nil {
			t.Fatal(err)
		}
		spy.Flush()
		l, err := m.Ledger()
		if err != nil {
			t.Fatal(err)
		}
		spy.Close()
		m.Close()
		mu.Lock()
		if updates == 0 {
			t.Fatal("no update seen")
		}
		if fields["examples"] > 0 {
			t.Errorf("adaptive %v: %d of %d updates carry an example count", adaptive, fields["examples"], updates)
		}
		if !adaptive && fields["unclipped"] > 0 {
			t.Errorf("without adaptive clipping %d of %d updates carry the clipping bit", fields["unclipped"], updates)
		}
		if adaptive && fields["unclipped"] == 0 {
			t.Errorf("with adaptive clipping no update carries the clipping bit (%d updates): is the bit still sent?", updates)
		}
		mu.Unlock()
		if eps := l.Spent("regional_operator"); adaptive && eps < 1e300 {
			t.Errorf("with clipping bits in clear the regional operator's ε is %v, want ∞", eps)
		}
	}
}
