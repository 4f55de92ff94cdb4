// Package e2e holds whole-mesh tests: a real embedded NATS server, real raft
// with its bolt store in a temp dir, and every tier talking over subjects.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/identity"
	"github.com/strata-fl/strata/mesh"
	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/regional"
	"github.com/strata-fl/strata/roles"
	"github.com/strata-fl/strata/task"
	"github.com/strata-fl/strata/topology"
)

func smallTopology(t *testing.T) *topology.Topology {
	t.Helper()
	top, err := topology.Parse([]byte(`
job: e2e
seed: 3
regions:
  - {id: a, clients: 60}
  - {id: b, clients: 60}
privacy:
  sampling_rate: 0.3
  budget: 1000
  min_regions: 2
  noise: {regional: 0.7, global: 0.7}
training: {rounds: 4}
task: {name: mnist, pretrain_epochs: 1, hidden: 32, public_examples: 2000, eval_examples: 500}
round: {timeout: 20s}
`))
	if err != nil {
		t.Fatal(err)
	}
	return top
}

func TestShortJobOverRealNATSAndRaft(t *testing.T) {
	top := smallTopology(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// Round 2's clients train only once the hostile input below is on the
	// wire, so it reaches region a while the round is open.
	injected := make(chan struct{})
	m, err := roles.Start(ctx, roles.UpConfig{
		Topology: top, DataDir: dir,
		WrapTrainer: func(tr task.Trainer) task.Trainer { return gateRound{tr, 2, injected} },
		Status:      t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	spy, err := m.Dialer().Connect("test-spy")
	if err != nil {
		t.Fatal(err)
	}
	defer spy.Close()

	// Invariant 1: whenever a partial is on the wire, its round's cost is
	// already in the committed ledger.
	var mu sync.Mutex
	var partialsSeen int
	var violations []uint64
	counts := map[string]int{}
	seenKey := map[string]bool{}
	psubj, _ := mesh.PartialWildcard(top.Job)
	if _, err := spy.Subscribe(psubj, func(msg *nats.Msg) {
		var p wire.Partial
		if err := wire.Decode(msg.Data, wire.TypePartial, &p); err != nil {
			return
		}
		var ok bool
		m.Node().Read(func(l *ledger.Ledger) {
			ok = p.Round >= 1 && p.Round <= uint64(len(l.Rounds)) && l.Rounds[p.Round-1].Status != ""
		})
		mu.Lock()
		defer mu.Unlock()
		key := fmt.Sprintf("%d/%s", p.Round, p.Region)
		if counts[key] != 0 || seenKey[key] {
			return // our own duplicate coming back
		}
		seenKey[key] = true
		counts[key] = p.Count
		partialsSeen++
		if !ok {
			violations = append(violations, p.Round)
		}
		// Deliver every partial twice on purpose: it must count once.
		spy.Publish(psubj, msg.Data)
	}); err != nil {
		t.Fatal(err)
	}

	// Hostile input in round 2: malformed, wrong dimension, NaN, duplicate.
	keys, err := identity.LoadClients(m.Secrets, "a")
	if err != nil {
		t.Fatal(err)
	}
	onFirstInvite(t, spy, top.Job, "a", 2, func(open wire.RoundOpen, victim string) {
		usubj, _ := mesh.UpdateSubject(top.Job, "a", victim)
		// Signed by the victim's own key: these test the checks after the
		// signature's.
		upd := func(vec []float32) []byte {
			u := wire.Update{Job: top.Job, Round: 2, Region: "a", Client: victim, ModelVersion: open.ModelVersion, Vec: wire.AppendFloat32s(nil, vec)}
			if len(vec) == open.Dim {
				d := wire.PayloadDigest(wire.EncodingF32, open.Dim, identity.Digest(u.Vec), nil)
				u.Sig = keys[victim].Sign(identity.UpdateMessage(top.Job, 2, open.ModelVersion, "a", victim, 0, d))
			}
			b, _ := wire.Encode(wire.TypeUpdate, &u)
			return b
		}
		nan := make([]float32, open.Dim)
		nan[7] = float32(math.NaN())
		valid := make([]float32, open.Dim)
		for _, b := range [][]byte{
			{byte(wire.TypeUpdate), wire.Version, 0xc1, 0xff}, // malformed
			upd(make([]float32, open.Dim-1)),                  // wrong dimension
			upd(nan),                                          // NaN
			upd(valid), upd(valid),                            // the second is a duplicate
		} {
			spy.Publish(usubj, b)
		}
		spy.Flush()
		close(injected)
	})
	spy.Flush()

	runErr := make(chan error, 1)
	go func() { runErr <- m.Run(ctx) }()
	select {
	case err := <-runErr:
		if err != nil {
			t.Fatalf("job failed: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("job did not finish in time")
	}
	select {
	case <-injected:
	default:
		t.Fatal("round 2 was never announced to region a's clients")
	}

	l, err := m.Ledger()
	if err != nil {
		t.Fatal(err)
	}
	if !l.Finished || l.CommittedRounds() != top.Train.Rounds {
		t.Fatalf("finished %v with %d committed rounds, want %d", l.Finished, l.CommittedRounds(), top.Train.Rounds)
	}
	var eps []float64
	for _, r := range l.Rounds {
		eps = append(eps, r.EpsilonAfter.Public)
	}
	for i := 1; i < len(eps); i++ {
		if !(eps[i] > eps[i-1]) {
			t.Fatalf("public ε not strictly increasing: %v", eps)
		}
	}
	mu.Lock()
	if partialsSeen < 2*top.Train.Rounds || len(violations) > 0 {
		t.Fatalf("saw %d partials; partials released before their round was committed: %v", partialsSeen, violations)
	}
	mu.Unlock()

	mu.Lock()
	for _, r := range l.Rounds {
		want := counts[fmt.Sprintf("%d/a", r.Round)] + counts[fmt.Sprintf("%d/b", r.Round)]
		if r.Participants != want {
			t.Errorf("round %d: %d participants recorded, the distinct partials carried %d (a duplicate counted?)", r.Round, r.Participants, want)
		}
	}
	mu.Unlock()

	st := m.Regions["a"].Runner().Stats()
	for _, reason := range []string{regional.ReasonMalformed, regional.ReasonWrongDim, regional.ReasonNonFinite, regional.ReasonDuplicate} {
		if st.Rejected[reason] < 1 {
			t.Errorf("region a rejected %v; want at least one %q", st.Rejected, reason)
		}
	}
	if l.Rounds[1].Status != "committed" {
		t.Fatalf("round 2 is %s, want committed despite the hostile updates", l.Rounds[1].Status)
	}

	// Invariant 7: close, reopen from disk, and find the same ledger.
	before, err := m.Node().Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	replayed, err := global.ReadLedger(dir + "/global")
	if err != nil {
		t.Fatal(err)
	}
	after, _ := replayed.Snapshot()
	if !bytes.Equal(before, after) {
		t.Fatal("ledger replayed from disk differs from the live one")
	}

	// A second run on the same data dir reports the finished job and never
	// lowers the spend.
	m3, err := roles.Start(ctx, roles.UpConfig{Topology: top, DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer m3.Close()
	if err := m3.Run(ctx); err != nil {
		t.Fatalf("second run: %v", err)
	}
	l3, _ := m3.Ledger()
	if l3.Spent(ledger.Public) < l.Spent(ledger.Public) || len(l3.Rounds) != len(l.Rounds) {
		t.Fatalf("second run: spent %v (was %v), %d rounds (was %d)", l3.Spent(ledger.Public), l.Spent(ledger.Public), len(l3.Rounds), len(l.Rounds))
	}
	if !slices.Equal(l3.Curve(ledger.Public), l.Curve(ledger.Public)) {
		t.Fatal("second run changed the RDP curve of a finished job")
	}
}
