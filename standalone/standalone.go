// Package standalone runs a whole Strata mesh in one process, as `strata up`
// does: an embedded NATS server, a single-node raft global tier, the
// regional aggregators and the simulated edge clients of a topology. The
// tiers still talk only over NATS subjects, exactly as separate processes
// would. It is wiring only; every behaviour lives in the tier packages.
package standalone

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-fl/strata/edge"
	"github.com/strata-fl/strata/empirical"
	"github.com/strata-fl/strata/finetune"
	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/identity"
	"github.com/strata-fl/strata/internal/seal"
	"github.com/strata-fl/strata/mesh"
	"github.com/strata-fl/strata/observe/metrics"
	"github.com/strata-fl/strata/regional"
	"github.com/strata-fl/strata/secagg"
	"github.com/strata-fl/strata/topology"
)

// Config configures a one-process mesh.
type Config struct {
	Topology *topology.Topology
	// DataDir holds nats/, global/ and the checkpoint; required.
	DataDir string
	// MNIST is the loaded data set; nil loads it from the GoMNIST module.
	MNIST *finetune.MNIST
	// Rand is the source of sampling and noise draws; nil means crypto/rand.
	Rand     io.Reader
	Progress func(global.RoundReport)
	// WrapTrainer, when set, wraps the built-in trainer (tests use it to
	// slow clients down or make them fail).
	WrapTrainer func(edge.Trainer) edge.Trainer
	// SecAggDrop, when set, makes simulated clients drop out of secure
	// aggregation sessions (edge.FleetConfig.SecAggDrop).
	SecAggDrop func(client string, round uint64, stage secagg.Stage) bool
	// WrapEvaluator, when set, wraps the global tier's evaluator (tests use
	// it to make the evaluation gate fail).
	WrapEvaluator func(global.Evaluator) global.Evaluator
	// MaxPayload bounds one NATS message (default 8 MiB); tests lower it to
	// make updates and partials travel in chunks.
	MaxPayload int32
	// Key encrypts model blobs and ledger snapshots at rest; nil leaves
	// them in clear.
	Key *seal.Key
	// Status receives one-line messages about start-up work.
	Status func(format string, args ...any)
	// Registry, when set, receives the Prometheus collectors of every
	// role (strata up --metrics).
	Registry *prometheus.Registry
	// Alerts are the thresholds the tracker checks; zero values take the
	// defaults.
	Alerts metrics.Alerts
	Logger *slog.Logger
}

// Mesh is a running one-process mesh.
type Mesh struct {
	cfg     Config
	Server  *server.Server
	Node    *global.Node
	Task    *finetune.Task
	Regions map[string]*regional.Runner
	Fleet   *edge.Fleet
	// Tracker follows the global tier for metrics and the dashboard.
	Tracker *metrics.Global
	// Trainer is the built-in trainer of the simulated clients (it holds
	// their residual heads when the job is personalised).
	Trainer *finetune.ClientTrainer
	coord   *global.Coordinator
	conns   []*nats.Conn
	// Secrets is the mesh's secrets directory (DataDir/secrets): the dev
	// CA, the server certificate and every identity's key.
	Secrets string
	dialer  mesh.Dialer
	public  []identity.Entry
}

// Dialer connects to the mesh's NATS server in-process, as the operator.
func (m *Mesh) Dialer() mesh.Dialer { return m.dialer }

// URL is the mesh's TLS listener on loopback, for tools outside the process.
func (m *Mesh) URL() string { return m.Server.ClientURL() }

// ConfigHash identifies a topology: a data dir holding another job's ledger
// refuses to run a different one.
func ConfigHash(t *topology.Topology) (string, error) {
	b, err := t.YAML()
	if err != nil {
		return "", err
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:]), nil
}

