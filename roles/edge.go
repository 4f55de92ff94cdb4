package roles

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync"

	"github.com/strata-fl/strata/edge"
	"github.com/strata-fl/strata/empirical"
	"github.com/strata-fl/strata/identity"
	"github.com/strata-fl/strata/internal/seal"
	"github.com/strata-fl/strata/mesh"
	"github.com/strata-fl/strata/observe/metrics"
	"github.com/strata-fl/strata/secagg"
	"github.com/strata-fl/strata/task"
	"github.com/strata-fl/strata/topology"
)

// EdgeConfig configures a fleet of simulated edge clients: one region's,
// or every region's (strata up). Each client has its own NATS connection,
// as separate devices would.
type EdgeConfig struct {
	// Region whose clients to run; empty runs every region's.
	Region string
	// Dialer connects to NATS; each client connects as itself (Keys).
	Dialer mesh.Dialer
	// Keys holds each client's identity; a signed job needs them.
	Keys     map[string]*identity.Key
	Topology *topology.Topology
	// Task is what the clients train; Trainer, when set, trains them
	// instead of the task's own trainer (an external trainer process).
	Task    task.Task
	Trainer task.Trainer
	// WrapTrainer wraps whichever trainer trains (tests slow clients down
	// or make them fail).
	WrapTrainer func(task.Trainer) task.Trainer
	// ModelKey decrypts model blobs at rest (as the global tier's Key).
	ModelKey *seal.Key
	// JSDomain is the JetStream domain of the servers holding the model
	// store, when the fleet connects through a leaf node without JetStream.
	JSDomain string
	// Workers bounds concurrent local training; default GOMAXPROCS.
	Workers int
	// Rand is the edge-noise source; nil: crypto/rand.
	Rand io.Reader
	// SecAggDrop makes clients drop out of secure aggregation sessions
	// (fault injection for tests and benchmarks).
	SecAggDrop func(client string, round uint64, stage secagg.Stage) bool
	Logger     *slog.Logger
}

// Validate names the field that is wrong.
func (c EdgeConfig) Validate() error {
	switch {
	case c.Topology == nil:
		return fmt.Errorf("%w: EdgeConfig.Topology is required", ErrConfig)
	case c.Task == nil:
		return fmt.Errorf("%w: EdgeConfig.Task is required", ErrConfig)
	case c.Region != "" && !hasRegion(c.Topology, c.Region):
		return fmt.Errorf("%w: EdgeConfig.Region %q is not in the topology (regions: %v)", ErrConfig, c.Region, regionIDs(c.Topology))
	case c.Workers < 0:
		return fmt.Errorf("%w: EdgeConfig.Workers %d: want ≥ 1 (0 means GOMAXPROCS)", ErrConfig, c.Workers)
	case c.Topology.Security.Signed() && len(c.Keys) == 0:
		return fmt.Errorf("%w: EdgeConfig.Keys: the job is signed and no client keys are given (strata certs or strata enroll make them)", ErrConfig)
	}
	return nil
}

// Edge is a running fleet.
type Edge struct {
	cfg     EdgeConfig
	fleet   *edge.Fleet
	metrics *metrics.Edge
	close   func()
	once    sync.Once
}

// Clients lists a fleet's clients: every client of the region (or of every
// region) and its audit canaries.
func Clients(t *topology.Topology, region string) []edge.Client {
	var out []edge.Client
	for _, r := range t.Regions {
		if region != "" && r.ID != region {
			continue
		}
		for i := 0; i < r.Clients; i++ {
			out = append(out, edge.Client{ID: topology.ClientID(r.ID, i), Region: r.ID})
		}
	}
	for _, cc := range t.CanaryClients() {
		if region == "" || cc.Region == region {
			out = append(out, edge.Client{ID: cc.ID, Region: cc.Region})
		}
	}
	return out
}

// canaries maps the fleet's audit canaries to their unit directions: a
// sampled canary sends its direction instead of training.
func canaries(t *topology.Topology, region string, dim int) map[string][]float64 {
	out := map[string][]float64{}
	for _, cc := range t.CanaryClients() {
		if region == "" || cc.Region == region {
			out[cc.ID] = empirical.Direction(t.CanarySeed(), cc.Index, dim)
		}
	}
	return out
}

// NewEdge prepares the fleet: its trainer and a connection to the model
// store (as one of its clients: read-only).
func NewEdge(ctx context.Context, cfg EdgeConfig) (*Edge, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Workers == 0 {
		cfg.Workers = runtime.GOMAXPROCS(0)
	}
	t := cfg.Topology
	clients := Clients(t, cfg.Region)
	trainer := cfg.Trainer
	if trainer == nil {
		var err error
		if trainer, err = cfg.Task.Trainer(); err != nil {
			return nil, err
		}
	}
	if cfg.WrapTrainer != nil {
		trainer = cfg.WrapTrainer(trainer)
	}
	name := cfg.Region
	if name == "" {
		name = "all"
	}
	ecol := metrics.NewEdge(name)
	dialer := cfg.Dialer
	dialer.OnConnect = ecol.OnConnect
	// The fleet reads models as one of its clients (read-only), over a
	// connection of its own that the clients' count leaves out.
	models := cfg.Dialer
	if len(clients) > 0 && cfg.Keys[clients[0].ID] != nil {
		models = models.As(cfg.Keys[clients[0].ID])
	}
	mc, err := models.Connect("edge-models-" + name)
	if err != nil {
		return nil, err
	}
	store, err := mesh.ReadModelStoreDomain(ctx, mc, cfg.JSDomain, t.Job)
	if err != nil {
		mc.Close()
		return nil, err
	}
	store.SetKey(cfg.ModelKey)
	f, err := edge.NewFleet(edge.FleetConfig{Job: t.Job, Dialer: dialer, Clients: clients, Trainer: trainer, Models: store,
		Workers: cfg.Workers, Rand: cfg.Rand, Logger: cfg.Logger.With("tier", "edge"), Keys: cfg.Keys,
		Stream:   edge.StreamConfig{ChunkBytes: t.DataPath.ChunkBytes, Encoding: t.DataPath.Encoding(), TopK: t.DataPath.TopK},
		Canaries: canaries(t, cfg.Region, len(cfg.Task.Initial())), SecAggDrop: cfg.SecAggDrop})
	if err != nil {
		mc.Close()
		return nil, err
	}
	ecol.SetFleet(f)
	return &Edge{cfg: cfg, fleet: f, metrics: ecol, close: func() { mc.Close() }}, nil
}

// Fleet is the running fleet.
func (e *Edge) Fleet() *edge.Fleet { return e.fleet }

// Metrics is the fleet's Prometheus collector.
func (e *Edge) Metrics() *metrics.Edge { return e.metrics }

// Run serves rounds until the job is done or ctx ends.
func (e *Edge) Run(ctx context.Context) error {
	defer e.Close()
	return e.fleet.Run(ctx)
}

// Close closes the fleet's model-store connection (Run does when it
// returns; the fleet closes its clients' connections itself).
func (e *Edge) Close() { e.once.Do(e.close) }
