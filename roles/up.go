package roles

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/identity"
	"github.com/strata-fl/strata/internal/seal"
	"github.com/strata-fl/strata/mesh"
	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/observe/metrics"
	"github.com/strata-fl/strata/secagg"
	"github.com/strata-fl/strata/task"
	"github.com/strata-fl/strata/task/builtin"
	"github.com/strata-fl/strata/topology"
)

// UpConfig configures a whole mesh in one process (`strata up`): an
// embedded NATS server secured with the mesh's own secrets, a single-node
// global tier, every region and every simulated client — each the same
// role a deployment runs.
type UpConfig struct {
	Topology *topology.Topology
	// DataDir holds nats/, global/, secrets/ and the task's cache; required.
	DataDir string
	// Task is what the job trains; nil prepares the topology's built-in
	// task (cached in DataDir).
	Task task.Task
	// Key encrypts model blobs, ledger snapshots and the raft log at rest.
	Key *seal.Key
	// Rand is the source of sampling and noise draws; nil: crypto/rand.
	Rand     io.Reader
	Progress func(global.RoundReport)
	// Status receives one-line messages about start-up work.
	Status func(format string, args ...any)
	// Registry, when set, receives every role's Prometheus collectors.
	Registry *prometheus.Registry
	Alerts   metrics.Alerts
	// MaxPayload bounds one NATS message (default 8 MiB); tests lower it
	// to make updates and partials travel in chunks.
	MaxPayload int32
	// WrapTrainer, WrapEvaluator and SecAggDrop reach into the mesh for
	// tests and benchmarks (see EdgeConfig and GlobalConfig).
	WrapTrainer   func(task.Trainer) task.Trainer
	WrapEvaluator func(task.Evaluator) task.Evaluator
	SecAggDrop    func(client string, round uint64, stage secagg.Stage) bool
	// EvaluatorStderr receives the external evaluator's stderr (see
	// GlobalConfig).
	EvaluatorStderr io.Writer
	Logger          *slog.Logger
}

// Validate names the field that is wrong.
func (c UpConfig) Validate() error {
	switch {
	case c.Topology == nil:
		return fmt.Errorf("%w: UpConfig.Topology is required", ErrConfig)
	case c.DataDir == "":
		return fmt.Errorf("%w: UpConfig.DataDir is required", ErrConfig)
	case c.MaxPayload < 0:
		return fmt.Errorf("%w: UpConfig.MaxPayload %d: want > 0 (0 means 8 MiB)", ErrConfig, c.MaxPayload)
	}
	return c.Topology.Validate()
}

// Up is a whole mesh running in one process.
type Up struct {
	cfg     UpConfig
	NATS    *NATS
	Global  *Global
	Regions map[string]*Regional
	Edge    *Edge
	Task    task.Task
	// Secrets is the mesh's secrets dir (DataDir/secrets): the dev mesh
	// keeps every key there, which a deployment would split per host.
	Secrets string
	public  []identity.Entry
}

// Start prepares the task, creates the mesh's secrets on first use, and
// starts the server and every role; Run runs the job.
func Start(ctx context.Context, cfg UpConfig) (_ *Up, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Status == nil {
		cfg.Status = func(string, ...any) {}
	}
	t := cfg.Topology
	u := &Up{cfg: cfg, Regions: map[string]*Regional{}, Secrets: filepath.Join(cfg.DataDir, "secrets"), Task: cfg.Task}
	defer func() {
		if err != nil {
			u.Close()
		}
	}()
	if u.Task == nil {
		if u.Task, err = builtin.Prepare(ctx, t, builtin.Spec{CacheDir: cfg.DataDir, Logf: cfg.Status}); err != nil {
			return nil, err
		}
	}
	if err := u.secrets(); err != nil {
		return nil, err
	}
	if u.NATS, err = StartNATS(NATSConfig{StoreDir: filepath.Join(cfg.DataDir, "nats"), Port: 0, MaxPayload: cfg.MaxPayload,
		Secrets: u.Secrets, Job: t.Job, Logger: cfg.Logger}); err != nil {
		return nil, err
	}
	d := u.Dialer()
	gk, err := identity.LoadKey(u.Secrets, identity.KindGlobal, "g1")
	if err != nil {
		return nil, err
	}
	if u.Global, err = NewGlobal(ctx, GlobalConfig{ID: "g1", DataDir: filepath.Join(cfg.DataDir, "global"), Key: cfg.Key, Dialer: d.As(gk),
		Topology: t, Task: u.Task, Identities: u.public, ExitWhenFinished: true, FinishGrace: time.Millisecond, Rand: cfg.Rand,
		Progress: cfg.Progress, WrapEvaluator: cfg.WrapEvaluator, EvaluatorStderr: cfg.EvaluatorStderr, Track: true, Alerts: cfg.Alerts, Logger: cfg.Logger}); err != nil {
		return nil, err
	}
	keys := map[string]*identity.Key{}
	for _, r := range t.Regions {
		rk, err := identity.LoadKey(u.Secrets, identity.KindRegion, r.ID)
		if err != nil {
			return nil, err
		}
		if u.Regions[r.ID], err = NewRegional(RegionalConfig{Region: r.ID, Dialer: d, Key: rk, Topology: t, Rand: cfg.Rand, Logger: cfg.Logger}); err != nil {
			return nil, err
		}
		ck, err := identity.LoadClients(u.Secrets, r.ID)
		if err != nil {
			return nil, err
		}
		maps.Copy(keys, ck)
	}
	if u.Edge, err = NewEdge(ctx, EdgeConfig{Dialer: d, Keys: keys, Topology: t, Task: u.Task, WrapTrainer: cfg.WrapTrainer,
		ModelKey: cfg.Key, Rand: cfg.Rand, SecAggDrop: cfg.SecAggDrop, Logger: cfg.Logger}); err != nil {
		return nil, err
	}
	return u, u.register()
}

