package global

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/strata-fl/strata/global/round"
	"github.com/strata-fl/strata/mesh"
	"github.com/strata-fl/strata/topology"
)

// testNode opens a single in-process raft node in a temp dir and waits
// until it leads.
func testNode(t *testing.T) *Node {
	t.Helper()
	n, err := OpenNode(NodeConfig{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if lead, err := n.WaitLeader(ctx); err != nil || !lead {
		t.Fatalf("leader %v: %v", lead, err)
	}
	return n
}

// testConn starts an embedded NATS server and connects to it in process.
func testConn(t *testing.T) (*nats.Conn, mesh.Dialer) {
	t.Helper()
	srv, err := mesh.StartServer(mesh.ServerConfig{StoreDir: t.TempDir(), Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	d := mesh.Dialer{Server: srv}
	nc, err := d.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc, d
}

func twoRegionTopology(t *testing.T) *topology.Topology {
	t.Helper()
	top, err := topology.Parse([]byte("job: t\nregions:\n  - {id: a, clients: 1}\n  - {id: b, clients: 1}\n"))
	if err != nil {
		t.Fatal(err)
	}
	return top
}

// respondAfter answers requests on subj, but only once release is closed
// (or the test's patience runs out); asked is closed on the first request.
func respondAfter(t *testing.T, nc *nats.Conn, subj string, asked, release chan struct{}) {
	t.Helper()
	var once sync.Once
	_, err := nc.Subscribe(subj, func(m *nats.Msg) {
		once.Do(func() { close(asked) })
		select {
		case <-release:
		case <-time.After(time.Minute):
		}
		m.Respond(nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// TestRegionsAreAskedAtOnce: region a acknowledges a round only once b
// has been asked too. Asked one at a time, a would time out and be left out
// of a round whose cost is already charged; asked at once, both hold it.
// The same holds of the probe that precedes a round.
func TestRegionsAreAskedAtOnce(t *testing.T) {
	top := twoRegionTopology(t)
	nc, d := testConn(t)
	rc, err := d.Connect("regions")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	n := testNode(t)
	c, err := NewCoordinator(CoordinatorConfig{Topology: top, Node: n, Conn: nc, Models: &mesh.ModelStore{}, Evaluator: nopEvaluator{},
		Initial: []float64{0}, AckTimeout: 30 * time.Second, ProbeTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	subject := func(f func(string, string) (string, error), region string) string {
		s, err := f(top.Job, region)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	ctx := context.Background()
	t.Run("open", func(t *testing.T) {
		aAsked, bAsked := make(chan struct{}), make(chan struct{})
		respondAfter(t, rc, subject(mesh.RoundSubject, "a"), aAsked, bAsked)
		respondAfter(t, rc, subject(mesh.RoundSubject, "b"), bAsked, aAsked)
		acked := c.openRegions(ctx, round.OpenRegions{Round: 1, Regions: []round.RegionOpen{{Region: "a"}, {Region: "b"}}})
		if acked.Err != nil || strings.Join(acked.Regions, ",") != "a,b" {
			t.Fatalf("acknowledged %v (%v), want a and b", acked.Regions, acked.Err)
		}
	})
	t.Run("probe", func(t *testing.T) {
		aAsked, bAsked := make(chan struct{}), make(chan struct{})
		respondAfter(t, rc, subject(mesh.PingSubject, "a"), aAsked, bAsked)
		respondAfter(t, rc, subject(mesh.PingSubject, "b"), bAsked, aAsked)
		if alive := c.liveRegions(ctx); alive != 2 {
			t.Fatalf("%d regions alive, want 2", alive)
		}
	})
}

// TestSilentRegionIsLeftOut: a region that never acknowledges is left out
// after the ack timeout; the others' clients are invited.
func TestSilentRegionIsLeftOut(t *testing.T) {
	top := twoRegionTopology(t)
	nc, d := testConn(t)
	rc, err := d.Connect("regions")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	n := testNode(t)
	c, err := NewCoordinator(CoordinatorConfig{Topology: top, Node: n, Conn: nc, Models: &mesh.ModelStore{}, Evaluator: nopEvaluator{},
		Initial: []float64{0}, AckTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	subj, _ := mesh.RoundSubject(top.Job, "a")
	if _, err := rc.Subscribe(subj, func(m *nats.Msg) { m.Respond(nil) }); err != nil {
		t.Fatal(err)
	}
	invited := make(chan string, 4)
	inv, _ := mesh.InviteWildcard(top.Job, "a")
	if _, err := rc.Subscribe(inv, func(m *nats.Msg) { invited <- m.Subject }); err != nil {
		t.Fatal(err)
	}
	rc.Flush()
	acked := c.openRegions(context.Background(), round.OpenRegions{Round: 1, Regions: []round.RegionOpen{
		{Region: "a", Clients: []string{"a-c00000"}}, {Region: "b", Clients: []string{"b-c00000"}}}})
	if acked.Err != nil || strings.Join(acked.Regions, ",") != "a" {
		t.Fatalf("acknowledged %v (%v), want a alone", acked.Regions, acked.Err)
	}
	select {
	case s := <-invited:
		if !strings.HasSuffix(s, ".a-c00000") {
			t.Fatalf("invitation on %s", s)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a's client was not invited")
	}
}

type nopEvaluator struct{}

func (nopEvaluator) Evaluate(context.Context, []float64) (Evaluation, error) {
	return Evaluation{}, nil
}

func TestCoordinatorConfig(t *testing.T) {
	top := twoRegionTopology(t)
	valid := CoordinatorConfig{Topology: top, Node: &Node{}, Conn: &nats.Conn{}, Models: &mesh.ModelStore{}, Evaluator: nopEvaluator{}, Initial: []float64{1}}
	tests := []struct {
		name string
		edit func(*CoordinatorConfig)
		want string // the field the error names; "" for valid
	}{
		{"valid", func(*CoordinatorConfig) {}, ""},
		{"no topology", func(c *CoordinatorConfig) { c.Topology = nil }, "Topology"},
		{"no node", func(c *CoordinatorConfig) { c.Node = nil }, "Node"},
		{"no conn", func(c *CoordinatorConfig) { c.Conn = nil }, "Conn"},
		{"no model store", func(c *CoordinatorConfig) { c.Models = nil }, "Models"},
		{"no evaluator", func(c *CoordinatorConfig) { c.Evaluator = nil }, "Evaluator"},
		{"no initial model", func(c *CoordinatorConfig) { c.Initial = nil }, "Initial"},
		{"negative grace", func(c *CoordinatorConfig) { c.PartialGrace = -1 }, "PartialGrace"},
		{"negative ack timeout", func(c *CoordinatorConfig) { c.AckTimeout = -1 }, "AckTimeout"},
		{"negative probe timeout", func(c *CoordinatorConfig) { c.ProbeTimeout = -1 }, "ProbeTimeout"},
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
			} else if err == nil || !strings.Contains(err.Error(), "CoordinatorConfig."+tt.want) {
				t.Fatalf("got %v, want an error naming CoordinatorConfig.%s", err, tt.want)
			}
			if _, nerr := NewCoordinator(cfg); (nerr == nil) != (err == nil) {
				t.Fatalf("NewCoordinator: %v, Validate: %v", nerr, err)
			}
		})
	}
	t.Run("defaults go to a copy", func(t *testing.T) {
		cfg := valid
		c, err := NewCoordinator(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.AckTimeout != 0 || cfg.Logger != nil || cfg.Rand != nil {
			t.Fatal("NewCoordinator changed the caller's config")
		}
		if c.cfg.AckTimeout != 5*time.Second || c.cfg.PartialGrace != 5*time.Second || c.cfg.ProbeTimeout != time.Second || c.cfg.Rand == nil || c.cfg.Logger == nil {
			t.Fatalf("defaults: %+v", c.cfg)
		}
	})
}
