package global

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/mesh"
	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/topology"
)

// resumeNode is one global node of the test: its raft node and the
// service that coordinates whenever it leads.
type resumeNode struct {
	id     string
	node   *Node
	cancel context.CancelFunc
	done   chan error
}

// TestLeaderKilledMidRoundResumesIt: three raft nodes (real raft, bolt
// stores) on one embedded NATS server with JetStream. Region a delivers
// its partial of round 1, the leader is killed, region b delivers its
// own while no leader runs; the next leader finishes round 1 from the
// partial log and commits it with both regions. The round's cost is on
// every ledger exactly once — the restarted node's too.
func TestLeaderKilledMidRoundResumesIt(t *testing.T) {
	t.Run("partials", func(t *testing.T) { leaderKilledMidRound(t, false) })
	t.Run("stored", func(t *testing.T) { leaderKilledMidRound(t, true) })
}

// blockFirst is an evaluator that, the first time any node evaluates a
// candidate (θ not all zero), says so on evaluating and blocks until its
// context ends: the leader is killed after storing its candidate.
type blockFirst struct {
	once       *sync.Once
	evaluating chan struct{}
}

func (b blockFirst) Evaluate(ctx context.Context, theta []float64) (Evaluation, error) {
	if !slices.ContainsFunc(theta, func(x float64) bool { return x != 0 }) {
		return Evaluation{}, nil
	}
	blocked := false
	b.once.Do(func() { blocked = true; close(b.evaluating) })
	if blocked {
		<-ctx.Done()
		return Evaluation{}, ctx.Err()
	}
	return Evaluation{}, nil
}

