package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/strata-fl/strata/edge"
	"github.com/strata-fl/strata/empirical"
	"github.com/strata-fl/strata/finetune"
	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/identity"
	"github.com/strata-fl/strata/mesh"
	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/observe/metrics"
	"github.com/strata-fl/strata/regional"
	"github.com/strata-fl/strata/standalone"
	"github.com/strata-fl/strata/topology"
	"github.com/strata-fl/strata/trainerproto"
)

// roleFlags are the flags every role process shares.
type roleFlags struct {
	fs       *flag.FlagSet
	natsURL  *string
	topo     *string
	verbose  *bool
	secrets  *string
	progress io.Writer
}

func newRoleFlags(name, usage string, stderr io.Writer) *roleFlags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, usage)
		fs.PrintDefaults()
	}
	return &roleFlags{
		fs:      fs,
		natsURL: fs.String("nats", "nats://127.0.0.1:4222", "NATS server URL(s), comma-separated"),
		topo:    fs.String("topology", "", "topology YAML file (default: $STRATA_TOPOLOGY, else the built-in one); every role of a mesh must use the same"),
		verbose: fs.Bool("v", false, "log what this role does"),
		secrets: fs.String("secrets", "", "the mesh's secrets dir from `strata certs`: CA for TLS and this role's identity key (required unless the topology sets security.unsigned)"),
	}
}

// dialer connects as the given identity over TLS, from --secrets. Without
// --secrets it connects in the clear and unauthenticated, which only an
// unsigned topology allows.
func (r *roleFlags) dialer(t *topology.Topology, kind, id string) (mesh.Dialer, *identity.Key, error) {
	d := mesh.Dialer{URL: *r.natsURL}
	if *r.secrets == "" {
		if t.Security.Signed() {
			return d, nil, fmt.Errorf("%w: the topology signs updates (security.unsigned is false): pass --secrets DIR made by `strata certs`", errUsage)
		}
		return d, nil, nil
	}
	tlsc, err := identity.ClientTLS(*r.secrets)
	if err != nil {
		return d, nil, err
	}
	d.TLS = tlsc
	if kind == "" {
		return d, nil, nil
	}
	k, err := identity.LoadKey(*r.secrets, kind, id)
	if err != nil {
		return d, nil, err
	}
	d.Key = k
	return d, k, nil
}

func (r *roleFlags) parse(args []string) error {
	if err := r.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if r.fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, r.fs.Args())
	}
	return nil
}

