package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/identity"
	"github.com/strata-fl/strata/mesh"
	"github.com/strata-fl/strata/observe/metrics"
	htmlreport "github.com/strata-fl/strata/observe/report"
	"github.com/strata-fl/strata/roles"
	"github.com/strata-fl/strata/task"
	"github.com/strata-fl/strata/task/builtin"
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
	cluster := fs.String("cluster", "", "HOST:PORT to take routes from the other servers of a NATS cluster on (JetStream clustered; with --name and --routes); empty: a lone server")
	routes := fs.String("routes", "", "the other cluster servers' route URLs, nats-route://HOST:PORT,... (with --cluster)")
	name := fs.String("name", "", "this server's name, unique in its cluster (with --cluster)")
	leafListen := fs.String("leaf-listen", "", "HOST:PORT: also listen for consortium sites' leaf nodes (with --secrets each needs its leaf credentials from `strata certs --leaf-sites`); the server's JetStream domain is then \""+mesh.HubDomain+"\"")
	leafOf := fs.String("leaf-of", "", "run a site's leaf node of the hub at this URL (its leafnode port, nats-leaf://HOST:PORT): the site's regional node and clients connect here; no JetStream")
	leafRegion := fs.String("region", "", "with --leaf-of and --secrets: the site's region, whose leaf credentials connect to the hub and whose identities are admitted")
	if err := fs.Parse(args); err != nil {
		return helpOK(fmt.Errorf("%w: %v", errUsage, err))
	}
	if *leafRegion != "" && *leafOf == "" {
		return fmt.Errorf("%w: --region is for a site's leaf node: give --leaf-of URL too", errUsage)
	}
	cfg := roles.NATSConfig{StoreDir: *data, Host: *host, Port: *port, Secrets: *secrets, LeafListen: *leafListen, LeafOf: *leafOf, LeafRegion: *leafRegion}
	switch {
	case *cluster != "":
		cfg.Cluster = &mesh.ClusterConfig{ServerName: *name, Listen: *cluster}
		for _, r := range strings.Split(*routes, ",") {
			if r = strings.TrimSpace(r); r != "" {
				cfg.Cluster.Routes = append(cfg.Cluster.Routes, r)
			}
		}
	case *routes != "" || *name != "":
		return fmt.Errorf("%w: --routes and --name need --cluster HOST:PORT", errUsage)
	}
	if *secrets != "" {
		t, err := loadTopology(*topo)
		if err != nil {
			return err
		}
		cfg.Job = t.Job
	}
	n, err := roles.StartNATS(cfg)
	if err != nil {
		return usageIf(err)
	}
	mode := "open (no TLS, no authorization)"
	if *secrets != "" {
		mode = fmt.Sprintf("TLS, %d identities authorized", n.Users)
	}
	if cfg.Cluster != nil {
		mode += fmt.Sprintf("; server %s of a cluster, routes on %s to %s", *name, *cluster, strings.Join(cfg.Cluster.Routes, ","))
	}
	switch {
	case *leafOf != "":
		fmt.Fprintf(stdout, "nats leaf node of site %s ready on %s, connecting to the hub at %s (%s)\n", *leafRegion, n.Server.ClientURL(), *leafOf, mode)
	case *leafListen != "":
		url, err := mesh.LeafURL(n.Server)
		if err != nil {
			n.Close()
			return err
		}
		fmt.Fprintf(stdout, "nats server ready on %s, leaf nodes on %s (JetStream store %s, domain %s; %s)\n", n.Server.ClientURL(), url, *data, mesh.HubDomain, mode)
	default:
		fmt.Fprintf(stdout, "nats server ready on %s (JetStream store %s; %s)\n", n.Server.ClientURL(), *data, mode)
	}
	obs := newObservers(ctx, stdout)
	defer obs.stop()
	reg := metrics.NewRegistry()
	reg.MustRegister(metrics.NewNATS(n.Server))
	if err := obs.metrics(*metricsAddr, reg); err != nil {
		n.Close()
		return err
	}
	return n.Run(ctx)
}

