package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/observe/dashboard"
	"github.com/strata-fl/strata/observe/metrics"
	htmlreport "github.com/strata-fl/strata/observe/report"
	"github.com/strata-fl/strata/topology"
)

// metricsFlag adds --metrics to a role's flags.
func metricsFlag(fs *flag.FlagSet) *string {
	return fs.String("metrics", "", "serve Prometheus metrics at http://ADDR/metrics (host:port; :0 picks a free port); empty: off")
}

// alertFlags adds the alert thresholds to a role's flags.
func alertFlags(fs *flag.FlagSet) func() metrics.Alerts {
	eps := fs.Float64("alert-epsilon-fraction", 0.9, "alert when ε against an observer reaches this fraction of its limit (budget, policy.max_epsilon)")
	rej := fs.Float64("alert-rejection-rate", 0.1, "alert when this share of a round's updates is rejected")
	lat := fs.Float64("alert-round-seconds", 0, "alert when a round takes longer than this to close (default 80% of round.timeout)")
	return func() metrics.Alerts {
		return metrics.Alerts{EpsilonFraction: *eps, RejectionRate: *rej, RoundSeconds: *lat}
	}
}

// observers runs a role's HTTP servers (metrics, dashboard) for as long as
// the role runs; stop shuts them down and waits for them.
type observers struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	stdout io.Writer
}

func newObservers(ctx context.Context, stdout io.Writer) *observers {
	o := &observers{stdout: stdout}
	o.ctx, o.cancel = context.WithCancel(ctx)
	return o
}

func (o *observers) stop() {
	o.cancel()
	o.wg.Wait()
}

// metrics binds addr now (so that a bad address fails the command at
// once) and serves reg until stop (no-op for an empty addr).
func (o *observers) metrics(addr string, reg *prometheus.Registry) error {
	if addr == "" {
		return nil
	}
	hs, err := metrics.Listen(addr, metricsMux(reg))
	if err != nil {
		return fmt.Errorf("%w: --metrics: %v", errUsage, err)
	}
	fmt.Fprintf(o.stdout, "metrics: %smetrics\n", hs.URL())
	o.run(hs)
	return nil
}

// dashboard serves the dashboard of tr on addr (no-op for "" or "off").
func (o *observers) dashboard(addr string, tr *metrics.Global) error {
	if addr == "" || addr == "off" {
		return nil
	}
	d, err := dashboard.New(dashboard.Config{Tracker: tr})
	if err != nil {
		return err
	}
	hs, err := metrics.Listen(addr, d)
	if err != nil {
		return fmt.Errorf("%w: --http: %v", errUsage, err)
	}
	fmt.Fprintf(o.stdout, "dashboard: %s\n", hs.URL())
	o.run(hs)
	return nil
}

func (o *observers) run(hs *metrics.HTTPServer) {
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		if err := hs.Serve(o.ctx); err != nil {
			fmt.Fprintf(o.stdout, "http server %s stopped: %v\n", hs.Addr(), err)
		}
	}()
}

// track runs a tracker until stop.
func (o *observers) track(tr *metrics.Global) {
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		tr.Run(o.ctx)
	}()
}

// ledgerDir finds the global node's state in a data dir: `strata up`
// keeps it under global/, `strata global` in the dir itself.
func ledgerDir(data string) (string, error) {
	for _, d := range []string{filepath.Join(data, "global"), data} {
		if _, err := os.Stat(filepath.Join(d, "raft", "raft.bolt")); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("%w: %s (give the --data of a strata up or strata global run)", global.ErrNoLedger, data)
}

// topologyFile is where strata up keeps the topology it ran, for reports.
const topologyFile = "topology.yaml"

func saveTopology(dir string, t *topology.Topology) error {
	b, err := t.YAML()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, topologyFile), b, 0o600)
}

// reportTopology returns the YAML of the topology the ledger's job ran:
// from path if given, else from the data dir; nil if neither exists or the
// data dir's is not the job's. A --topology of another job is refused,
// naming both hashes.
func reportTopology(l *ledger.Ledger, data, path string) ([]byte, error) {
	explicit := path != ""
	if !explicit {
		path = filepath.Join(data, topologyFile)
	}
	t, err := topology.Load(path)
	if err != nil {
		if !explicit && errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	h, err := t.Hash()
	if err != nil {
		return nil, err
	}
	if h != l.Job.ConfigHash {
		if !explicit {
			// Written by a later run that this ledger refused: leave it out.
			return nil, nil
		}
		return nil, fmt.Errorf("topology %s has config hash %.12s but job %s ran %.12s: pass the topology it ran (--topology), or none", path, h, l.Job.Name, l.Job.ConfigHash)
	}
	return t.YAML()
}

// writeHTMLReport writes the report of l into out and returns its path.
// emp, when set, is the job's empirical privacy audit.
func writeHTMLReport(l *ledger.Ledger, yaml []byte, out string, emp *htmlreport.Empirical, held *htmlreport.HeldOut, public bool) (string, error) {
	f, err := htmlreport.Write(out, htmlreport.Input{Ledger: l, TopologyYAML: yaml, Empirical: emp, HeldOut: held, Public: public})
	if err != nil {
		return "", err
	}
	return f.HTML, nil
}

func runReport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "./strata-data", "data dir of a stopped strata up (or strata global node)")
	out := fs.String("out", "", "where to write report.html and plots/ (default DATA/report)")
	topo := fs.String("topology", "", "topology the job ran (default DATA/topology.yaml, which strata up writes)")
	public := fs.Bool("public", false, "write the report the public may read: no exact counts of who took part, no per-client ε against operators (default out DATA/report-public)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: strata report [--data DIR] [--out DIR] [--topology FILE] [--public]\n\nWrites a self-contained HTML report (and PNG plots) of a job from its ledger. The default is the operators' report;\n--public withholds what would weaken the public's ε.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return helpOK(fmt.Errorf("%w: %v", errUsage, err))
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: report takes no arguments, got %q", errUsage, fs.Args())
	}
	dir, err := ledgerDir(*data)
	if err != nil {
		return err
	}
	key, err := dataKey()
	if err != nil {
		return err
	}
	l, err := global.ReadLedgerKey(dir, key)
	if err != nil {
		return err
	}
	if l.Job == nil {
		return fmt.Errorf("%w (%s)", htmlreport.ErrNoJob, *data)
	}
	yaml, err := reportTopology(l, *data, *topo)
	if err != nil {
		return err
	}
	if *out == "" {
		*out = filepath.Join(*data, "report")
		if *public {
			*out += "-public"
		}
	}
	emp, err := htmlreport.ReadEmpirical(*data)
	if err != nil {
		return err
	}
	held, err := htmlreport.ReadHeldOut(*data, l.Job.Name)
	if err != nil {
		return err
	}
	path, err := writeHTMLReport(l, yaml, *out, emp, held, *public)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "report: %s\n", path)
	return nil
}

// metricsMux serves reg at /metrics.
func metricsMux(reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics.Handler(reg))
	return mux
}
