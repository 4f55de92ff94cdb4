package regional

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/strata-fl/strata/identity"
	"github.com/strata-fl/strata/mesh"
	"github.com/strata-fl/strata/mesh/wire"
)

// testMesh is an embedded NATS server with a connection for the region
// under test and one playing the global tier and the clients.
type testMesh struct {
	region, global *nats.Conn
}

func startTestMesh(t *testing.T) testMesh {
	t.Helper()
	srv, err := mesh.StartServer(mesh.ServerConfig{StoreDir: t.TempDir(), Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	dial := mesh.Dialer{Server: srv}
	var m testMesh
	for _, c := range []**nats.Conn{&m.region, &m.global} {
		if *c, err = dial.Connect("test"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup((*c).Close)
	}
	return m
}

// running is a runner's Run in progress: ended is closed when it
// returns, err is then what it returned.
type running struct {
	ended chan struct{}
	err   error
}

// wait returns Run's result once it has returned; any number of times.
func (r *running) wait() error {
	<-r.ended
	return r.err
}

// startRunner runs a runner until the test ends (it is cancelled and
// waited for at cleanup), and returns it once it is subscribed.
func startRunner(t *testing.T, cfg Config) (*Runner, *running) {
	t.Helper()
	r, err := NewRunner(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	run := &running{ended: make(chan struct{})}
	go func() {
		run.err = r.Run(ctx)
		close(run.ended)
	}()
	t.Cleanup(func() {
		cancel()
		run.wait()
	})
	select {
	case <-r.Ready():
	case <-run.ended:
		t.Fatalf("runner ended before it was ready: %v", run.err)
	}
	return r, run
}

// waitFor polls cond until it holds or a generous deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// subject takes a subject helper's result; the tests' tokens are valid.
func subject(s string, err error) string {
	if err != nil {
		panic(err)
	}
	return s
}

// TestRunnerAcksBeforeASlowRegistry: the global tier waits only seconds
// for a region's acknowledgement and leaves a silent region out of a round
// whose cost it already committed. A region whose registry requests go
// unanswered must still acknowledge at once, hold the signed updates that
// arrive meanwhile, and verify and count them once the registry comes.
// The order is what is asserted: the ack arrives while the only registry
// request is unanswered; the updates are held (not rejected, not
// accepted); then the registry is answered and the partial counts them.
func TestRunnerAcksBeforeASlowRegistry(t *testing.T) {
	m := startTestMesh(t)
	regionKey, _ := identity.New(identity.KindRegion, "eu")
	runner, _ := startRunner(t, Config{Job: "j", Region: "eu", Conn: m.region, Key: regionKey})

	requests := make(chan *nats.Msg, 16) // answered only when the test says
	if _, err := m.global.Subscribe(subject(mesh.RegistrySubject("j", "eu")), func(msg *nats.Msg) { requests <- msg }); err != nil {
		t.Fatal(err)
	}
	partials, err := m.global.SubscribeSync(subject(mesh.PartialSubject("j", "eu")))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.global.Flush(); err != nil {
		t.Fatal(err)
	}

	open := openRound()
	open.Signed, open.Registry = true, 5
	open.DeadlineUnixMs = time.Now().Add(time.Hour).UnixMilli() // the round ends when complete
	if _, err := m.global.Request(subject(mesh.RoundSubject("j", "eu")), encodeOpen(t, open), 30*time.Second); err != nil {
		t.Fatalf("round.open not acknowledged while the registry is slow: %v", err)
	}
	var req *nats.Msg
	select {
	case req = <-requests:
	case <-time.After(30 * time.Second):
		t.Fatal("the region never asked for the registry")
	}

	k1, _ := identity.New(identity.KindClient, "c1")
	k2, _ := identity.New(identity.KindClient, "c2")
	for _, u := range []struct {
		client string
		b      []byte
	}{{"c1", signedUpdate(t, k1, "c1", 2, 1, nil)}, {"c2", signedUpdate(t, k2, "c2", 2, 1, nil)}} {
		if err := m.global.Publish(subject(mesh.UpdateSubject("j", "eu", u.client)), u.b); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the updates to be held for the registry", func() bool { return runner.Stats().RegistryWaiting == 2 })
	if st := runner.Stats(); st.Accepted != 0 || len(st.Rejected) != 0 || st.Partials != 0 {
		t.Fatalf("before the registry: %+v, want nothing decided", st)
	}

	reg, err := identity.EncodeRegistry(identity.NewRegistry(5, []identity.Entry{
		{ID: "c1", Kind: identity.KindClient, Region: "eu", Public: k1.Public(), Status: identity.StatusActive},
		{ID: "c2", Kind: identity.KindClient, Region: "eu", Public: k2.Public(), Status: identity.StatusActive},
	}))
	if err != nil {
		t.Fatal(err)
	}
	if err := req.Respond(reg); err != nil {
		t.Fatal(err)
	}
	msg, err := partials.NextMsg(30 * time.Second)
	if err != nil {
		t.Fatalf("no partial once the registry arrived: %v", err)
	}
	var p wire.Partial
	if err := wire.Decode(msg.Data, wire.TypePartial, &p); err != nil {
		t.Fatal(err)
	}
	if p.Count != 2 || len(p.Rejected) != 0 {
		t.Fatalf("partial counts %d, rejected %v; want both held updates verified and counted", p.Count, p.Rejected)
	}
	if err := identity.Verify(regionKey.Public(), identity.PartialMessage(p.Job, p.Round, p.Region, p.Count, p.BitSum, identity.Digest(p.Sum)), p.Sig); err != nil {
		t.Fatalf("partial signature: %v", err)
	}
	if st := runner.Stats(); st.Accepted != 2 || st.RegistryWaiting != 0 {
		t.Fatalf("after the registry: %+v", st)
	}
}

// TestRunnerWithoutRegistryRejectsByName: when no registry ever answers,
// the round's signed updates are rejected as registry_unavailable (never
// accepted unverified), and the partial the round still publishes — here
// at the job's end, announced once the rejection is counted — says so.
func TestRunnerWithoutRegistryRejectsByName(t *testing.T) {
	m := startTestMesh(t)
	runner, run := startRunner(t, Config{Job: "j", Region: "eu", Conn: m.region, RegistryAttempts: 1})
	partials, err := m.global.SubscribeSync(subject(mesh.PartialSubject("j", "eu")))
	if err != nil {
		t.Fatal(err)
	}
	m.global.Flush()
	open := openRound()
	open.Signed, open.Registry = true, 5
	open.DeadlineUnixMs = time.Now().Add(time.Hour).UnixMilli()
	if _, err := m.global.Request(subject(mesh.RoundSubject("j", "eu")), encodeOpen(t, open), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	k1, _ := identity.New(identity.KindClient, "c1")
	m.global.Publish(subject(mesh.UpdateSubject("j", "eu", "c1")), signedUpdate(t, k1, "c1", 2, 1, nil))
	waitFor(t, "the update to be rejected", func() bool { return runner.Stats().Rejected[ReasonNoRegistry] == 1 })
	if err := m.global.Publish(subject(mesh.DoneSubject("j")), nil); err != nil {
		t.Fatal(err)
	}
	msg, err := partials.NextMsg(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var p wire.Partial
	if err := wire.Decode(msg.Data, wire.TypePartial, &p); err != nil {
		t.Fatal(err)
	}
	if p.Count != 0 || p.Rejected[ReasonNoRegistry] != 1 {
		t.Fatalf("partial counts %d, rejected %v; want the update rejected as %q", p.Count, p.Rejected, ReasonNoRegistry)
	}
	if err := run.wait(); err != nil {
		t.Fatalf("Run after the job's end: %v", err)
	}
	if st := runner.Stats(); st.RegistryFailures != 1 || st.Accepted != 0 {
		t.Fatalf("stats %+v, want the one failed attempt and nothing accepted", st)
	}
}

// TestRunnerJoinsItsGoroutines: whichever way Run ends — its context
// cancelled, or the job's end announced — it returns only once every
// goroutine it started has ended, here a registry request that would
// otherwise wait an hour, and it leaves no subscription behind.
func TestRunnerJoinsItsGoroutines(t *testing.T) {
	for _, end := range []string{"cancel", "done"} {
		t.Run(end, func(t *testing.T) {
			m := startTestMesh(t)
			requests := make(chan *nats.Msg, 4) // never answered
			if _, err := m.global.Subscribe(subject(mesh.RegistrySubject("j", "eu")), func(msg *nats.Msg) { requests <- msg }); err != nil {
				t.Fatal(err)
			}
			// A connection starts one goroutine for its replies at its first
			// request and keeps it: start both before counting.
			if _, err := m.global.Subscribe("warm", func(msg *nats.Msg) { msg.Respond(nil) }); err != nil {
				t.Fatal(err)
			}
			if err := m.global.Flush(); err != nil {
				t.Fatal(err)
			}
			for _, nc := range []*nats.Conn{m.region, m.global} {
				if _, err := nc.Request("warm", nil, 30*time.Second); err != nil {
					t.Fatal(err)
				}
			}
			before := runtime.NumGoroutine()
			r, err := NewRunner(Config{Job: "j", Region: "eu", Conn: m.region, RegistryTimeout: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- r.Run(ctx) }()
			<-r.Ready()
			open := openRound()
			open.Signed, open.Registry = true, 5
			open.DeadlineUnixMs = time.Now().Add(time.Hour).UnixMilli()
			if _, err := m.global.Request(subject(mesh.RoundSubject("j", "eu")), encodeOpen(t, open), 30*time.Second); err != nil {
				t.Fatal(err)
			}
			<-requests // the request is in flight in a goroutine of the runner
			waitFor(t, "the runner's registry request goroutine to show", func() bool {
				return strings.Contains(strings.Join(runnerGoroutines(), "\n"), "fetchRegistry")
			})
			if end == "cancel" {
				cancel()
			} else if err := m.global.Publish(subject(mesh.DoneSubject("j")), nil); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("Run has not returned (its registry request waits an hour):\n%s", strings.Join(runnerGoroutines(), "\n\n"))
			}
			// Run has returned: the request it started has ended (its
			// goroutine at most returns from its deferred Done) ...
			for _, g := range runnerGoroutines() {
				if strings.Contains(g, "fetchRegistry") {
					t.Fatalf("Run returned while its registry request still runs:\n%s", g)
				}
			}
			// ... and soon nothing of it stays, subscriptions included.
			deadline := time.Now().Add(30 * time.Second)
			for {
				left := runnerGoroutines()
				if len(left) == 0 && runtime.NumGoroutine() <= before {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("after Run returned: %d goroutines (were %d before Run); the runner's:\n%s", runtime.NumGoroutine(), before, strings.Join(left, "\n\n"))
				}
				time.Sleep(5 * time.Millisecond)
			}
			_, err = m.global.Request(subject(mesh.PingSubject("j", "eu")), nil, 5*time.Second)
			if !errors.Is(err, nats.ErrNoResponders) {
				t.Fatalf("ping after Run returned: %v, want no responders (every subscription gone)", err)
			}
		})
	}
}

// runnerGoroutines returns the stacks of live goroutines running the
// runner's code (the test's own goroutines run none of it).
func runnerGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "regional.(*Runner)") || strings.Contains(g, "regional.(*executor)") {
			out = append(out, g)
		}
	}
	return out
}

// TestRunnerPingsAnsweredByTheLoop: the global tier opens a round only
// when enough regions answer its ping. The answer comes from the runner's
// loop, so a region whose loop is stuck (here in its OnRoundOpen
// callback) does not answer, and answers again once the loop runs.
func TestRunnerPingsAnsweredByTheLoop(t *testing.T) {
	m := startTestMesh(t)
	entered, release := make(chan struct{}), make(chan struct{})
	runner, _ := startRunner(t, Config{Job: "j", Region: "eu", Conn: m.region,
		OnRoundOpen: func(wire.RoundOpen) {
			close(entered)
			<-release
		}})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock) // runs before the runner's cleanup, which waits for Run
	ping := subject(mesh.PingSubject("j", "eu"))
	if _, err := m.global.Request(ping, nil, 30*time.Second); err != nil {
		t.Fatalf("a running loop does not answer pings: %v", err)
	}
	open := openRound()
	open.DeadlineUnixMs = time.Now().Add(time.Hour).UnixMilli()
	if err := m.global.Publish(subject(mesh.RoundSubject("j", "eu")), encodeOpen(t, open)); err != nil {
		t.Fatal(err)
	}
	<-entered // the loop is blocked now, until release
	// No answer can come while the loop is blocked, however long one
	// waits: the timeout only bounds the test.
	if _, err := m.global.Request(ping, nil, 300*time.Millisecond); !errors.Is(err, nats.ErrTimeout) {
		t.Fatalf("ping to a blocked loop: %v, want no answer (timeout)", err)
	}
	unblock()
	if _, err := m.global.Request(ping, nil, 30*time.Second); err != nil {
		t.Fatalf("ping once the loop runs again: %v", err)
	}
	if st := runner.Stats(); st.PingDrops != 0 {
		t.Fatalf("ping drops %d", st.PingDrops)
	}
}
