package e2e

import (
	"errors"
	"math"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/mesh"
	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/roles"
	"github.com/strata-fl/strata/topology"
)

// projected returns the public ε a client eligible from round 1 has after
// k rounds of top's plan.
func projected(t *testing.T, top *topology.Topology, k int) float64 {
	t.Helper()
	c := top.Clone()
	c.Train.Rounds = k
	p, err := global.Project(c, mustDim(t, top))
	if err != nil {
		t.Fatal(err)
	}
	return p.Epsilon.Public
}

func runSmall(t *testing.T, top *topology.Topology, observe func(m *roles.Up)) (*ledger.Ledger, error) {
	t.Helper()
	m, ctx := startMesh(t, roles.UpConfig{Topology: top})
	defer m.Close()
	if observe != nil {
		observe(m)
	}
	runErr := m.Run(ctx)
	l, err := m.Ledger()
	if err != nil {
		t.Fatal(err)
	}
	return l, runErr
}

// TestClientWithSmallBudgetLeavesAtTheRightRound: one client's budget lies
// between the public ε of 2 and of 3 rounds, so it must be retired before
// round 3, never be sampled again, and never have spent more than its budget.
func TestClientWithSmallBudgetLeavesAtTheRightRound(t *testing.T) {
	top := smallTopology(t)
	top.Train.Rounds = 5
	const victim = "a-c00003"
	budget := (projected(t, top, 2) + projected(t, top, 3)) / 2
	top.Privacy.ClientBudgets = map[string]float64{victim: budget}
	l, err := runSmall(t, top, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, ok := l.Client(victim)
	if !ok {
		t.Fatal("victim not enrolled")
	}
	if c.Status != ledger.ClientRetired || c.EligibleUntil != 3 {
		t.Fatalf("victim %s, eligible until round %d; want retired before round 3", c.Status, c.EligibleUntil)
	}
	for _, r := range c.Sampled {
		if r >= 3 {
			t.Fatalf("victim sampled in round %d after retiring", r)
		}
	}
	eps, err := l.ClientEpsilon(victim)
	if err != nil {
		t.Fatal(err)
	}
	if eps.Public > budget {
		t.Fatalf("victim spent ε %v, over its budget %v", eps.Public, budget)
	}
	other, _ := l.ClientEpsilon("a-c00004")
	if !(other.Public > budget) || l.CommittedRounds() != 5 {
		t.Fatalf("others: ε %v after %d rounds; the job should go on without the victim", other.Public, l.CommittedRounds())
	}
	t.Logf("victim budget %.4f, spent %.4f; others %.4f", budget, eps.Public, other.Public)
}

// TestMeshBudgetRefusesRoundAndReleasesNothing: with a mesh budget between
// the public ε of 2 and 3 rounds, round 3 is refused with an error naming
// budget and spend, and no round.open for it ever reaches NATS.
func TestMeshBudgetRefusesRoundAndReleasesNothing(t *testing.T) {
	top := smallTopology(t)
	top.Train.Rounds = 5
	top.Privacy.Budget = (projected(t, top, 2) + projected(t, top, 3)) / 2
	var mu sync.Mutex
	var announced []uint64
	l, err := runSmall(t, top, func(m *roles.Up) {
		spy, err := m.Dialer().Connect("spy")
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range top.Regions {
			subj, _ := mesh.RoundSubject(top.Job, r.ID)
			spy.Subscribe(subj, func(msg *nats.Msg) {
				var o wire.RoundOpen
				if wire.Decode(msg.Data, wire.TypeRoundOpen, &o) == nil {
					mu.Lock()
					announced = append(announced, o.Round)
					mu.Unlock()
				}
			})
		}
		spy.Flush()
	})
	if !errors.Is(err, global.ErrBudgetExhausted) {
		t.Fatalf("got %v, want ErrBudgetExhausted", err)
	}
	t.Logf("refusal: %v", err)
	for _, word := range []string{"budget", "spent so far"} {
		if !strings.Contains(err.Error(), word) {
			t.Fatalf("error %q does not name %q", err, word)
		}
	}
	if len(l.Rounds) != 2 || !l.Finished {
		t.Fatalf("%d rounds recorded, finished %v; want 2 and finished", len(l.Rounds), l.Finished)
	}
	if l.Spent(ledger.Public) > top.Privacy.Budget {
		t.Fatalf("spent %v over budget %v", l.Spent(ledger.Public), top.Privacy.Budget)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, r := range announced {
		if r > 2 {
			t.Fatalf("round %d was announced although refused", r)
		}
	}
}

// TestAdaptiveClippingInTheMesh runs a small job with adaptive clipping:
// the clipping bits travel edge → region (summed and noised) → global, the
// clip norm moves round by round and is recorded, and the job completes.
func TestAdaptiveClippingInTheMesh(t *testing.T) {
	top := smallTopology(t)
	top.Privacy.ClipNorm = 0.05 // far below the update norms: the controller must raise it
	top.Privacy.AdaptiveClip = topology.AdaptiveClip{Enabled: true}
	top.ApplyDefaults()
	if err := top.Validate(); err != nil {
		t.Fatal(err)
	}
	l, err := runSmall(t, top, nil)
	if err != nil {
		t.Fatal(err)
	}
	var clips []float64
	for _, r := range l.Rounds {
		clips = append(clips, r.ClipNorm)
	}
	t.Logf("clip norms by round: %v", clips)
	if !(clips[len(clips)-1] > clips[0]) {
		t.Fatalf("clip norm did not rise from %v although every update was clipped: %v", clips[0], clips)
	}
	fixed := top.Clone()
	fixed.Privacy.AdaptiveClip.Enabled = false
	want := projected(t, fixed, top.Train.Rounds)
	if got := l.Spent(ledger.Public); math.Abs(got-want) > 1e-9*want {
		t.Fatalf("public ε %v with adaptive clipping, %v for the same plan with fixed clipping", got, want)
	}
}
