package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/strata-fl/strata/audit"
	"github.com/strata-fl/strata/empirical"
	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/internal/seal"
	"github.com/strata-fl/strata/observe/metrics"
	htmlreport "github.com/strata-fl/strata/observe/report"
	"github.com/strata-fl/strata/roles"
	"github.com/strata-fl/strata/task"
	"github.com/strata-fl/strata/task/builtin"
	"github.com/strata-fl/strata/topology"
)

// jf writes ±Inf as "inf"/"-inf" in JSON (JSON has no infinity).
type jf = empirical.Float

// loadTopology loads the topology file at path, else the one $STRATA_TOPOLOGY
// names (containers set it once for every role), else the built-in one.
func loadTopology(path string) (*topology.Topology, error) {
	return loadTopologyFor(path, "")
}

// loadTopologyFor is loadTopology whose built-in topology is the named
// task's (topology.DefaultFor); a task with a topology file is an error,
// since the file's task section decides.
func loadTopologyFor(path, task string) (*topology.Topology, error) {
	if path == "" {
		path = os.Getenv("STRATA_TOPOLOGY")
	}
	if task != "" && path != "" {
		return nil, fmt.Errorf("%w: --task %s picks a built-in topology, and %s was given: drop --task (the file's task section decides) or the file", errUsage, task, path)
	}
	t, err := topology.DefaultFor(task)
	if err != nil {
		return nil, fmt.Errorf("%w: --task: %v", errUsage, err)
	}
	if path != "" {
		var err error
		if t, err = topology.Load(path); err != nil {
			return nil, err
		}
	}
	if err := builtin.Validate(t); err != nil {
		return nil, err
	}
	return t, nil
}

func runUp(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "./strata-data", "data dir: NATS store, raft ledger, checkpoint, report.json")
	topo := fs.String("topology", "", "topology YAML file (default: $STRATA_TOPOLOGY, else the built-in one, see `strata topology default`)")
	taskName := fs.String("task", "", "run the built-in topology of this task (mnist, lm: the job of examples/lm.yaml) instead of the default")
	baseline := fs.Bool("baseline", false, "also run the same job without noise and print it beside")
	verbose := fs.Bool("v", false, "log what every tier does")
	keyFile := fs.String("key-file", "", "AES-256 key (hex or base64) encrypting model blobs and ledger snapshots at rest; default $STRATA_KEY_FILE or $STRATA_KEY, else none")
	httpAddr := fs.String("http", "127.0.0.1:0", "serve the dashboard on host:port (port 0 picks a free one); off: none")
	metricsAddr := metricsFlag(fs)
	alerts := alertFlags(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: strata up [--data DIR] [--topology FILE | --task lm] [--baseline] [--http ADDR] [--metrics ADDR]\n\nRuns a whole mesh in one process (embedded NATS, single-node raft global\ntier, regional aggregators, simulated clients) and a DP fine-tuning job on it.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: up takes no arguments, got %q", errUsage, fs.Args())
	}
	t, err := loadTopologyFor(*topo, *taskName)
	if err != nil {
		return err
	}
	logger := slog.New(slog.DiscardHandler)
	if *verbose {
		logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	start := time.Now()
	fmt.Fprintf(stdout, "strata up: job %s, %d clients in %d regions, %d rounds, q=%g, noise ×C (C=%g): edge %g, regional %g, global %g; δ=%g, budget ε=%g\n",
		t.Job, t.Population(), len(t.Regions), t.Train.Rounds, t.Privacy.SamplingRate, t.Privacy.ClipNorm,
		t.Privacy.Noise.Edge, t.Privacy.Noise.Regional, t.Privacy.Noise.Global, t.Privacy.Delta, t.Privacy.Budget)
	if p := t.Audit.SecretPlan(); p.Secrets > 0 {
		fmt.Fprintf(stdout, "audit: %d Secret-Sharer secrets (%s + %d digits) planted %d× in the text of %d client(s) each; %d more never inserted\n", p.Secrets, topology.SecretPrefix, p.Digits, p.Repeats, p.Sharers, p.Secrets)
	}
	if k := t.Audit.Canaries; k > 0 {
		fmt.Fprintf(stdout, "audit: %d canary clients join the population (sampled and charged like any client; %d more directions stay unseen)\n", k, k)
	}
	if err := checkPlan(t, stdout); err != nil {
		return err
	}
	key, err := roleKey(*keyFile)
	if err != nil {
		return err
	}
	if err := alerts().WithDefaults(t.Round.Timeout.Seconds()).Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	rep, html, err := runJob(ctx, t, *data, key, stdout, logger, &upObserve{http: *httpAddr, metrics: *metricsAddr, alerts: alerts()})
	if err != nil {
		return err
	}
	var base *htmlreport.Summary
	if *baseline {
		bt := t.Clone()
		bt.Job = t.Job + "-baseline"
		bt.Privacy.Noise = topology.Noise{}
		bt.Privacy.TopUp = false
		bt.Privacy.Budget = math.Inf(1)
		fmt.Fprintln(stdout, "\nbaseline: the same job without noise (ε = ∞)")
		if base, _, err = runJob(ctx, bt, filepath.Join(*data, "baseline"), key, stdout, logger, nil); err != nil {
			return fmt.Errorf("baseline: %w", err)
		}
		rep.SetBaseline(base)
		if bt.Audit.Secrets > 0 {
			// The noise-off run beside the DP one: what the model memorises
			// when nothing protects the secrets.
			fmt.Fprintln(stdout, "\nbaseline (no noise):")
			if rep.SecretSharerBaseline, err = auditSecrets(ctx, bt, filepath.Join(*data, "baseline"), key, 0.95, stdout); err != nil {
				return fmt.Errorf("baseline: %w", err)
			}
		}
	}
	var auditErr error
	var emp *htmlreport.Empirical
	if t.Audit.Canaries > 0 {
		var a *audit.PrivacyAudit
		if a, auditErr = auditPrivacy(ctx, t, *data, key, 0.95, stdout); a != nil {
			rep.EmpiricalFields = htmlreport.FieldsOf(a)
			emp = htmlreport.EmpiricalOf(a)
		} else if auditErr != nil {
			return auditErr
		}
	}
	if t.Audit.Secrets > 0 && auditErr == nil {
		var sa *audit.SecretAudit
		if sa, auditErr = auditSecrets(ctx, t, *data, key, 0.95, stdout); sa == nil && auditErr != nil {
			return auditErr
		}
		rep.SecretSharer = sa
	}
	emp = emp.WithSecrets(rep.SecretSharer, rep.SecretSharerBaseline)
	if html != "" && (emp != nil || base != nil) {
		// Written when the job ended; again with what came after: the
		// baseline's held-out scores and the audits.
		if err := rewriteHTMLReport(t, *data, key, emp, htmlreport.HeldOutOf(rep)); err != nil {
			return err
		}
	}
	rep.ElapsedSeconds = time.Since(start).Seconds()
	if err := htmlreport.WriteSummary(*data, rep); err != nil {
		return err
	}
	if auditErr != nil {
		return auditErr
	}
	printSummary(stdout, rep, base)
	fmt.Fprintf(stdout, "\nreport: %s\n", htmlreport.SummaryFile(*data))
	if html != "" {
		fmt.Fprintf(stdout, "report (HTML, plots): %s\n", html)
	}
	fmt.Fprintf(stdout, "ledger: strata ledger --data %s\n", *data)
	return nil
}