func runGlobal(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "members" {
		return runMembers(ctx, args[1:], stdout, stderr)
	}
	rf := newRoleFlags("global", "usage: strata global --id ID --raft-bind HOST:PORT --data DIR [--peers ID=ADDR,...] [--nats URL] [--topology FILE]\n       strata global members add|remove|list ...\n\nRuns one node of the raft-replicated global tier; the leader coordinates rounds.", stderr)
	id := rf.fs.String("id", "g1", "this node's id in the raft configuration")
	bind := rf.fs.String("raft-bind", "127.0.0.1:7001", "raft transport address")
	data := rf.fs.String("data", "./strata-global", "data dir: raft log, snapshots, the task's cache")
	peers := rf.fs.String("peers", "", "initial voters ID=HOST:PORT,... (this node included); empty joins later via `strata global members add`")
	keyFile := rf.fs.String("key-file", "", "AES-256 key (hex or base64) encrypting model blobs, ledger snapshots and the raft log at rest; default $STRATA_KEY_FILE or $STRATA_KEY, else none")
	metricsAddr := metricsFlag(rf.fs)
	httpAddr := rf.fs.String("http", "", "serve the dashboard on host:port (port 0 picks a free one); empty: none")
	alerts := alertFlags(rf.fs)
	replicas := rf.fs.Int("replicas", 1, "how many servers of the NATS cluster keep each model version (3 on a 3-server cluster survives losing one)")
	if err := rf.parse(args); err != nil {
		return helpOK(err)
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
	tk, err := prepareTask(ctx, t, *data, stdout)
	if err != nil {
		return err
	}
	key, err := roleKey(*keyFile)
	if err != nil {
		return err
	}
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
	g, err := roles.NewGlobal(ctx, roles.GlobalConfig{ID: *id, DataDir: *data, Bind: *bind, Peers: ps, Key: key, Dialer: d,
		Topology: t, Task: tk, Identities: ids, Replicas: *replicas, ExitWhenFinished: true, Progress: progressBar(stdout),
		Track: *metricsAddr != "" || *httpAddr != "", Alerts: alerts(), EvaluatorStderr: stderr, Logger: logger})
	if err != nil {
		return usageIf(err)
	}
	defer g.Close()
	fmt.Fprintf(stdout, "global %s: raft on %s, NATS %s, job %s\n", *id, *bind, *rf.natsURL, t.Job)
	if err := saveTopology(*data, t); err != nil { // for strata report
		return err
	}
	if tr := g.Tracker(); tr != nil {
		obs := newObservers(ctx, stdout)
		defer obs.stop()
		reg := metrics.NewRegistry()
		reg.MustRegister(tr)
		if err := obs.metrics(*metricsAddr, reg); err != nil {
			return err
		}
		if err := obs.dashboard(*httpAddr, tr); err != nil {
			return err
		}
	}
	if err := g.Run(ctx); err != nil {
		return err
	}
	st := g.Node().Status()
	if !st.Finished {
		return nil // stopped by a signal: everything is on disk
	}
	fmt.Fprintf(stdout, "global %s: job finished with %d rounds committed (applied index %d)\n", *id, st.Committed, st.Applied)
	rep, err := g.Summary(ctx)
	if err != nil {
		return fmt.Errorf("global %s: report: %w", *id, err)
	}
	if err := htmlreport.WriteSummary(*data, rep); err != nil {
		return err
	}
	printSummary(stdout, rep, nil)
	fmt.Fprintf(stdout, "\nreport: %s\n", htmlreport.SummaryFile(*data))
	return nil
}

// usageIf marks a role's configuration error as a usage error.
func usageIf(err error) error {
	if errors.Is(err, roles.ErrConfig) {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return err
}

// prepareTask prepares the topology's task (its checkpoint pre-trained
// once, cached in dir; pre-training is deterministic, so every role
// derives the same one).
func prepareTask(ctx context.Context, t *topology.Topology, dir string, stdout io.Writer) (task.Task, error) {
	return builtin.Prepare(ctx, t, builtin.Spec{CacheDir: dir, Logf: func(f string, a ...any) { fmt.Fprintf(stdout, f+"\n", a...) }})
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
	r, err := roles.NewRegional(roles.RegionalConfig{Region: *region, Dialer: d, Key: key, Topology: t, SizeMemory: true, Logger: rf.logger(stderr)})
	if err != nil {
		return usageIf(err)
	}
	defer r.Close()
	obs := newObservers(ctx, stdout)
	defer obs.stop()
	reg := metrics.NewRegistry()
	reg.MustRegister(r.Metrics())
	if err := obs.metrics(*metricsAddr, reg); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "regional %s: aggregating job %s\n", *region, t.Job)
	if err := r.Run(ctx); err != nil {
		return err
	}
	st := r.Runner().Stats()
	fmt.Fprintf(stdout, "regional %s: done: %d updates accepted, %d partials, rejected %v\n", *region, st.Accepted, st.Partials, st.Rejected)
	return nil
}

func runEdge(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	rf := newRoleFlags("edge", "usage: strata edge --region R [--nats URL] [--topology FILE] [--data DIR] [--trainer exec:CMD|unix:PATH|tcp:HOST:PORT] [--js-domain D]\n\nRuns the simulated clients of one region (each with its own NATS connection) until the job is done.\nWith --trainer, an external trainer (docs/trainer-protocol.md) trains them; the agent still clips,\nnoises and publishes. Their data is exported to DIR/shards for it.", stderr)
	region := rf.fs.String("region", "", "region whose clients to simulate (required)")
	data := rf.fs.String("data", "./strata-edge", "dir for the task's cache")
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
	tk, err := prepareTask(ctx, t, *data, stdout)
	if err != nil {
		return err
	}
	logger := rf.logger(stderr)
	var trainer task.Trainer
	if *trainerSpec != "builtin" {
		remote, err := externalTrainer(tk, t, *region, *trainerSpec, *data, *trainerProcs, *trainerTimeout, logger, stderr)
		if err != nil {
			return err
		}
		defer remote.Close()
		trainer = remote
	}
	dialer, _, err := rf.dialer(t, "", "")
	if err != nil {
		return err
	}
	var keys map[string]*identity.Key
	if *rf.secrets != "" {
		if keys, err = identity.LoadClients(*rf.secrets, *region); err != nil {
			return err
		}
		if len(keys) == 0 && len(roles.Clients(t, *region)) > 0 {
			return fmt.Errorf("edge %s: %s holds no client keys for the region; create them with `strata certs` or `strata enroll`", *region, *rf.secrets)
		}
	}
	key, err := roleKey(*keyFile)
	if err != nil {
		return err
	}
	e, err := roles.NewEdge(ctx, roles.EdgeConfig{Region: *region, Dialer: dialer, Keys: keys, Topology: t, Task: tk, Trainer: trainer,
		ModelKey: key, JSDomain: *jsDomain, Workers: *workers, Logger: logger})
	if err != nil {
		return usageIf(err)
	}
	defer e.Close()
	obs := newObservers(ctx, stdout)
	defer obs.stop()
	reg := metrics.NewRegistry()
	reg.MustRegister(e.Metrics())
	if err := obs.metrics(*metricsAddr, reg); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "edge %s: %d clients for job %s\n", *region, len(roles.Clients(t, *region)), t.Job)
	runErr := make(chan error, 1)
	go func() { runErr <- e.Run(ctx) }()
	select {
	case <-e.Fleet().Ready():
		// Whoever starts the job after the fleets may wait for this line.
		fmt.Fprintf(stdout, "edge %s: every client connected and subscribed\n", *region)
		err = <-runErr
	case err = <-runErr:
	}
	if err != nil {
		return err
	}
	st := e.Fleet().Stats()
	fmt.Fprintf(stdout, "edge %s: done: %d updates published, %d failed\n", *region, st.Published, st.Failed)
	return nil
}

