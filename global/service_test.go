package global

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/mesh"
	"github.com/strata-fl/strata/privacy"
)

func startedJob(t *testing.T, n *Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.applyAll(ctx, &ledger.StartJob{Job: ledger.Job{Name: "t", Delta: 1e-5, Budget: 1, Orders: privacy.Orders()}}); err != nil {
		t.Fatal(err)
	}
}

// TestControlQueueNeverBlocksTheCallback: the NATS callback only queues;
// with the control goroutine not yet serving, a full queue answers busy at
// once (and counts the drop) rather than block, and the queued requests
// are answered once it serves.
func TestControlQueueNeverBlocksTheCallback(t *testing.T) {
	n := testNode(t)
	startedJob(t, n)
	nc, d := testConn(t)
	q := newControlQueue(n, slog.New(slog.DiscardHandler))
	if _, err := nc.Subscribe(ModelSubject, q.handler(controlRollback)); err != nil {
		t.Fatal(err)
	}
	nc.Flush()
	cc, err := d.Connect("client")
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const extra = 3
	replies := make(chan error, controlQueueSize+extra)
	for i := 0; i < controlQueueSize+extra; i++ {
		b, _ := msgpack.Marshal(&RollbackRequest{To: 0, Reason: "test"})
		inbox := nats.NewInbox()
		sub, err := cc.SubscribeSync(inbox)
		if err != nil {
			t.Fatal(err)
		}
		if err := cc.PublishRequest(ModelSubject, inbox, b); err != nil {
			t.Fatal(err)
		}
		go func() {
			m, err := sub.NextMsgWithContext(ctx)
			if err != nil {
				replies <- err
				return
			}
			var rep ControlReply
			if err := msgpack.Unmarshal(m.Data, &rep); err != nil {
				replies <- err
				return
			}
			replies <- rep.Err()
		}()
	}
	// Only the full queue's answers can arrive before the goroutine serves.
	for i := 0; i < extra; i++ {
		if err := <-replies; !errors.Is(err, ErrControl) || err.(*ControlError).Code != CodeBusy {
			t.Fatalf("reply %d before serving: %v, want busy", i, err)
		}
	}
	if got := n.ControlDrops(); got != extra {
		t.Fatalf("%d drops counted, want %d", got, extra)
	}
	go q.serve(ctx)
	for i := 0; i < controlQueueSize; i++ {
		if err := <-replies; err != nil {
			t.Fatalf("queued request %d: %v", i, err)
		}
	}
}