// Start prepares the task and starts every tier but does not run rounds.
func Start(ctx context.Context, cfg Config) (m *Mesh, err error) {
	if cfg.Topology == nil || cfg.DataDir == "" {
		return nil, errors.New("standalone: Config needs Topology and DataDir")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Status == nil {
		cfg.Status = func(string, ...any) {}
	}
	t := cfg.Topology
	if err := t.Validate(); err != nil {
		return nil, err
	}
	m = &Mesh{cfg: cfg, Regions: map[string]*regional.Runner{}}
	started := m // the returns below set m to nil on error
	defer func() {
		if err != nil {
			started.Close()
		}
	}()
	if cfg.MNIST == nil {
		cfg.Status("loading MNIST")
		if cfg.MNIST, err = finetune.LoadMNIST(""); err != nil {
			return nil, err
		}
	}
	m.Task, err = finetune.PrepareTask(cfg.MNIST, TaskConfig(t), cfg.DataDir, cfg.Status)
	if err != nil {
		return nil, err
	}
	if err := m.startServer(); err != nil {
		return nil, err
	}
	if m.Node, err = global.OpenNode(global.NodeConfig{DataDir: filepath.Join(cfg.DataDir, "global"), Key: cfg.Key, Logger: cfg.Logger}); err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := m.Node.WaitLeader(wctx); err != nil {
		return nil, err
	}
	return m, m.wire(ctx)
}

// startServer starts the NATS server with TLS and per-identity
// authorization, creating the mesh's secrets on first use.
func (m *Mesh) startServer() error {
	t, dir := m.cfg.Topology, filepath.Join(m.cfg.DataDir, "secrets")
	m.Secrets = dir
	if _, err := identity.LoadPublic(dir); errors.Is(err, identity.ErrNoSecrets) {
		m.cfg.Status("creating the mesh's CA and %d identities in %s", t.Population()+len(t.Regions)+2, dir)
		if err := identity.GenerateMesh(dir, Spec(t, []string{"g1"})); err != nil {
			return err
		}
	}
	var err error
	if m.public, err = identity.LoadPublic(dir); err != nil {
		return err
	}
	cfg, op, err := mesh.Secured(mesh.ServerConfig{StoreDir: filepath.Join(m.cfg.DataDir, "nats"), Port: 0,
		MaxPayload: m.cfg.MaxPayload, Logger: m.cfg.Logger}, dir, t.Job)
	if err != nil {
		return err
	}
	if m.Server, err = mesh.StartServer(cfg); err != nil {
		return err
	}
	op.Server = m.Server
	m.dialer = op
	return nil
}

// Spec lists a topology's identities: an operator ("admin"), the given
// global nodes, its regions and every client.
func Spec(t *topology.Topology, globals []string) identity.MeshSpec {
	spec := identity.MeshSpec{Operators: []string{"admin"}, Globals: globals, Clients: map[string][]string{}}
	for _, r := range t.Regions {
		spec.Regions = append(spec.Regions, r.ID)
		for i := 0; i < r.Clients; i++ {
			spec.Clients[r.ID] = append(spec.Clients[r.ID], topology.ClientID(r.ID, i))
		}
	}
	// Canary clients are enrolled, sampled and signed for like any other.
	for _, cc := range t.CanaryClients() {
		spec.Clients[cc.Region] = append(spec.Clients[cc.Region], cc.ID)
	}
	return spec
}

// TaskConfig derives the built-in task's configuration from a topology.
func TaskConfig(t *topology.Topology) finetune.TaskConfig {
	return finetune.TaskConfig{
		Hidden: t.Train.Hidden, PretrainEpochs: t.Train.PretrainEpochs, PublicExamples: t.Data.PublicExamples,
		Clients: t.Population(), ExamplesPerClient: t.Data.ExamplesPerClient, DirichletAlpha: t.Data.DirichletAlpha,
		Shards: t.Data.ShardsPerClient,
		Invert: t.Data.Shift == "invert", EvalExamples: t.Data.EvalExamples, Full: t.Train.Full, Seed: t.Seed,
		Local:    finetune.LocalConfig{Epochs: t.Train.LocalEpochs, Batch: t.Train.LocalBatch, LR: t.Train.LocalLR},
		Personal: t.Train.PersonalHead, PersonalEpochs: t.Train.PersonalEpochs,
	}
}

func (m *Mesh) connect(name string, k *identity.Key) (*nats.Conn, error) {
	nc, err := m.dialer.As(k).Connect(name)
	if err != nil {
		return nil, err
	}
	m.conns = append(m.conns, nc)
	return nc, nil
}

func (m *Mesh) wire(ctx context.Context) error {
	t := m.cfg.Topology
	gk, err := identity.LoadKey(m.Secrets, identity.KindGlobal, "g1")
	if err != nil {
		return err
	}
	gc, err := m.connect("global", gk)
	if err != nil {
		return err
	}
	if _, err := global.ServeRegistry(gc, m.Node, t.Job); err != nil {
		return err
	}
	if _, err := global.ServeEnroll(ctx, gc, m.Node); err != nil {
		return err
	}
	models, err := mesh.OpenModelStore(ctx, gc, t.Job, 1)
	if err != nil {
		return err
	}
	models.SetKey(m.cfg.Key)
	hash, err := ConfigHash(t)
	if err != nil {
		return err
	}
	var evaluator global.Evaluator = finetune.Evaluator{Task: m.Task}
	if m.cfg.WrapEvaluator != nil {
		evaluator = m.cfg.WrapEvaluator(evaluator)
	}
	tc, err := m.connect("tracker", nil)
	if err != nil {
		return err
	}
	m.Tracker, err = metrics.NewGlobal(metrics.GlobalConfig{Node: m.Node, Conn: tc, Traffic: gc, Topology: t, Dim: len(m.Task.Theta0), Alerts: m.cfg.Alerts, Logger: m.cfg.Logger})
	if err != nil {
		return err
	}
	collectors := []prometheus.Collector{m.Tracker}
	m.coord, err = global.NewCoordinator(global.CoordinatorConfig{
		Topology: t, Node: m.Node, Conn: gc, Models: models, Initial: m.Task.Theta0,
		Evaluator: evaluator, Rand: m.cfg.Rand, ConfigHash: hash,
		Progress: m.cfg.Progress, Logger: m.cfg.Logger.With("tier", "global"), Identities: m.public,
	})
	if err != nil {
		return err
	}
	keys := map[string]*identity.Key{}
	for _, r := range t.Regions {
		rk, err := identity.LoadKey(m.Secrets, identity.KindRegion, r.ID)
		if err != nil {
			return err
		}
		nc, err := m.connect("regional-"+r.ID, rk)
		if err != nil {
			return err
		}
		rc := metrics.NewRegional(r.ID, nc)
		m.Regions[r.ID], err = regional.NewRunner(regional.Config{Job: t.Job, Region: r.ID, Conn: nc, Rand: m.cfg.Rand, Logger: m.cfg.Logger.With("tier", "regional"),
			StreamSlots: t.DataPath.StreamSlots, StreamWindow: t.DataPath.StreamWindow, OnPartial: rc.OnPartial, Key: rk})
		if err != nil {
			return err
		}
		rc.SetRunner(m.Regions[r.ID])
		collectors = append(collectors, rc)
		ck, err := identity.LoadClients(m.Secrets, r.ID)
		if err != nil {
			return err
		}
		maps.Copy(keys, ck)
	}
	var clients []edge.Client
	var ids []string
	for _, r := range t.Regions {
		for i := 0; i < r.Clients; i++ {
			id := topology.ClientID(r.ID, i)
			clients = append(clients, edge.Client{ID: id, Region: r.ID})
			ids = append(ids, id)
		}
	}
	// Canary clients (audit.canaries) join the fleet; they never train.
	canaries := map[string][]float64{}
	for _, cc := range t.CanaryClients() {
		clients = append(clients, edge.Client{ID: cc.ID, Region: cc.Region})
		canaries[cc.ID] = empirical.Direction(t.CanarySeed(), cc.Index, len(m.Task.Theta0))
	}
	ct, err := finetune.NewClientTrainer(m.Task, ids)
	if err != nil {
		return err
	}
	m.Trainer = ct
	var trainer edge.Trainer = ct
	if m.cfg.WrapTrainer != nil {
		trainer = m.cfg.WrapTrainer(trainer)
	}
	ec, err := m.connect("edge-models", nil)
	if err != nil {
		return err
	}
	emodels, err := mesh.OpenModelStore(ctx, ec, t.Job, 1)
	if err != nil {
		return err
	}
	emodels.SetKey(m.cfg.Key)
	ecol := metrics.NewEdge("all")
	dialer := m.Dialer()
	dialer.OnConnect = ecol.OnConnect
	m.Fleet, err = edge.NewFleet(edge.FleetConfig{Job: t.Job, Dialer: dialer, Clients: clients, Trainer: trainer, Models: emodels,
		Workers: runtime.GOMAXPROCS(0), Rand: m.cfg.Rand, Logger: m.cfg.Logger.With("tier", "edge"), Keys: keys,
		Stream: edge.StreamConfig{ChunkBytes: t.DataPath.ChunkBytes, Encoding: t.DataPath.Encoding(), TopK: t.DataPath.TopK}, Canaries: canaries, SecAggDrop: m.cfg.SecAggDrop})
	if err != nil {
		return err
	}
	ecol.SetFleet(m.Fleet)
	collectors = append(collectors, ecol, metrics.NewNATS(m.Server))
	if m.cfg.Registry != nil {
		for _, c := range collectors {
			if err := m.cfg.Registry.Register(c); err != nil {
				return fmt.Errorf("standalone: metrics: %w", err)
			}
		}
	}
	return nil
}

// Run runs the job to its end (or until ctx is cancelled) and returns the
// coordinator's error. Regional and edge tiers stop when the job is done.
func (m *Mesh) Run(ctx context.Context) error {
	tctx, stopTracker := context.WithCancel(ctx)
	defer stopTracker()
	tracked := make(chan struct{})
	go func() {
		defer close(tracked)
		if err := m.Tracker.Run(tctx); err != nil {
			m.cfg.Logger.Warn("tracker stopped", "err", err)
		}
	}()
	defer func() { stopTracker(); <-tracked }()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, len(m.Regions)+1)
	for _, r := range m.Regions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.Run(ctx); err != nil {
				errs <- err
				cancel()
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := m.Fleet.Run(ctx); err != nil {
			errs <- err
			cancel()
		}
	}()
	// Give every subscriber time to be in place before the first round.
	m.cfg.Status("connecting %d simulated clients", m.cfg.Topology.Population())
	if err := m.waitSubscribers(ctx); err != nil {
		cancel()
		wg.Wait()
		return err
	}
	err := m.coord.Run(ctx)
	if err != nil {
		cancel()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		err = errors.Join(err, e)
	}
	if ctx.Err() != nil && err == nil {
		err = ctx.Err()
	}
	return err
}

// waitSubscribers waits until every edge client and region is subscribed,
// so that the first round.open reaches everyone.
func (m *Mesh) waitSubscribers(ctx context.Context) error {
	waits := []<-chan struct{}{m.Fleet.Ready()}
	for _, r := range m.Regions {
		waits = append(waits, r.Ready())
	}
	for _, w := range waits {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-w:
		}
	}
	return nil
}

// Theta returns the coordinator's current model.
func (m *Mesh) Theta() []float64 { return m.coord.Theta() }

// Ledger returns a snapshot copy of the ledger.
func (m *Mesh) Ledger() (*ledger.Ledger, error) {
	b, err := m.Node.Snapshot()
	if err != nil {
		return nil, err
	}
	return ledger.Restore(b)
}

// Close shuts everything down in order: connections, raft, NATS.
func (m *Mesh) Close() error {
	for _, nc := range m.conns {
		nc.Drain()
	}
	var err error
	if m.Node != nil {
		err = m.Node.Close()
	}
	if m.Server != nil {
		m.Server.Shutdown()
		m.Server.WaitForShutdown()
	}
	if err != nil {
		return fmt.Errorf("standalone: %w", err)
	}
	return nil
}