func (r *roleFlags) logger(stderr io.Writer) *slog.Logger {
	if *r.verbose {
		return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func helpOK(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}

func runNATS(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("nats", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "./strata-nats", "JetStream store dir")
	host := fs.String("host", "127.0.0.1", "listen address")
	port := fs.Int("port", 4222, "client port (0 picks a free one)")
	metricsAddr := metricsFlag(fs)
	secrets := fs.String("secrets", "", "secrets dir from `strata certs`: serve TLS and admit only its identities, each with its role's subject permissions (default: open, for unsigned topologies only)")
	topo := fs.String("topology", "", "topology YAML (its job names the subjects permissions are generated for); default the built-in one")
	if err := fs.Parse(args); err != nil {
		return helpOK(fmt.Errorf("%w: %v", errUsage, err))
	}
	cfg := mesh.ServerConfig{StoreDir: *data, Host: *host, Port: *port}
	if *secrets != "" {
		t, err := loadTopology(*topo)
		if err != nil {
			return err
		}
		if cfg, _, err = mesh.Secured(cfg, *secrets, t.Job); err != nil {
			return err
		}
	}
	s, err := mesh.StartServer(cfg)
	if err != nil {
		return err
	}
	mode := "open (no TLS, no authorization)"
	if *secrets != "" {
		mode = fmt.Sprintf("TLS, %d identities authorized", len(cfg.Users))
	}
	fmt.Fprintf(stdout, "nats server ready on %s (JetStream store %s; %s)\n", s.ClientURL(), *data, mode)
	obs := newObservers(ctx, stdout)
	defer obs.stop()
	reg := metrics.NewRegistry()
	reg.MustRegister(metrics.NewNATS(s))
	if err := obs.metrics(*metricsAddr, reg); err != nil {
		s.Shutdown()
		return err
	}
	<-ctx.Done()
	s.Shutdown()
	s.WaitForShutdown()
	return nil
}

func runGlobal(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "members" {
		return runMembers(ctx, args[1:], stdout, stderr)
	}
	rf := newRoleFlags("global", "usage: strata global --id ID --raft-bind HOST:PORT --data DIR [--peers ID=ADDR,...] [--nats URL] [--topology FILE]\n       strata global members add|remove|list ...\n\nRuns one node of the raft-replicated global tier; the leader coordinates rounds.", stderr)
	id := rf.fs.String("id", "g1", "this node's id in the raft configuration")
	bind := rf.fs.String("raft-bind", "127.0.0.1:7001", "raft transport address")
	data := rf.fs.String("data", "./strata-global", "data dir: raft log, snapshots, checkpoint")
	peers := rf.fs.String("peers", "", "initial voters ID=HOST:PORT,... (this node included); empty joins later via `strata global members add`")
	keyFile := rf.fs.String("key-file", "", "AES-256 key (hex or base64) encrypting model blobs and ledger snapshots at rest; default $STRATA_KEY_FILE or $STRATA_KEY, else none")
	metricsAddr := metricsFlag(rf.fs)
	httpAddr := rf.fs.String("http", "", "serve the dashboard on host:port (port 0 picks a free one); empty: none")
	alerts := alertFlags(rf.fs)
	replicas := rf.fs.Int("replicas", 1, "how many servers of the NATS cluster keep each model version (3 on a 3-server cluster survives losing one)")
	if err := rf.parse(args); err != nil {
		return helpOK(err)
	}
	if *replicas < 1 || *replicas > 5 {
		return fmt.Errorf("%w: --replicas %d: want 1..5, at most the number of NATS servers", errUsage, *replicas)
	}
	t, err := loadTopology(*rf.topo)
	if err != nil {
		return err
	}
	ps, err := global.ParsePeers(*peers)
	if err != nil {
		return fmt.Errorf("%w: --peers: %v", errUsage, err)
	}
	logger := rf.logger(stderr).With("node", *id)
	task, err := prepareTask(t, *data, stdout)
	if err != nil {
		return err
	}
	key, err := roleKey(*keyFile)
	if err != nil {
		return err
	}
	node, err := global.OpenNode(global.NodeConfig{ID: *id, DataDir: *data, Bind: *bind, Bootstrap: len(ps) > 0, Peers: ps, Key: key, Logger: logger})
	if err != nil {
		return err
	}
	defer node.Close()
	d, _, err := rf.dialer(t, identity.KindGlobal, *id)
	if err != nil {
		return err
	}
	var ids []identity.Entry
	if *rf.secrets != "" {
		if ids, err = identity.LoadPublic(*rf.secrets); err != nil {
			return err
		}
	}
	nc, err := d.Connect("global-" + *id)
	if err != nil {
		return err
	}
	defer nc.Close()
	models, err := mesh.OpenModelStore(ctx, nc, t.Job, *replicas)
	if err != nil {
		return err
	}
	models.SetKey(key)
	hash, err := standalone.ConfigHash(t)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "global %s: raft on %s, NATS %s, job %s\n", *id, *bind, *rf.natsURL, t.Job)
	if err := saveTopology(*data, t); err != nil { // for strata report
		return err
	}
	if *metricsAddr != "" || *httpAddr != "" {
		tc, err := d.Connect("tracker-" + *id)
		if err != nil {
			return err
		}
		defer tc.Close()
		tr, err := metrics.NewGlobal(metrics.GlobalConfig{Node: node, Conn: tc, Traffic: nc, Topology: t, Dim: len(task.Theta0), Alerts: alerts(), Logger: logger})
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		obs := newObservers(ctx, stdout)
		defer obs.stop()
		obs.track(tr)
		reg := metrics.NewRegistry()
		reg.MustRegister(tr)
		if err := obs.metrics(*metricsAddr, reg); err != nil {
			return err
		}
		if err := obs.dashboard(*httpAddr, tr); err != nil {
			return err
		}
	}
	err = global.RunService(ctx, global.ServiceConfig{
		Node: node, Conn: nc, ExitWhenFinished: true, Logger: logger, Job: t.Job,
		NewCoordinator: func() (*global.Coordinator, error) {
			return global.NewCoordinator(global.CoordinatorConfig{
				Topology: t, Node: node, Conn: nc, Models: models, Initial: task.Theta0,
				Evaluator: finetune.Evaluator{Task: task}, ConfigHash: hash, Progress: progressBar(stdout), Logger: logger,
				Identities: ids,
			})
		},
	})
	if err != nil {
		return err
	}
	st := node.Status()
	if !st.Finished {
		return nil // stopped by a signal: everything is on disk
	}
	fmt.Fprintf(stdout, "global %s: job finished with %d rounds committed (applied index %d)\n", *id, st.Committed, st.Applied)
	rep, err := nodeReport(ctx, t, node, models, task)
	if err != nil {
		return fmt.Errorf("global %s: report: %w", *id, err)
	}
	if err := writeReport(*data, rep); err != nil {
		return err
	}
	printSummary(stdout, rep, nil)
	fmt.Fprintf(stdout, "\nreport: %s\n", filepath.Join(*data, "report.json"))
	return nil
}

// nodeReport is report.json of a global node whose ledger records the job
// as finished: accuracy of the checkpoint and of the serving model on the
// full test set (the serving model is fetched from the object store and
// checked against the hash the ledger committed), ε per observer, and the
// time since the ledger recorded the job's start. Every node writes the
// same report, so it survives the loss of any of them.
func nodeReport(ctx context.Context, t *topology.Topology, node *global.Node, models *mesh.ModelStore, task *finetune.Task) (*report, error) {
	b, err := node.Snapshot()
	if err != nil {
		return nil, err
	}
	l, err := ledger.Restore(b)
	if err != nil {
		return nil, err
	}
	pre, _, err := task.Model.Evaluate(task.Theta0, task.Test)
	if err != nil {
		return nil, err
	}
	theta := task.Theta0
	if m, ok := l.ServingModel(); ok {
		blob, err := models.Get(ctx, "model", m.Version, m.Hash)
		if err != nil {
			return nil, fmt.Errorf("serving model: %w", err)
		}
		v, err := wire.Float32s(blob)
		if err != nil {
			return nil, fmt.Errorf("serving model v%d: %w", m.Version, err)
		}
		if len(v) != len(task.Theta0) {
			return nil, fmt.Errorf("serving model v%d has %d parameters, the task has %d", m.Version, len(v), len(task.Theta0))
		}
		theta = make([]float64, len(v))
		for i, x := range v {
			theta[i] = float64(x)
		}
	}
	final, _, err := task.Model.Evaluate(theta, task.Test)
	if err != nil {
		return nil, err
	}
	rep := reportFrom(t, l, pre, final)
	if l.Job != nil {
		rep.ElapsedSeconds = time.Since(time.UnixMilli(l.Job.StartedUnixMs)).Seconds()
	}
	return rep, nil
}

// prepareTask loads MNIST and the checkpoint (pre-trained once, cached in
// dir; pre-training is deterministic, so every role derives the same one).
func prepareTask(t *topology.Topology, dir string, stdout io.Writer) (*finetune.Task, error) {
	mn, err := finetune.LoadMNIST("")
	if err != nil {
		return nil, err
	}
	return finetune.PrepareTask(mn, standalone.TaskConfig(t), dir, func(f string, a ...any) { fmt.Fprintf(stdout, f+"\n", a...) })
}

func runRegional(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	rf := newRoleFlags("regional", "usage: strata regional --region R [--nats URL] [--topology FILE]\n\nRuns one regional aggregator until the job is done.", stderr)
	region := rf.fs.String("region", "", "region id (required)")
	metricsAddr := metricsFlag(rf.fs)
	if err := rf.parse(args); err != nil {
		return helpOK(err)
	}
	t, err := loadRegionTopology(*rf.topo, *region)
	if err != nil {
		return err
	}
	d, key, err := rf.dialer(t, identity.KindRegion, *region)
	if err != nil {
		return err
	}
	nc, err := d.Connect("regional-" + *region)
	if err != nil {
		return err
	}
	defer nc.Close()
	rc := metrics.NewRegional(*region, nc)
	logger := rf.logger(stderr)
	r, err := regional.NewRunner(regional.Config{Job: t.Job, Region: *region, Conn: nc, Logger: logger, OnPartial: rc.OnPartial, Key: key,
		StreamSlots: t.DataPath.StreamSlots, StreamWindow: t.DataPath.StreamWindow,
		OnRoundOpen: regionMemoryLimit(t.DataPath.StreamSlots, logger)})
	if err != nil {
		return err
	}
	rc.SetRunner(r)
	obs := newObservers(ctx, stdout)
	defer obs.stop()
	reg := metrics.NewRegistry()
	reg.MustRegister(rc)
	if err := obs.metrics(*metricsAddr, reg); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "regional %s: aggregating job %s\n", *region, t.Job)
	if err := r.Run(ctx); err != nil {
		return err
	}
	st := r.Stats()
	fmt.Fprintf(stdout, "regional %s: done: %d updates accepted, %d partials, rejected %v\n", *region, st.Accepted, st.Partials, st.Rejected)
	return nil
}

