package roles

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/identity"
	"github.com/strata-fl/strata/internal/seal"
	"github.com/strata-fl/strata/mesh"
	"github.com/strata-fl/strata/observe/metrics"
	"github.com/strata-fl/strata/observe/report"
	"github.com/strata-fl/strata/task"
	"github.com/strata-fl/strata/topology"
	"github.com/strata-fl/strata/trainerproto"
)

// GlobalConfig configures one node of the global tier: its raft node, its
// NATS connection, and the coordinator it runs whenever it leads.
type GlobalConfig struct {
	// ID names the node in the raft configuration and its NATS identity;
	// default "g1".
	ID string
	// DataDir holds the raft log, snapshots and what the node writes;
	// required.
	DataDir string
	// Bind is the raft transport's TCP address; empty runs a single-node
	// cluster in memory (strata up).
	Bind string
	// Peers is the initial voter set (this node included) and Bootstrap
	// forms it on a fresh data dir; both unset joins later.
	Peers     []global.Peer
	Bootstrap bool
	// Key encrypts model blobs and ledger snapshots at rest; nil: none.
	Key *seal.Key
	// Dialer connects to NATS as this node; required.
	Dialer mesh.Dialer
	// Topology is the job's plan and Task what it trains; both required.
	Topology *topology.Topology
	Task     task.Task
	// Identities are the public keys enrolled at the start of the job
	// (the secrets' public.json); a signed job needs them.
	Identities []identity.Entry
	// Replicas is how many NATS servers keep each model version; default 1.
	Replicas int
	// ExitWhenFinished makes Run return once the job is finished; a node
	// of a long-lived cluster leaves it false. FinishGrace is how long it
	// waits first, so that lagging followers get the last entries; default
	// 3s.
	ExitWhenFinished bool
	FinishGrace      time.Duration
	// Rand is the source of sampling and global noise; nil: crypto/rand.
	Rand io.Reader
	// Progress is told of every round the node coordinates; OnLead each
	// time it starts coordinating (a term it leads).
	Progress func(global.RoundReport)
	OnLead   func()
	// WrapEvaluator wraps the gate's evaluator (tests make the gate fail).
	WrapEvaluator func(task.Evaluator) task.Evaluator
	// EvaluatorStderr receives the stderr of the topology's external
	// evaluator (task.evaluator), if it has one; nil discards it (its last
	// 2 KiB still appear in errors).
	EvaluatorStderr io.Writer
	// Track runs the metrics tracker (Prometheus, dashboard); it reads the
	// ledger and listens to partials over a connection of its own.
	Track  bool
	Alerts metrics.Alerts
	Logger *slog.Logger
}

// ErrConfig is wrapped by every configuration error of a role.
var ErrConfig = errors.New("roles: invalid configuration")

// Validate names the field that is wrong.
func (c GlobalConfig) Validate() error {
	switch {
	case c.DataDir == "":
		return fmt.Errorf("%w: GlobalConfig.DataDir is required", ErrConfig)
	case c.Topology == nil:
		return fmt.Errorf("%w: GlobalConfig.Topology is required", ErrConfig)
	case c.Task == nil:
		return fmt.Errorf("%w: GlobalConfig.Task is required", ErrConfig)
	case c.FinishGrace < 0:
		return fmt.Errorf("%w: GlobalConfig.FinishGrace %v: want ≥ 0", ErrConfig, c.FinishGrace)
	case c.Replicas < 0 || c.Replicas > 5:
		return fmt.Errorf("%w: GlobalConfig.Replicas %d: want 1..5, at most the number of NATS servers", ErrConfig, c.Replicas)
	case c.Topology.Security.Signed() && len(c.Identities) == 0:
		return fmt.Errorf("%w: GlobalConfig.Identities: the job is signed and no identities are given (load the secrets' public.json)", ErrConfig)
	}
	if err := c.Topology.Validate(); err != nil {
		return err
	}
	if d := task.Dim(c.Task.Layout()); d != len(c.Task.Initial()) {
		return fmt.Errorf("%w: GlobalConfig.Task: layout packs %d values, the initial checkpoint has %d", ErrConfig, d, len(c.Task.Initial()))
	}
	return nil
}