// upObserve says how strata up shows the job while it runs.
type upObserve struct {
	http, metrics string
	alerts        metrics.Alerts
}

// runJob runs (or resumes, or reports) one job in one data dir. With obs,
// it serves the dashboard and metrics while the job runs and writes the
// HTML report at the end (its path is returned).
func runJob(ctx context.Context, t *topology.Topology, dataDir string, key *seal.Key, stdout io.Writer, logger *slog.Logger, obs *upObserve) (*htmlreport.Summary, string, error) {
	status := func(format string, args ...any) { fmt.Fprintf(stdout, format+"\n", args...) }
	cfg := roles.UpConfig{Topology: t, DataDir: dataDir, Key: key, Progress: progressBar(stdout), Status: status, Logger: logger}
	if obs != nil {
		cfg.Alerts = obs.alerts
		if obs.metrics != "" {
			cfg.Registry = metrics.NewRegistry()
		}
	}
	m, err := roles.Start(ctx, cfg)
	if err != nil {
		return nil, "", err
	}
	defer m.Close()
	if obs != nil {
		if err := saveTopology(dataDir, t); err != nil {
			return nil, "", err
		}
		o := newObservers(ctx, stdout)
		defer o.stop()
		if err := o.metrics(obs.metrics, cfg.Registry); err != nil {
			return nil, "", err
		}
		if err := o.dashboard(obs.http, m.Tracker()); err != nil {
			return nil, "", err
		}
	}
	pre, err := m.Final().Evaluate(ctx, m.Task.Initial())
	if err != nil {
		return nil, "", err
	}
	status("pre-trained checkpoint on the clients' held-out data: %s", fmtMetrics(pre))
	signed := "updates and partials signed by enrolled keys"
	if !t.Security.Signed() {
		signed = "UNSIGNED updates (security.unsigned)"
	}
	status("mesh secured: NATS with TLS and per-identity subject permissions on %s (secrets in %s; tools connect with --nats %s --secrets %s); %s",
		m.URL(), m.Secrets, m.URL(), m.Secrets, signed)
	if l, err := m.Ledger(); err == nil && l.Job != nil {
		status("resuming from %s: %d rounds committed, public ε %.4g", dataDir, l.CommittedRounds(), l.Spent(ledger.Public))
	}
	runErr := m.Run(ctx)
	l, err := m.Ledger()
	if err != nil {
		return nil, "", errors.Join(runErr, err)
	}
	if runErr != nil {
		if errors.Is(runErr, context.Canceled) {
			return nil, "", fmt.Errorf("interrupted after %d committed rounds; everything is on disk in %s: run the same command to resume", l.CommittedRounds(), dataDir)
		}
		return nil, "", runErr
	}
	theta, err := m.Serving(ctx)
	if err != nil {
		return nil, "", err
	}
	final, err := m.Final().Evaluate(ctx, theta)
	if err != nil {
		return nil, "", err
	}
	rep, err := htmlreport.Summarize(t, l, pre, final)
	if err != nil {
		return nil, "", err
	}
	var html string
	if obs != nil {
		yaml, err := t.YAML()
		if err != nil {
			return nil, "", err
		}
		if html, err = writeHTMLReport(l, yaml, filepath.Join(dataDir, "report"), nil, htmlreport.HeldOutOf(rep), false); err != nil {
			return nil, "", err
		}
	}
	if p, ok := m.Task.(task.Personal); ok {
		if rep.Personalisation, err = p.PersonalReport(ctx, theta); err != nil {
			return nil, "", err
		}
	}
	return rep, html, nil
}