// regionMemoryLimit sizes this process's soft memory limit to what its one
// region holds for each round's dimension (regional.MemoryLimit), so that
// its RSS stays near the region's O(d) bound instead of doubling between
// collections. A limit the operator set (GOMEMLIMIT) stands.
func regionMemoryLimit(slots int, logger *slog.Logger) func(wire.RoundOpen) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return nil
	}
	dim, elem := 0, 0
	return func(o wire.RoundOpen) {
		if e := wire.ElemBytes(o.Encoding); o.Dim == dim && e == elem {
			return
		}
		dim, elem = o.Dim, wire.ElemBytes(o.Encoding)
		limit := regional.MemoryLimit(dim, slots, elem)
		debug.SetMemoryLimit(limit)
		logger.Info("memory limit set for the round's dimension", "dim", dim, "limit_mib", limit>>20)
	}
}

func runEdge(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	rf := newRoleFlags("edge", "usage: strata edge --region R [--nats URL] [--topology FILE] [--data DIR] [--trainer exec:CMD|unix:PATH|tcp:HOST:PORT] [--js-domain D]\n\nRuns the simulated clients of one region (each with its own NATS connection) until the job is done.\nWith --trainer, an external trainer (docs/trainer-protocol.md) trains them; the agent still clips,\nnoises and publishes. Their data is exported to DIR/shards for it.", stderr)
	region := rf.fs.String("region", "", "region whose clients to simulate (required)")
	data := rf.fs.String("data", "./strata-edge", "dir for the cached checkpoint")
	workers := rf.fs.Int("workers", runtime.GOMAXPROCS(0), "concurrent local trainings")
	keyFile := rf.fs.String("key-file", "", "key the global tier encrypts model blobs with (as strata global --key-file)")
	metricsAddr := metricsFlag(rf.fs)
	trainerSpec := rf.fs.String("trainer", "builtin", "who trains: builtin, exec:CMD ARGS (started by the agent, protocol on its stdin/stdout), unix:PATH or tcp:HOST:PORT (a trainer already listening)")
	trainerProcs := rf.fs.Int("trainer-procs", 1, "external trainer processes (or connections) used concurrently")
	trainerTimeout := rf.fs.Duration("trainer-timeout", 0, "bound on one external training call (default: the topology's round timeout)")
	jsDomain := rf.fs.String("js-domain", "", "JetStream domain of the servers holding the model store, when this fleet connects through a NATS leaf node without JetStream")
	if err := rf.parse(args); err != nil {
		return helpOK(err)
	}
	t, err := loadRegionTopology(*rf.topo, *region)
	if err != nil {
		return err
	}
	task, err := prepareTask(t, *data, stdout)
	if err != nil {
		return err
	}
	var ids []string
	var clients []edge.Client
	for _, r := range t.Regions {
		for i := 0; i < r.Clients; i++ {
			id := topology.ClientID(r.ID, i)
			ids = append(ids, id)
			if r.ID == *region {
				clients = append(clients, edge.Client{ID: id, Region: r.ID})
			}
		}
	}
	canaries := map[string][]float64{}
	for _, cc := range t.CanaryClients() {
		if cc.Region == *region {
			clients = append(clients, edge.Client{ID: cc.ID, Region: cc.Region})
			canaries[cc.ID] = empirical.Direction(t.CanarySeed(), cc.Index, len(task.Theta0))
		}
	}
	builtin, err := finetune.NewClientTrainer(task, ids)
	if err != nil {
		return err
	}
	var trainer edge.Trainer = builtin
	if *trainerSpec != "builtin" {
		remote, err := externalTrainer(task, builtin, clients, canaries, *trainerSpec, *data, *region, *trainerProcs, *trainerTimeout, t, rf.logger(stderr), stderr)
		if err != nil {
			return err
		}
		defer remote.Close()
		trainer = remote
	}
	ecol := metrics.NewEdge(*region)
	dialer, _, err := rf.dialer(t, "", "")
	if err != nil {
		return err
	}
	dialer.OnConnect = ecol.OnConnect
	var keys map[string]*identity.Key
	modelsDialer := dialer
	if *rf.secrets != "" {
		if keys, err = identity.LoadClients(*rf.secrets, *region); err != nil {
			return err
		}
		if len(keys) == 0 && len(clients) > 0 {
			return fmt.Errorf("edge %s: %s holds no client keys for the region; create them with `strata certs` or `strata enroll`", *region, *rf.secrets)
		}
		// The fleet reads models as one of its clients (read-only).
		modelsDialer = dialer.As(keys[clients[0].ID])
	}
	mc, err := modelsDialer.Connect("edge-models-" + *region)
	if err != nil {
		return err
	}
	defer mc.Close()
	models, err := mesh.ReadModelStoreDomain(ctx, mc, *jsDomain, t.Job)
	if err != nil {
		return err
	}
	key, err := roleKey(*keyFile)
	if err != nil {
		return err
	}
	models.SetKey(key)
	f, err := edge.NewFleet(edge.FleetConfig{Job: t.Job, Dialer: dialer, Clients: clients, Trainer: trainer, Models: models, Workers: *workers, Logger: rf.logger(stderr), Canaries: canaries, Keys: keys,
		Stream: edge.StreamConfig{ChunkBytes: t.DataPath.ChunkBytes, Encoding: t.DataPath.Encoding(), TopK: t.DataPath.TopK}})
	if err != nil {
		return err
	}
	ecol.SetFleet(f)
	obs := newObservers(ctx, stdout)
	defer obs.stop()
	reg := metrics.NewRegistry()
	reg.MustRegister(ecol)
	if err := obs.metrics(*metricsAddr, reg); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "edge %s: %d clients for job %s\n", *region, len(clients), t.Job)
	if err := f.Run(ctx); err != nil {
		return err
	}
	st := f.Stats()
	fmt.Fprintf(stdout, "edge %s: done: %d updates published, %d failed\n", *region, st.Published, st.Failed)
	return nil
}