func (c GlobalConfig) withDefaults() GlobalConfig {
	if c.ID == "" {
		c.ID = "g1"
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Global is a running global node.
type Global struct {
	cfg GlobalConfig
	// eval scores candidates for the gate, final scores versions for the
	// report: the task's own, or the topology's external evaluator's.
	eval, final task.Evaluator
	node        *global.Node
	conn        *nats.Conn
	tracker     *metrics.Global
	models      *mesh.ModelStore
	plog        *mesh.PartialLog
	closers     []func()
}

// NewGlobal opens the node's raft state and connects it to NATS; Run
// serves it.
func NewGlobal(ctx context.Context, cfg GlobalConfig) (_ *Global, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	g := &Global{cfg: cfg, eval: cfg.Task.Evaluator(), final: cfg.Task.Final()}
	defer func() {
		if err != nil {
			g.Close()
		}
	}()
	if cfg.Topology.Task.Evaluator != nil {
		r, err := newExternalEvaluator(cfg)
		if err != nil {
			return nil, err
		}
		// Closed first of all (closers run in reverse): the process is
		// asked to shut down, then killed.
		g.closers = append(g.closers, func() { r.Close() })
		g.eval, g.final = externalEvaluator{r, trainerproto.SetHeldOut}, externalEvaluator{r, trainerproto.SetFinal}
	}
	if g.node, err = global.OpenNode(global.NodeConfig{ID: cfg.ID, DataDir: cfg.DataDir, Bind: cfg.Bind, Bootstrap: cfg.Bootstrap || len(cfg.Peers) > 0,
		Peers: cfg.Peers, Key: cfg.Key, Logger: cfg.Logger}); err != nil {
		return nil, err
	}
	if g.conn, err = cfg.Dialer.Connect("global-" + cfg.ID); err != nil {
		return nil, err
	}
	g.closers = append(g.closers, func() { g.conn.Drain() })
	if g.models, err = mesh.OpenModelStore(ctx, g.conn, cfg.Topology.Job, cfg.Replicas); err != nil {
		return nil, err
	}
	g.models.SetKey(cfg.Key)
	// The partial log is replicated as the model store is, so that a
	// round outlives its leader on the same servers its models do.
	if g.plog, err = mesh.OpenPartialLog(ctx, g.conn, cfg.Topology.Job, cfg.Replicas); err != nil {
		return nil, err
	}
	if cfg.Track {
		tc, err := cfg.Dialer.Connect("tracker-" + cfg.ID)
		if err != nil {
			return nil, err
		}
		g.closers = append(g.closers, func() { tc.Drain() })
		if g.tracker, err = metrics.NewGlobal(metrics.GlobalConfig{Node: g.node, Conn: tc, Traffic: g.conn, Topology: cfg.Topology,
			Dim: len(cfg.Task.Initial()), Alerts: cfg.Alerts, Logger: cfg.Logger}); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrConfig, err)
		}
	}
	return g, nil
}

// Node is the node's raft state machine.
func (g *Global) Node() *global.Node { return g.node }

// Models is the job's model store as this node reads it.
func (g *Global) Models() *mesh.ModelStore { return g.models }

// Final scores model versions for the job's report on the whole held-out
// set: the task's own, or the topology's external evaluator.
func (g *Global) Final() task.Evaluator { return g.final }

// Tracker is the metrics tracker (nil unless Track).
func (g *Global) Tracker() *metrics.Global { return g.tracker }