// externalTrainer exports the region's (non-canary) clients' data to
// dir/shards and returns the agent's side of the trainer protocol for
// spec.
func externalTrainer(tk task.Task, t *topology.Topology, region, spec, dir string, procs int, timeout time.Duration, logger *slog.Logger, stderr io.Writer) (*trainerproto.Remote, error) {
	ext, ok := tk.(task.External)
	if !ok {
		return nil, fmt.Errorf("%w: --trainer: task %s cannot be trained by an external trainer", errUsage, tk.Name())
	}
	var ids []string
	for _, r := range t.Regions {
		if r.ID == region {
			for i := 0; i < r.Clients; i++ {
				ids = append(ids, topology.ClientID(r.ID, i)) // canaries never train
			}
		}
	}
	shards := filepath.Join(dir, "shards")
	if err := ext.Export(shards, ids); err != nil {
		return nil, err
	}
	layout := tk.Layout()
	tensors := make([]trainerproto.Tensor, len(layout))
	for i, l := range layout {
		tensors[i] = trainerproto.Tensor{Name: l.Name, Shape: l.Shape}
	}
	if timeout <= 0 {
		timeout = t.Round.Timeout.Duration
	}
	rc := ext.Recipe()
	r, err := trainerproto.NewRemote(trainerproto.Config{Spec: spec, Agent: "strata edge " + region, Task: rc.Task,
		Layout: tensors, Personal: rc.Personal, DataDir: shards, StateDir: filepath.Join(dir, "trainer-state"), Seed: t.Seed,
		Local: trainerproto.Local{Epochs: rc.Epochs, Batch: rc.Batch, LR: rc.LR, PersonalEpochs: rc.PersonalEpochs}, Timeout: timeout, Procs: procs,
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
	for _, r := range t.Regions {
		if r.ID == region {
			return t, nil
		}
	}
	var ids []string
	for _, r := range t.Regions {
		ids = append(ids, r.ID)
	}
	return nil, fmt.Errorf("%w: --region %q is not in the topology (regions: %s)", errUsage, region, strings.Join(ids, ", "))
}
