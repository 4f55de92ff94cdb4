package e2e

import (
	"math"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/mesh"
	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/roles"
)

// TestEdgeNoiseToppedUpEndToEnd runs a job with edge noise and
// privacy.top_up over real NATS and raft: every update a region receives
// is float64 on the round's lattice (the region accepts it, so none is
// off the lattice, and none is rounded), every partial stays on the
// lattice, the round's invitations announce the lattice and each region's
// cap, and the ledger credits the topped-up noise to the public — far
// below the revealed-sampling ε the same plan has without the top-up —
// while the regional operator is protected by the client's own edge noise
// alone.
func TestEdgeNoiseToppedUpEndToEnd(t *testing.T) {
	top := smallTopology(t)
	top.Privacy.Noise.Edge = 0.3
	top.Privacy.TopUp = true
	if err := top.Validate(); err != nil {
		t.Fatal(err)
	}
	m, ctx := startMesh(t, roles.UpConfig{Topology: top})
	defer m.Close()
	spy, err := m.Dialer().Connect("spy")
	if err != nil {
		t.Fatal(err)
	}
	defer spy.Close()
	var mu sync.Mutex
	lattice := map[uint64]float64{}
	caps := map[string]int{}
	var updates, offLattice, partials, partialOff int
	check := func(v []float64, g float64) (off int) {
		for _, x := range v {
			if g == 0 || x/g != math.Trunc(x/g) {
				off++
			}
		}
		return off
	}
	for _, r := range top.Regions {
		round, _ := mesh.RoundSubject(top.Job, r.ID)
		spy.Subscribe(round, func(msg *nats.Msg) {
			var o wire.RoundOpen
			if wire.Decode(msg.Data, wire.TypeRoundOpen, &o) == nil {
				mu.Lock()
				lattice[o.Round], caps[o.Region] = o.Lattice, o.TopUpCap
				mu.Unlock()
			}
		})
		upd, _ := mesh.UpdateWildcard(top.Job, r.ID)
		spy.Subscribe(upd, func(msg *nats.Msg) {
			var u wire.Update
			if wire.Decode(msg.Data, wire.TypeUpdate, &u) != nil {
				return
			}
			v, err := wire.Float64s(u.Vec)
			mu.Lock()
			defer mu.Unlock()
			updates++
			if u.Encoding != wire.EncodingF64 || err != nil {
				offLattice++
				return
			}
			offLattice += min(1, check(v, lattice[u.Round]))
		})
	}
	psub, _ := mesh.PartialWildcard(top.Job)
	spy.Subscribe(psub, func(msg *nats.Msg) {
		var p wire.Partial
		if wire.Decode(msg.Data, wire.TypePartial, &p) != nil {
			return
		}
		v, _ := wire.Float64s(p.Sum)
		mu.Lock()
		partials++
		partialOff += check(v, lattice[p.Round])
		mu.Unlock()
	})
	spy.Flush()
	if err := m.Run(ctx); err != nil {
		t.Fatal(err)
	}
	spy.Flush()
	l, err := m.Ledger()
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if updates == 0 || partials == 0 {
		t.Fatalf("saw %d updates and %d partials", updates, partials)
	}
	if offLattice > 0 || partialOff > 0 {
		t.Errorf("%d of %d updates and %d partial values were not float64 on the round's lattice", offLattice, updates, partialOff)
	}
	for _, r := range top.Regions {
		if caps[r.ID] <= 0 {
			t.Errorf("region %s was announced no top-up cap", r.ID)
		}
		if n := m.Regions[r.ID].Runner().Stats().Rejected; n["off_lattice"] > 0 || n["bad_encoding"] > 0 {
			t.Errorf("region %s rejected honest updates: %v", r.ID, n)
		}
	}
	// The same plan without the top-up pays the revealed-sampling curve.
	revealed := top.Clone()
	revealed.Privacy.TopUp = false
	p, err := global.Project(revealed, len(mnistOf(t, m).Theta0))
	if err != nil {
		t.Fatal(err)
	}
	if got := l.Spent(ledger.Public); !(got < p.Epsilon.Public) {
		t.Errorf("public ε %v with the top-up, %v without: topping up should lower it", got, p.Epsilon.Public)
	}
	if reg := l.Spent(ledger.RegionalOperator); math.IsInf(reg, 1) {
		t.Errorf("regional operator ε ∞ with edge noise on")
	}
	if !(l.Spent(ledger.Public) < l.Spent(ledger.FellowClients)) {
		t.Errorf("the public (credited every client's topped-up noise) should have a smaller ε than fellow clients")
	}
	t.Logf("public ε %.4f (%.4f without the top-up), fellow clients %.4f, global operator %.4f, regional operator %.4f; %d updates, %d partials on the lattice",
		l.Spent(ledger.Public), p.Epsilon.Public, l.Spent(ledger.FellowClients), l.Spent(ledger.GlobalOperator), l.Spent(ledger.RegionalOperator), updates, partials)
}