// Run serves the node — status, membership, registry and enrolment
// requests — and coordinates rounds whenever it leads, until ctx ends or,
// with ExitWhenFinished, the job is finished. The tracker, if any, runs
// beside it and is joined before Run returns.
func (g *Global) Run(ctx context.Context) error {
	cfg := g.cfg
	hash, err := cfg.Topology.Hash()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	tracked := make(chan struct{})
	if g.tracker != nil {
		go func() {
			defer close(tracked)
			if err := g.tracker.Run(ctx); err != nil && ctx.Err() == nil {
				cfg.Logger.Warn("metrics tracker stopped", "err", err)
			}
		}()
	} else {
		close(tracked)
	}
	defer func() { cancel(); <-tracked }()
	evaluator := g.eval
	if cfg.WrapEvaluator != nil {
		evaluator = cfg.WrapEvaluator(evaluator)
	}
	return global.RunService(ctx, global.ServiceConfig{
		Node: g.node, Conn: g.conn, ExitWhenFinished: cfg.ExitWhenFinished, FinishGrace: cfg.FinishGrace, Logger: cfg.Logger, Job: cfg.Topology.Job,
		NewCoordinator: func() (*global.Coordinator, error) {
			if cfg.OnLead != nil {
				cfg.OnLead()
			}
			return global.NewCoordinator(global.CoordinatorConfig{
				Topology: cfg.Topology, Node: g.node, Conn: g.conn, Models: g.models, Initial: cfg.Task.Initial(),
				Evaluator: gate{evaluator}, Rand: cfg.Rand, ConfigHash: hash, Progress: cfg.Progress,
				Logger: cfg.Logger.With("tier", "global"), Identities: cfg.Identities, PartialLog: g.plog,
			})
		},
	})
}

// Close disconnects and shuts the raft node down.
func (g *Global) Close() error {
	for i := len(g.closers) - 1; i >= 0; i-- {
		g.closers[i]()
	}
	g.closers = nil
	if g.node != nil {
		err := g.node.Close()
		g.node = nil
		return err
	}
	return nil
}

// gate adapts a task's evaluator to the coordinator's, which gates on one
// higher-is-better score and records the task's metrics by name.
type gate struct{ e task.Evaluator }

func (g gate) Evaluate(ctx context.Context, theta []float64) (global.Evaluation, error) {
	ev, err := g.e.Evaluate(ctx, theta)
	if err != nil {
		return global.Evaluation{}, err
	}
	if err := ev.Validate(); err != nil {
		return global.Evaluation{}, err
	}
	return gateEvaluation(ev), nil
}

// gateEvaluation is the task's evaluation as the gate and the ledger see
// it: the primary metric, negated when lower is better, is the score.
func gateEvaluation(ev task.Evaluation) global.Evaluation {
	p := ev.Primary()
	out := global.Evaluation{Score: p.Value, Loss: ev.Loss, Metric: p.Name}
	if !p.HigherIsBetter {
		out.Score = -p.Value
	}
	for _, m := range ev.Metrics {
		out.Metrics = append(out.Metrics, ledger.Metric{Name: m.Name, Value: m.Value})
	}
	if len(ev.Metrics) == 0 { // the primary is the loss
		out.Metrics = []ledger.Metric{{Name: p.Name, Value: p.Value}}
	}
	return out
}

// Summary is report.json of a node whose ledger records the job as
// finished: the task's (or the external evaluator's) scores of the
// checkpoint and of the serving model on its whole held-out set (the
// serving model fetched from the object store and checked against the
// hash the ledger committed), ε per observer, and the time since the
// ledger recorded the job's start. Every node writes the same one, so it
// survives the loss of any of them.
func (g *Global) Summary(ctx context.Context) (*report.Summary, error) {
	b, err := g.node.Snapshot()
	if err != nil {
		return nil, err
	}
	l, err := ledger.Restore(b)
	if err != nil {
		return nil, err
	}
	theta, err := ServingModel(ctx, l, g.models, g.cfg.Task)
	if err != nil {
		return nil, err
	}
	pre, err := g.final.Evaluate(ctx, g.cfg.Task.Initial())
	if err != nil {
		return nil, err
	}
	final, err := g.final.Evaluate(ctx, theta)
	if err != nil {
		return nil, err
	}
	rep, err := report.Summarize(g.cfg.Topology, l, pre, final)
	if err != nil {
		return nil, err
	}
	if l.Job != nil {
		rep.ElapsedSeconds = time.Since(time.UnixMilli(l.Job.StartedUnixMs)).Seconds()
	}
	return rep, nil
}