// secrets creates the mesh's CA and identities on first use and loads its
// public keys.
func (u *Up) secrets() error {
	t := u.cfg.Topology
	if _, err := identity.LoadPublic(u.Secrets); errors.Is(err, identity.ErrNoSecrets) {
		u.cfg.Status("creating the mesh's CA and %d identities in %s", t.Population()+len(t.Regions)+2, u.Secrets)
		if err := identity.GenerateMesh(u.Secrets, Spec(t, []string{"g1"})); err != nil {
			return err
		}
	}
	var err error
	u.public, err = identity.LoadPublic(u.Secrets)
	return err
}

// register hands every role's collectors to the registry, if any.
func (u *Up) register() error {
	reg := u.cfg.Registry
	if reg == nil {
		return nil
	}
	cs := []prometheus.Collector{u.Global.Tracker(), u.Edge.Metrics(), metrics.NewNATS(u.NATS.Server)}
	for _, r := range u.Regions {
		cs = append(cs, r.Metrics())
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("roles: metrics: %w", err)
		}
	}
	return nil
}

// Spec lists a topology's identities: an operator ("admin"), the given
// global nodes, its regions and every client (canaries too: they are
// enrolled, sampled and signed for like any other).
func Spec(t *topology.Topology, globals []string) identity.MeshSpec {
	spec := identity.MeshSpec{Operators: []string{"admin"}, Globals: globals, Clients: map[string][]string{}}
	for _, r := range t.Regions {
		spec.Regions = append(spec.Regions, r.ID)
	}
	for _, c := range Clients(t, "") {
		spec.Clients[c.Region] = append(spec.Clients[c.Region], c.ID)
	}
	return spec
}

// Dialer connects to the mesh's server in-process, as the operator.
func (u *Up) Dialer() mesh.Dialer { return u.NATS.Operator }

// URL is the server's TLS listener on loopback, for tools outside the
// process.
func (u *Up) URL() string { return u.NATS.Server.ClientURL() }

// Node is the global tier's raft node.
func (u *Up) Node() *global.Node { return u.Global.Node() }

// Final scores model versions for the job's report: the task's own
// evaluation on its whole held-out set, or the external evaluator's.
func (u *Up) Final() task.Evaluator { return u.Global.Final() }

// Tracker follows the global tier for metrics and the dashboard.
func (u *Up) Tracker() *metrics.Global { return u.Global.Tracker() }

// Run runs the job to its end (or until ctx ends): the regions and the
// fleet first, the global node once every one of them is subscribed, so
// that the first round reaches everyone. The regions and the fleet stop
// when the job is done.
func (u *Up) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, len(u.Regions)+2)
	run := func(f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil {
				errs <- err
				cancel()
			}
		}()
	}
	waits := []<-chan struct{}{u.Edge.Fleet().Ready()}
	for _, r := range u.Regions {
		run(r.Run)
		waits = append(waits, r.Runner().Ready())
	}
	run(u.Edge.Run)
	u.cfg.Status("connecting %d simulated clients", u.cfg.Topology.Population())
	var err error
	for _, w := range waits {
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case <-w:
		}
	}
	if err == nil {
		err = u.Global.Run(ctx)
	}
	cancel()
	wg.Wait()
	close(errs)
	for e := range errs {
		if !errors.Is(e, context.Canceled) {
			err = errors.Join(err, e)
		}
	}
	return err
}

// Ledger returns a copy of the ledger.
func (u *Up) Ledger() (*ledger.Ledger, error) {
	b, err := u.Node().Snapshot()
	if err != nil {
		return nil, err
	}
	return ledger.Restore(b)
}

// Serving returns θ of the serving model version, read from the model
// store and checked against the hash the ledger committed (version 0, the
// checkpoint, when nothing was promoted).
func (u *Up) Serving(ctx context.Context) ([]float64, error) {
	l, err := u.Ledger()
	if err != nil {
		return nil, err
	}
	return ServingModel(ctx, l, u.Global.Models(), u.Task)
}

// ServingModel reads the ledger's serving model from the store.
func ServingModel(ctx context.Context, l *ledger.Ledger, models *mesh.ModelStore, tk task.Task) ([]float64, error) {
	m, ok := l.ServingModel()
	if !ok {
		return tk.Initial(), nil
	}
	blob, err := models.Get(ctx, "model", m.Version, m.Hash)
	if err != nil {
		return nil, fmt.Errorf("serving model v%d: %w", m.Version, err)
	}
	v, err := wire.Float32s(blob)
	if err != nil {
		return nil, fmt.Errorf("serving model v%d: %w", m.Version, err)
	}
	if len(v) != len(tk.Initial()) {
		return nil, fmt.Errorf("serving model v%d has %d parameters, the task has %d", m.Version, len(v), len(tk.Initial()))
	}
	theta := make([]float64, len(v))
	for i, x := range v {
		theta[i] = float64(x)
	}
	return theta, nil
}

// Close shuts everything down in order: the global node, the server.
func (u *Up) Close() error {
	var err error
	for _, r := range u.Regions {
		r.Close()
	}
	if u.Edge != nil {
		u.Edge.Close()
	}
	if u.Global != nil {
		err = u.Global.Close()
		u.Global = nil
	}
	if u.NATS != nil {
		u.NATS.Close()
		u.NATS = nil
	}
	if err != nil {
		return fmt.Errorf("roles: %w", err)
	}
	return nil
}
