package regional

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/strata-fl/strata/identity"
	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/secagg"
)

var t0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func encodeOpen(t testing.TB, o wire.RoundOpen) []byte {
	t.Helper()
	b, err := wire.Encode(wire.TypeRoundOpen, &o)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newLifecycle(t testing.TB, cfg LifecycleConfig) *Lifecycle {
	t.Helper()
	l, err := NewLifecycle(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func step(t testing.TB, l *Lifecycle, ev Event) []Action {
	t.Helper()
	acts, err := l.Step(ev)
	if err != nil {
		t.Fatal(err)
	}
	return acts
}

func actionsOf[A Action](acts []Action) []A {
	var out []A
	for _, a := range acts {
		if x, ok := a.(A); ok {
			out = append(out, x)
		}
	}
	return out
}

// TestLifecycleSecAggSession runs a whole secure-aggregation session
// through the core with real secagg clients: every stage closes as soon as
// every member answered, the messages the core sends reach the clients
// they name, and the round publishes one partial holding every member.
func TestLifecycleSecAggSession(t *testing.T) {
	const n = 6
	open := secAggOpen(t, n)
	open.DeadlineUnixMs = t0.Add(time.Minute).UnixMilli()
	l := newLifecycle(t, LifecycleConfig{Job: "j", Region: "eu", Noise: zeroNoise{}})
	acts := step(t, l, OpenArrived{Now: t0, Data: encodeOpen(t, open), Reply: "r"})
	if len(actionsOf[AckOpen](acts)) != 1 {
		t.Fatalf("open: %v, want one AckOpen", acts)
	}
	setup, err := secAggSetup(&open)
	if err != nil {
		t.Fatal(err)
	}
	clients := map[string]*secagg.Client{}
	for _, c := range setup.Members {
		id, _ := setup.ID(c)
		if clients[c], err = secagg.NewClient(secagg.ClientConfig{ID: id, Session: setup.Session, Params: setup.Params}); err != nil {
			t.Fatal(err)
		}
	}
	send := func(c string, m secagg.Message) []Action {
		return step(t, l, SecAggArrived{Now: t0, Subject: subjPrefix + c, Data: envelope(c, m)})
	}
	var out []Action
	for _, c := range setup.Members {
		m, err := clients[c].AdvertiseKeys()
		if err != nil {
			t.Fatal(err)
		}
		out = send(c, m)
	}
	x, err := setup.Encode(make([]float64, open.Dim), 1)
	if err != nil {
		t.Fatal(err)
	}
	for stage := 1; stage <= 3; stage++ {
		msgs := actionsOf[SendSecAgg](out)
		if len(msgs) != n {
			t.Fatalf("stage %d: the core sent %d messages, want one per member (%d)", stage, len(msgs), n)
		}
		out = nil
		for _, a := range msgs {
			if a.Round != open.Round {
				t.Fatalf("stage %d: message of round %d", stage, a.Round)
			}
			body, err := secagg.Decode(a.Msg.Body)
			if err != nil {
				t.Fatal(err)
			}
			c := clients[a.Msg.Client]
			var m secagg.Message
			switch body := body.(type) {
			case *secagg.NeighbourKeys:
				m, err = c.ShareKeys(body)
			case *secagg.ShareBundle:
				m, err = c.MaskInput(body, x)
			case *secagg.UnmaskRequest:
				m, err = c.Unmask(body)
			default:
				t.Fatalf("stage %d: unexpected %T", stage, body)
			}
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, send(a.Msg.Client, m)...)
		}
	}
	parts := actionsOf[PublishPartial](out)
	if len(parts) != 1 || parts[0].Partial.Count != n {
		t.Fatalf("after the last stage: %d partials (%v), want one counting %d", len(parts), out, n)
	}
	if parts[0].Partial.BitSum != n*0.5 {
		t.Fatalf("bit sum %v, want %v", parts[0].Partial.BitSum, n*0.5)
	}
	if st := l.Stats(); st.SecAggSessions != 1 || st.SecAggMessages != 4*n || len(st.SecAggFailed) != 0 {
		t.Fatalf("stats %+v", st)
	}
	if acts := step(t, l, Tick{Now: t0.Add(time.Hour)}); len(actionsOf[PublishPartial](acts)) != 0 {
		t.Fatal("a second partial after the deadline")
	}
}

// TestLifecycleHoldBound: while its registry is fetched, a signed round
// holds at most HoldMessages messages; beyond, each is rejected by name
// (a stream's client told so), and those held are verified once the
// registry arrives.
func TestLifecycleHoldBound(t *testing.T) {
	k, _ := identity.New(identity.KindClient, "c1")
	l := newLifecycle(t, LifecycleConfig{Job: "j", Region: "eu", Noise: zeroNoise{}, HoldMessages: 2})
	o := openRound()
	o.Signed, o.Registry, o.DeadlineUnixMs = true, 4, t0.Add(time.Minute).UnixMilli()
	step(t, l, OpenArrived{Now: t0, Data: encodeOpen(t, o), Reply: "r"})
	for _, b := range [][]byte{signedUpdate(t, k, "c1", 2, 1, nil), signedUpdate(t, k, "c1", 2, 1, nil)} {
		step(t, l, UpdateArrived{Now: t0, Data: b})
	}
	so, _ := wire.Encode(wire.TypeStreamOpen, &wire.StreamOpen{Job: "j", Round: 2, Region: "eu", Client: "c2", ModelVersion: 1, Dim: 3, Total: 3})
	acts := step(t, l, UpdateArrived{Now: t0, Data: so, Reply: "s"})
	if g := actionsOf[Grant](acts); len(g) != 1 || g[0].Grant.Reason != ReasonHoldFull || g[0].To != "s" {
		t.Fatalf("third message: %v, want a refusal %q", acts, ReasonHoldFull)
	}
	if st := l.Stats(); st.RegistryWaiting != 2 || st.Rejected[ReasonHoldFull] != 1 {
		t.Fatalf("stats %+v", st)
	}
	reg, _ := identity.EncodeRegistry(identity.NewRegistry(4, []identity.Entry{{ID: "c1", Kind: identity.KindClient, Region: "eu", Public: k.Public(), Status: identity.StatusActive}}))
	step(t, l, RegistryArrived{Now: t0, Want: 4, Data: reg})
	if st := l.Stats(); st.Accepted != 1 || st.Rejected[ReasonDuplicate] != 1 || st.RegistryWaiting != 0 {
		t.Fatalf("after the registry: %+v, want the first accepted and its copy a duplicate", st)
	}
}

// TestLifecycleInvariants steps the core through random event sequences
// (fixed seeds) and checks after every step what must hold whatever
// happens: see checkStep.
func TestLifecycleInvariants(t *testing.T) {
	for seed := range uint64(200) {
		src := rand.New(rand.NewPCG(seed, 1))
		b := make([]byte, 300)
		for i := range b {
			b[i] = byte(src.UintN(256))
		}
		runRandom(t, b)
	}
}

// FuzzLifecycle is TestLifecycleInvariants under the fuzzer: the bytes
// choose the events.
func FuzzLifecycle(f *testing.F) {
	f.Add([]byte{0, 1, 1, 2, 3, 4, 5, 0, 6, 7})
	f.Add([]byte{0, 0, 0, 8, 8, 8, 1, 1, 3, 3, 3})
	f.Fuzz(func(t *testing.T, b []byte) { runRandom(t, b) })
}

// runRandom turns bytes into events for one lifecycle and checks the
// invariants after each.
func runRandom(t *testing.T, b []byte) {
	keys := map[string]*identity.Key{}
	for _, c := range []string{"c1", "c2", "c3"} {
		keys[c], _ = identity.New(identity.KindClient, c)
	}
	var es []identity.Entry
	for c, k := range keys {
		es = append(es, identity.Entry{ID: c, Kind: identity.KindClient, Region: "eu", Public: k.Public(), Status: identity.StatusActive})
	}
	noise := &countingNoise{}
	l := newLifecycle(t, LifecycleConfig{Job: "j", Region: "eu", Noise: noise, StreamSlots: 1, HoldMessages: 3})
	inv := invariants{published: map[uint64]int{}}
	now := t0
	round := uint64(1)
	next := func() byte {
		if len(b) == 0 {
			return 0
		}
		c := b[0]
		b = b[1:]
		return c
	}
	for len(b) > 0 {
		var ev Event
		op, arg := next(), next()
		client := fmt.Sprint("c", 1+arg%3)
		switch op % 9 {
		case 0:
			if arg%4 == 0 {
				round++
			}
			o := wire.RoundOpen{Job: "j", Round: round, Region: "eu", ModelVersion: 1, Dim: 3, ClipNorm: 1,
				Sampled: []string{"c1", "c2", "c3"}[:arg%4], Signed: arg&16 != 0, Registry: uint64(arg >> 5), RegionalNoise: 1,
				DeadlineUnixMs: now.Add(time.Duration(arg%8) * time.Second).UnixMilli()}
			ev = OpenArrived{Now: now, Data: encodeOpen(t, o), Reply: "open"}
		case 1, 2:
			u := wire.Update{Job: "j", Round: round - uint64(arg>>7), Region: "eu", Client: client, ModelVersion: 1,
				Vec: wire.AppendFloat32s(nil, []float32{0.6, 0, 0.8})}
			d := wire.PayloadDigest(wire.EncodingF32, 3, identity.Digest(u.Vec), nil)
			u.Sig = keys[client].Sign(identity.UpdateMessage("j", u.Round, 1, "eu", client, 0, d))
			data, _ := wire.Encode(wire.TypeUpdate, &u)
			ev = UpdateArrived{Now: now, Data: data}
		case 3:
			data := wire.AppendFloat32s(nil, []float32{0.6, 0, 0.8})
			o := wire.StreamOpen{Job: "j", Round: round, Region: "eu", Client: client, ModelVersion: 1, Dim: 3, Total: 3, Encoding: wire.EncodingF32}
			d := wire.PayloadDigest(wire.EncodingF32, 3, identity.Digest(data), nil)
			o.Digest, o.Sig = d[:], keys[client].Sign(identity.UpdateMessage("j", round, 1, "eu", client, 0, d))
			so, _ := wire.Encode(wire.TypeStreamOpen, &o)
			ev = UpdateArrived{Now: now, Data: so, Reply: Reply("s-" + client)}
		case 4:
			cs := chunksOf(client, []float32{0.6, 0, 0.8}, 2)
			c := cs[int(arg>>4)%len(cs)]
			c.h.Round = round - uint64(arg>>7)
			data, _ := wire.AppendChunk(nil, &c.h, c.data)
			ev = UpdateArrived{Now: now, Data: data, Reply: Reply("s-" + client)}
		case 5:
			if !inv.fetching {
				continue
			}
			if arg%3 == 0 {
				ev = RegistryArrived{Now: now, Want: inv.want, Err: errors.New("timeout")}
			} else {
				data, _ := identity.EncodeRegistry(identity.NewRegistry(inv.want+uint64(arg%2), es))
				ev = RegistryArrived{Now: now, Want: inv.want, Data: data}
			}
		case 6:
			now = now.Add(time.Duration(arg) * 100 * time.Millisecond)
			ev = Tick{Now: now}
		case 7:
			ev = PingArrived{Reply: "p"}
		case 8:
			ev = UpdateArrived{Now: now, Data: []byte{arg, op}}
		}
		if arg == 255 && op == 255 {
			ev = JobDone{Now: now}
		}
		acts, err := l.Step(ev)
		if err != nil {
			t.Fatal(err)
		}
		inv.check(t, l, ev, acts)
	}
	total := 0
	for _, n := range inv.published {
		total += n
	}
	if noise.calls != total {
		t.Fatalf("noise drawn %d times for %d partials, want once each", noise.calls, total)
	}
}

// countingNoise adds nothing and counts the draws.
type countingNoise struct{ calls int }

func (n *countingNoise) AddTo64([]float64, float64) error { n.calls++; return nil }
func (n *countingNoise) AddTo64On(dst []float64, sigma, _ float64) error {
	return n.AddTo64(dst, sigma)
}

// invariants tracks what a lifecycle did across steps.
type invariants struct {
	published map[uint64]int
	fetching  bool
	want      uint64
	stopped   bool
}

// check holds after every step: a round publishes at most once; a ping is
// answered at once; a round.open the core takes is acknowledged in the
// same step, before any registry request; at most one registry request is
// in flight; what is held stays within its bound; nothing happens after
// the stop.
func (inv *invariants) check(t *testing.T, l *Lifecycle, ev Event, acts []Action) {
	t.Helper()
	if inv.stopped && len(acts) > 0 {
		t.Fatalf("%T after stop: %v", ev, acts)
	}
	if _, ok := ev.(RegistryArrived); ok {
		inv.fetching = false
	}
	acked, fetchedAt := -1, -1
	for i, a := range acts {
		switch a := a.(type) {
		case PublishPartial:
			if inv.published[a.Partial.Round]++; inv.published[a.Partial.Round] > 1 {
				t.Fatalf("round %d published twice", a.Partial.Round)
			}
		case FetchRegistry:
			if inv.fetching {
				t.Fatalf("a second registry request while one is in flight")
			}
			inv.fetching, inv.want, fetchedAt = true, a.Want, i
		case AckOpen:
			acked = i
		case Stop:
			inv.stopped = true
		}
	}
	switch ev.(type) {
	case OpenArrived:
		if len(actionsOf[RoundOpened](acts)) > 0 && acked < 0 {
			t.Fatalf("round opened without an ack: %v", acts)
		}
		if fetchedAt >= 0 && fetchedAt < acked {
			t.Fatalf("registry requested before the ack: %v", acts)
		}
	case PingArrived:
		if !inv.stopped && len(actionsOf[Pong](acts)) != 1 {
			t.Fatalf("ping: %v, want one pong", acts)
		}
	}
	if st := l.Stats(); st.RegistryWaiting > 3 {
		t.Fatalf("holds %d messages over its bound 3", st.RegistryWaiting)
	}
}