// TestServiceControlRequests runs the service over real NATS and raft and
// asks it what `strata model rollback` and `strata global members` ask, in
// msgpack (coded replies) and in the JSON older clients send (the JSON
// replies they decode).
func TestServiceControlRequests(t *testing.T) {
	n := testNode(t)
	nc, d := testConn(t)
	top := twoRegionTopology(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	models, err := mesh.OpenModelStore(ctx, nc, top.Job, 1)
	if err != nil {
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()
	started := make(chan struct{})
	var once bool
	svcErr := make(chan error, 1)
	go func() {
		svcErr <- RunService(ctx, ServiceConfig{Node: n, Conn: nc, Job: top.Job, NewCoordinator: func() (*Coordinator, error) {
			if !once {
				once = true
				close(started)
			}
			// No region ever answers: the coordinator starts the job and
			// waits for regions, which is all this test needs of it.
			return NewCoordinator(CoordinatorConfig{Topology: top, Node: n, Conn: nc, Models: models, Evaluator: nopEvaluator{}, Initial: []float64{0}, ConfigHash: "h"})
		}})
	}()
	<-started
	cc, err := d.Connect("operator")
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	// The coordinator starts the job; until then a rollback is refused for
	// want of one. Wait for the job by asking the ledger.
	for {
		var has bool
		n.Read(func(l *ledger.Ledger) { has = l.Job != nil })
		if has {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the coordinator never started the job")
		case <-time.After(20 * time.Millisecond):
		}
	}
	rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
	defer rcancel()

	if err := RequestRollback(rctx, cc, RollbackRequest{To: 0, Reason: "test"}); err != nil {
		t.Fatalf("rollback to v0: %v", err)
	}
	err = RequestRollback(rctx, cc, RollbackRequest{To: 9, Reason: "test"})
	var ce *ControlError
	if !errors.As(err, &ce) || ce.Code != CodeRejected || ce.Reason != "rollback" {
		t.Fatalf("rollback to v9: %v, want rejected with the ledger's code", err)
	}
	ms, err := RequestMembers(rctx, cc, MembersRequest{Op: "list"})
	if err != nil || len(ms) != 1 || ms[0].ID != "g1" {
		t.Fatalf("members %v (%v), want g1", ms, err)
	}
	if _, err := RequestMembers(rctx, cc, MembersRequest{Op: "promote"}); !errors.As(err, &ce) || ce.Code != CodeInvalid {
		t.Fatalf("unknown op: %v, want invalid", err)
	}
	if err := RequestEnroll(rctx, cc, EnrollRequest{}); !errors.As(err, &ce) || ce.Code != CodeInvalid {
		t.Fatalf("empty enrolment: %v, want invalid", err)
	}
	if err := RequestEnroll(rctx, cc, EnrollRequest{Withdraw: "nobody"}); !errors.As(err, &ce) || ce.Code != CodeRejected || ce.Reason != "unknown_client" {
		t.Fatalf("withdrawing an unknown client: %v, want rejected unknown_client", err)
	}
	m, err := cc.RequestWithContext(rctx, ModelSubject, []byte{0xc1})
	if err != nil {
		t.Fatal(err)
	}
	var rep ControlReply
	if err := msgpack.Unmarshal(m.Data, &rep); err != nil || rep.Code != CodeMalformed {
		t.Fatalf("malformed request answered %+v (%v), want malformed", rep, err)
	}

	// JSON, as clients before msgpack requests send it.
	legacy := func(subj string, req any) []byte {
		t.Helper()
		b, _ := json.Marshal(req)
		m, err := cc.RequestWithContext(rctx, subj, b)
		if err != nil {
			t.Fatal(err)
		}
		return m.Data
	}
	var lr map[string]string
	if err := json.Unmarshal(legacy(ModelSubject, RollbackRequest{To: 9}), &lr); err != nil || !strings.Contains(lr["error"], "cannot roll back") {
		t.Fatalf("JSON rollback to v9: %v (%v), want the JSON error", lr, err)
	}
	lr = nil
	if err := json.Unmarshal(legacy(ModelSubject, RollbackRequest{To: 0}), &lr); err != nil || len(lr) != 0 {
		t.Fatalf("JSON rollback to v0: %v (%v), want {}", lr, err)
	}
	var mr MembersReply
	if err := json.Unmarshal(legacy(MembersSubject, MembersRequest{Op: "list"}), &mr); err != nil || mr.Error != "" || len(mr.Members) != 1 {
		t.Fatalf("JSON members: %+v (%v)", mr, err)
	}

	cc.Close()
	cancel()
	if err := <-svcErr; err != nil {
		t.Fatalf("service: %v", err)
	}
	// The service joins what it started: once its subscriptions' own
	// goroutines have wound down, no more run than before it.
	deadline := time.Now().Add(30 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after the service returned, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestServiceConfig(t *testing.T) {
	newC := func() (*Coordinator, error) { return nil, errors.New("unused") }
	valid := ServiceConfig{Node: &Node{}, Conn: &nats.Conn{}, NewCoordinator: newC}
	tests := []struct {
		name string
		edit func(*ServiceConfig)
		want string
	}{
		{"valid", func(*ServiceConfig) {}, ""},
		{"no node", func(c *ServiceConfig) { c.Node = nil }, "Node"},
		{"no conn", func(c *ServiceConfig) { c.Conn = nil }, "Conn"},
		{"no coordinator", func(c *ServiceConfig) { c.NewCoordinator = nil }, "NewCoordinator"},
		{"negative grace", func(c *ServiceConfig) { c.FinishGrace = -time.Second }, "FinishGrace"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := valid
			tt.edit(&cfg)
			err := cfg.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("got %v, want valid", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "ServiceConfig."+tt.want) {
				t.Fatalf("got %v, want an error naming ServiceConfig.%s", err, tt.want)
			}
			if err := RunService(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("RunService: %v, want the invalid config refused", err)
			}
		})
	}
	d := valid.withDefaults()
	if valid.Logger != nil || valid.FinishGrace != 0 || d.Logger == nil || d.FinishGrace != 3*time.Second {
		t.Fatalf("defaults: %+v from %+v", d, valid)
	}
}

func TestNodeConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  NodeConfig
		want string
	}{
		{"valid", NodeConfig{DataDir: "d"}, ""},
		{"no data dir", NodeConfig{}, "DataDir"},
		{"negative apply timeout", NodeConfig{DataDir: "d", ApplyTimeout: -1}, "ApplyTimeout"},
		{"peer without address", NodeConfig{DataDir: "d", Peers: []Peer{{ID: "g1"}}}, "Peers[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.withDefaults().Validate()
			if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), "NodeConfig."+tt.want)) {
				t.Fatalf("got %v, want an error naming %q", err, tt.want)
			}
		})
	}
	c := NodeConfig{DataDir: "d"}
	if d := c.withDefaults(); c.ID != "" || c.ApplyTimeout != 0 || d.ID != "g1" || d.ApplyTimeout != 10*time.Second || !d.Bootstrap {
		t.Fatalf("defaults %+v from %+v", d, c)
	}
}