// externalTrainer exports the region's (non-canary) clients' data (backbone, test set,
// one shard per client) to dir/shards and returns the agent's side of the
// trainer protocol for spec.
func externalTrainer(task *finetune.Task, builtin *finetune.ClientTrainer, clients []edge.Client, canaries map[string][]float64, spec, dir, region string, procs int, timeout time.Duration, t *topology.Topology, logger *slog.Logger, stderr io.Writer) (*trainerproto.Remote, error) {
	shards := filepath.Join(dir, "shards")
	var ids []string
	for _, c := range clients {
		if _, canary := canaries[c.ID]; !canary { // canaries never train
			ids = append(ids, c.ID)
		}
	}
	if err := builtin.Export(shards, ids); err != nil {
		return nil, err
	}
	layout := task.Model.Layout()
	tensors := make([]trainerproto.Tensor, len(layout))
	for i, l := range layout {
		tensors[i] = trainerproto.Tensor{Name: l.Name, Shape: l.Shape}
	}
	var personal []string
	if task.Config.Personal {
		personal = task.Model.PersonalTensors()
	}
	if timeout <= 0 {
		timeout = t.Round.Timeout.Duration
	}
	lc := task.Config.Local.WithDefaults()
	r, err := trainerproto.NewRemote(trainerproto.Config{Spec: spec, Agent: "strata edge " + region, Task: "mnist-adapter",
		Layout: tensors, Personal: personal, DataDir: shards, StateDir: filepath.Join(dir, "trainer-state"), Seed: t.Seed,
		Local: trainerproto.Local{Epochs: lc.Epochs, Batch: lc.Batch, LR: lc.LR, PersonalEpochs: task.Config.PersonalEpochs}, Timeout: timeout, Procs: procs,
		Stderr: stderr, Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("%w: --trainer: %v", errUsage, err)
	}
	return r, nil
}

// loadRegionTopology loads the topology and checks that it has the region.
func loadRegionTopology(path, region string) (*topology.Topology, error) {
	t, err := loadTopology(path)
	if err != nil {
		return nil, err
	}
	if !hasRegion(t, region) {
		return nil, fmt.Errorf("%w: --region %q is not in the topology (regions: %s)", errUsage, region, regionIDs(t))
	}
	return t, nil
}

func hasRegion(t *topology.Topology, id string) bool {
	for _, r := range t.Regions {
		if r.ID == id {
			return true
		}
	}
	return false
}

func regionIDs(t *topology.Topology) string {
	var ids []string
	for _, r := range t.Regions {
		ids = append(ids, r.ID)
	}
	return strings.Join(ids, ", ")
}