// fmtMetrics writes an evaluation's metrics on one line.
func fmtMetrics(e task.Evaluation) string {
	var parts []string
	for _, m := range e.Metrics {
		parts = append(parts, fmt.Sprintf("%s %.4f", m.Name, m.Value))
	}
	return strings.Join(append(parts, fmt.Sprintf("loss %.4f", e.Loss)), ", ")
}

// progressBar prints one line per round with a bar over the planned rounds.
func progressBar(w io.Writer) func(global.RoundReport) {
	return func(r global.RoundReport) {
		const width = 20
		done := min(width, r.Committed*width/max(1, r.Planned))
		bar := strings.Repeat("█", done) + strings.Repeat("·", width-done)
		if r.Aborted != "" {
			fmt.Fprintf(w, "[%s] round %3d  ABORTED: %s (spend kept: ε public %.4g)\n", bar, r.Round, r.Aborted, r.Epsilon.Public)
			return
		}
		note := ""
		if r.GateFailed != "" {
			note = "  (not promoted: evaluation gate)"
		}
		if r.Retired > 0 {
			note += fmt.Sprintf("  (%d clients retired for budget)", r.Retired)
		}
		metric, v := r.Eval.Primary()
		fmt.Fprintf(w, "[%s] round %3d  %3d/%d  participants %4d  %s %.4f  ε public %s%s\n",
			bar, r.Round, r.Committed, r.Planned, r.Participants, metric, v, fmtEps(r.Epsilon.Public), note)
	}
}

func fmtEps(e float64) string {
	if math.IsInf(e, 1) {
		return "∞"
	}
	return fmt.Sprintf("%.4f", e)
}

func printSummary(w io.Writer, rep, base *htmlreport.Summary) {
	if base == nil {
		fmt.Fprintf(w, "\n  %-36s%s\n", "", "private")
	} else {
		fmt.Fprintf(w, "\n  %-36s%-16s%s\n", "", "private", "non-private (--baseline)")
	}
	row := func(name, a, b string) {
		if base == nil {
			fmt.Fprintf(w, "  %-36s%s\n", name, a)
			return
		}
		fmt.Fprintf(w, "  %-36s%-16s%s\n", name, a, b)
	}
	bf := func(f func(*htmlreport.Summary) string) string {
		if base == nil {
			return ""
		}
		return f(base)
	}
	for _, name := range htmlreport.MetricNames(rep.MetricsFinal) {
		row(name+", pre-trained", fmt.Sprintf("%.4f", rep.MetricsPretrained[name]), bf(func(r *htmlreport.Summary) string { return fmt.Sprintf("%.4f", r.MetricsPretrained[name]) }))
		row(name+", fine-tuned", fmt.Sprintf("%.4f", rep.MetricsFinal[name]), bf(func(r *htmlreport.Summary) string { return fmt.Sprintf("%.4f", r.MetricsFinal[name]) }))
	}
	for _, o := range ledger.Observers {
		row("ε "+string(o), fmtEps(float64(rep.Epsilon[o])), bf(func(r *htmlreport.Summary) string { return fmtEps(float64(r.Epsilon[o])) }))
	}
	row("δ", fmt.Sprintf("%g", rep.Delta), bf(func(r *htmlreport.Summary) string { return fmt.Sprintf("%g", r.Delta) }))
	row("rounds", fmt.Sprintf("%d/%d", rep.RoundsCompleted, rep.PlannedRounds), bf(func(r *htmlreport.Summary) string { return fmt.Sprintf("%d/%d", r.RoundsCompleted, r.PlannedRounds) }))
	row("time", fmt.Sprintf("%.1fs", rep.ElapsedSeconds), "")
	if p, ok := rep.Personalisation.(interface{ SummaryLines() []string }); ok {
		fmt.Fprintln(w)
		for _, line := range p.SummaryLines() {
			fmt.Fprintln(w, "  "+line)
		}
	}
}