// leaderKilledMidRound: with afterStore false region b reports only once
// the leader is dead; with afterStore true both report and the leader is
// killed after storing its noisy candidate (while evaluating it): the
// next leader commits that very candidate, the one blob stored for v1.
func leaderKilledMidRound(t *testing.T, afterStore bool) {
	top, err := topology.Parse([]byte(`job: t
regions:
  - {id: a, clients: 1}
  - {id: b, clients: 1}
privacy: {sampling_rate: 1, budget: 50, min_regions: 2, noise: {regional: 0.5, global: 0.5}, clip_norm: 1}
training: {rounds: 1, server_lr: 1}
round: {timeout: 30s}
security: {unsigned: true}
`))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	nc, d := testConn(t)

	// The regions, played by the test: they answer pings, acknowledge
	// round 1 and report what they are told to.
	opens := make(chan wire.RoundOpen, 8)
	for _, r := range top.Regions {
		ping, _ := mesh.PingSubject(top.Job, r.ID)
		if _, err := nc.Subscribe(ping, func(m *nats.Msg) { m.Respond(nil) }); err != nil {
			t.Fatal(err)
		}
		subj, _ := mesh.RoundSubject(top.Job, r.ID)
		if _, err := nc.Subscribe(subj, func(m *nats.Msg) {
			var o wire.RoundOpen
			if err := wire.Decode(m.Data, wire.TypeRoundOpen, &o); err == nil {
				opens <- o
			}
			m.Respond(nil)
		}); err != nil {
			t.Fatal(err)
		}
	}
	nc.Flush()
	report := func(region string, round uint64) {
		t.Helper()
		sum := wire.AppendFloat64s(nil, []float64{0.5, 0.25})
		b, err := wire.Encode(wire.TypePartial, &wire.Partial{Job: top.Job, Round: round, Region: region, Count: 1, Sum: sum})
		if err != nil {
			t.Fatal(err)
		}
		subj, _ := mesh.PartialSubject(top.Job, region)
		if err := nc.Publish(subj, b); err != nil {
			t.Fatal(err)
		}
		nc.Flush()
	}

	var peers []Peer
	for i := range 3 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		peers = append(peers, Peer{ID: fmt.Sprintf("g%d", i+1), Addr: l.Addr().String()})
		l.Close()
	}
	dirs := map[string]string{}
	for _, p := range peers {
		dirs[p.ID] = t.TempDir()
	}
	var mu sync.Mutex
	reports := map[string][]RoundReport{}
	block := blockFirst{once: &sync.Once{}, evaluating: make(chan struct{})}
	start := func(p Peer) *resumeNode {
		t.Helper()
		n, err := OpenNode(NodeConfig{ID: p.ID, DataDir: dirs[p.ID], Bind: p.Addr, Bootstrap: true, Peers: peers})
		if err != nil {
			t.Fatal(err)
		}
		conn, err := d.Connect("global-" + p.ID)
		if err != nil {
			t.Fatal(err)
		}
		models, err := mesh.OpenModelStore(ctx, conn, top.Job, 1)
		if err != nil {
			t.Fatal(err)
		}
		plog, err := mesh.OpenPartialLog(ctx, conn, top.Job, 1)
		if err != nil {
			t.Fatal(err)
		}
		sctx, scancel := context.WithCancel(ctx)
		rn := &resumeNode{id: p.ID, node: n, done: make(chan error, 1)}
		rn.cancel = func() { scancel(); conn.Close() }
		go func() {
			rn.done <- RunService(sctx, ServiceConfig{Node: n, Conn: conn, Job: top.Job, NewCoordinator: func() (*Coordinator, error) {
				var ev Evaluator = nopEvaluator{}
				if afterStore {
					ev = block
				}
				return NewCoordinator(CoordinatorConfig{Topology: top, Node: n, Conn: conn, Models: models, Evaluator: ev,
					Initial: []float64{0, 0}, ConfigHash: "h", PartialLog: plog, PartialGrace: time.Second,
					Progress: func(r RoundReport) { mu.Lock(); reports[p.ID] = append(reports[p.ID], r); mu.Unlock() }})
			}})
		}()
		return rn
	}
	kill := func(rn *resumeNode) {
		rn.cancel()
		<-rn.done
		rn.node.Close()
	}
	nodes := map[string]*resumeNode{}
	for _, p := range peers {
		nodes[p.ID] = start(p)
	}
	defer func() {
		for _, rn := range nodes {
			if rn != nil {
				kill(rn)
			}
		}
	}()

	var open wire.RoundOpen
	select {
	case open = <-opens:
	case <-ctx.Done():
		t.Fatal("no round was opened")
	}
	if open.Round != 1 {
		t.Fatalf("round %d opened, want 1", open.Round)
	}
	<-opens // both regions were asked
	var leader *resumeNode
	for _, rn := range nodes {
		if rn.node.IsLeader() {
			leader = rn
		}
	}
	if leader == nil {
		t.Fatal("a round opened without a leader")
	}
	watch, err := d.Connect("watch")
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close()
	wlog, err := mesh.OpenPartialLog(ctx, watch, top.Job, 1)
	if err != nil {
		t.Fatal(err)
	}
	wmodels, err := mesh.OpenModelStore(ctx, watch, top.Job, 0)
	if err != nil {
		t.Fatal(err)
	}
	report("a", 1)
	var storedHash string
	if afterStore {
		report("b", 1)
		select {
		case <-block.evaluating:
		case <-ctx.Done():
			t.Fatal("the leader never evaluated a candidate")
		}
		blob, err := wmodels.Get(ctx, "model", 1, "")
		if err != nil {
			t.Fatalf("the candidate v1 is not stored: %v", err)
		}
		storedHash = mesh.Hash(blob)
	} else {
		// a's partial is delivered: the log (which the new leader reads) has it.
		waitFor(t, ctx, "a's partial in the log", func() bool { ps, _, err := wlog.Load(ctx); return err == nil && len(ps) == 1 })
	}

	kill(leader)
	nodes[leader.id] = nil
	killed := leader.id
	if !afterStore {
		report("b", 1)
	}

	// The next leader commits round 1 with both regions.
	var survivor *Node
	for id, rn := range nodes {
		if rn != nil {
			survivor = rn.node
			_ = id
		}
	}
	waitFor(t, ctx, "round 1 committed", func() bool {
		var st string
		survivor.Read(func(l *ledger.Ledger) {
			if len(l.Rounds) > 0 {
				st = l.Rounds[0].Status
			}
		})
		return st == "committed"
	})
	mu.Lock()
	var rep *RoundReport
	for id, rs := range reports {
		for i := range rs {
			if rs[i].Round == 1 && id != killed {
				rep = &rs[i]
			}
		}
	}
	mu.Unlock()
	if rep == nil || rep.Regions != 2 || rep.Aborted != "" {
		t.Fatalf("the new leader's report of round 1: %+v, want both regions merged", rep)
	}

	// The killed node comes back and catches up; every ledger holds round
	// 1 committed with both regions, charged once.
	for _, p := range peers {
		if p.ID == killed {
			nodes[p.ID] = start(p)
		}
	}
	for _, p := range peers {
		n := nodes[p.ID].node
		waitFor(t, ctx, p.ID+" has round 1", func() bool {
			var ok bool
			n.Read(func(l *ledger.Ledger) { ok = len(l.Rounds) == 1 && l.Rounds[0].Status == "committed" })
			return ok
		})
		n.Read(func(l *ledger.Ledger) {
			r := l.Rounds[0]
			if !slices.Equal(r.Regions, []string{"a", "b"}) {
				t.Errorf("%s: round 1 merged %v, want [a b]", p.ID, r.Regions)
			}
			// Spend once: the cumulative curve is the round's one step.
			step := l.StepCurves(&r).Public
			if cum := l.Curve(ledger.Public); !slices.Equal(cum, step) {
				t.Errorf("%s: cumulative public curve %v, the one round's step %v: charged other than once", p.ID, cum, step)
			}
			if len(l.Models) != 1 || l.Models[0].Round != 1 {
				t.Errorf("%s: models %+v, want v1 of round 1", p.ID, l.Models)
			} else if afterStore && l.Models[0].Hash != storedHash {
				t.Errorf("%s: v1 committed with hash %s, the dead leader stored %s: the noise was drawn again", p.ID, l.Models[0].Hash, storedHash)
			}
		})
	}
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("%s: %v", what, errors.Join(ctx.Err()))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// FuzzDecodeMerged: a record read back from the partial log never panics
// the decoder, and one it accepts names a round, a version, a hash and
// its partials in region order.
func FuzzDecodeMerged(f *testing.F) {
	f.Add([]byte(`{"round":3,"version":2,"hash":"ab","partials":[{"region":"a","count":2,"digest":"00"},{"region":"b","count":0}],"bit_sum":1.5}`))
	f.Add([]byte(`{"round":3,"version":2,"hash":"ab","partials":[{"region":"b"},{"region":"a"}]}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`[`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMerged(b)
		if err != nil {
			return
		}
		if m.Round == 0 || m.Version == 0 || m.Hash == "" {
			t.Fatalf("accepted %+v", m)
		}
		for i := 1; i < len(m.Partials); i++ {
			if m.Partials[i-1].Region >= m.Partials[i].Region {
				t.Fatalf("accepted partials out of order: %+v", m.Partials)
			}
		}
	})
}
