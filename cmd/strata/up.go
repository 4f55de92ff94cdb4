package main

import (
	"context"
	"encoding/json"
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

	"github.com/strata-fl/strata/empirical"
	"github.com/strata-fl/strata/finetune"
	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/internal/seal"
	"github.com/strata-fl/strata/observe/metrics"
	"github.com/strata-fl/strata/standalone"
	"github.com/strata-fl/strata/topology"
)

// report is what `strata up` writes to <data>/report.json.
type report struct {
	Job                string                 `json:"job"`
	RoundsCompleted    int                    `json:"rounds_completed"`
	RoundsAborted      int                    `json:"rounds_aborted"`
	PlannedRounds      int                    `json:"planned_rounds"`
	AccuracyPretrained float64                `json:"accuracy_pretrained"`
	AccuracyFinal      float64                `json:"accuracy_final"`
	AccuracyNonprivate *float64               `json:"accuracy_nonprivate,omitempty"`
	Delta              float64                `json:"delta"`
	Epsilon            map[ledger.Observer]jf `json:"epsilon"`
	EpsilonNonprivate  map[ledger.Observer]jf `json:"epsilon_nonprivate,omitempty"`
	Budget             jf                     `json:"budget"`
	Noise              ledger.Noise           `json:"noise"`
	SamplingRate       float64                `json:"sampling_rate"`
	Clients            int                    `json:"clients"`
	ElapsedSeconds     float64                `json:"elapsed_seconds"`
	clientSummary
	empiricalFields
	// Personalisation is set when training.personal_head is on.
	Personalisation *personalSummary `json:"personalisation,omitempty"`
	Finished        bool             `json:"finished"`
	FinishReason    string           `json:"finish_reason,omitempty"`
	// htmlReport is where the HTML report went (not in report.json).
	htmlReport string
}

// jf writes ±Inf as "inf"/"-inf" in JSON (JSON has no infinity).
type jf = empirical.Float

// loadTopology loads the topology file at path, else the one $STRATA_TOPOLOGY
// names (containers set it once for every role), else the built-in one.
func loadTopology(path string) (*topology.Topology, error) {
	if path == "" {
		path = os.Getenv("STRATA_TOPOLOGY")
	}
	if path == "" {
		return topology.Default(), nil
	}
	return topology.Load(path)
}

func runUp(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "./strata-data", "data dir: NATS store, raft ledger, checkpoint, report.json")
	topo := fs.String("topology", "", "topology YAML file (default: $STRATA_TOPOLOGY, else the built-in one, see `strata topology default`)")
	baseline := fs.Bool("baseline", false, "also run the same job without noise and print it beside")
	verbose := fs.Bool("v", false, "log what every tier does")
	keyFile := fs.String("key-file", "", "AES-256 key (hex or base64) encrypting model blobs and ledger snapshots at rest; default $STRATA_KEY_FILE or $STRATA_KEY, else none")
	httpAddr := fs.String("http", "127.0.0.1:0", "serve the dashboard on host:port (port 0 picks a free one); off: none")
	metricsAddr := metricsFlag(fs)
	alerts := alertFlags(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: strata up [--data DIR] [--topology FILE] [--baseline] [--http ADDR] [--metrics ADDR]\n\nRuns a whole mesh in one process (embedded NATS, single-node raft global\ntier, regional aggregators, simulated clients) and a DP fine-tuning job on it.")
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
	t, err := loadTopology(*topo)
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
	mn, err := finetune.LoadMNIST("")
	if err != nil {
		return err
	}
	if err := alerts().WithDefaults(t.Round.Timeout.Seconds()).Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	rep, err := runJob(ctx, t, *data, mn, key, stdout, logger, &upObserve{http: *httpAddr, metrics: *metricsAddr, alerts: alerts()})
	if err != nil {
		return err
	}
	var base *report
	if *baseline {
		bt := t.Clone()
		bt.Job = t.Job + "-baseline"
		bt.Privacy.Noise = topology.Noise{}
		bt.Privacy.Budget = math.Inf(1)
		fmt.Fprintln(stdout, "\nbaseline: the same job without noise (ε = ∞)")
		if base, err = runJob(ctx, bt, filepath.Join(*data, "baseline"), mn, key, stdout, logger, nil); err != nil {
			return fmt.Errorf("baseline: %w", err)
		}
		rep.AccuracyNonprivate = &base.AccuracyFinal
		rep.EpsilonNonprivate = base.Epsilon
	}
	var auditErr error
	if t.Audit.Canaries > 0 {
		var a *standalone.PrivacyAudit
		if a, auditErr = auditPrivacy(ctx, t, *data, mn, key, 0.95, stdout); a != nil {
			rep.empiricalFields = fieldsOf(a)
			if rep.htmlReport != "" {
				if err := rewriteHTMLReport(t, *data, key, a); err != nil {
					return err
				}
			}
		} else if auditErr != nil {
			return auditErr
		}
	}
	rep.ElapsedSeconds = time.Since(start).Seconds()
	if err := writeReport(*data, rep); err != nil {
		return err
	}
	if auditErr != nil {
		return auditErr
	}
	printSummary(stdout, rep, base)
	fmt.Fprintf(stdout, "\nreport: %s\n", filepath.Join(*data, "report.json"))
	if rep.htmlReport != "" {
		fmt.Fprintf(stdout, "report (HTML, plots): %s\n", rep.htmlReport)
	}
	fmt.Fprintf(stdout, "ledger: strata ledger --data %s\n", *data)
	return nil
}

// upObserve says how strata up shows the job while it runs.
type upObserve struct {
	http, metrics string
	alerts        metrics.Alerts
}

// runJob runs (or resumes, or reports) one job in one data dir.
// With obs, it serves the dashboard and metrics while the job runs and
// writes the HTML report at the end.
func runJob(ctx context.Context, t *topology.Topology, dataDir string, mn *finetune.MNIST, key *seal.Key, stdout io.Writer, logger *slog.Logger, obs *upObserve) (*report, error) {
	status := func(format string, args ...any) { fmt.Fprintf(stdout, format+"\n", args...) }
	bar := progressBar(stdout)
	cfg := standalone.Config{Topology: t, DataDir: dataDir, MNIST: mn, Key: key, Progress: bar, Status: status, Logger: logger}
	if obs != nil {
		cfg.Alerts = obs.alerts
		if obs.metrics != "" {
			cfg.Registry = metrics.NewRegistry()
		}
	}
	m, err := standalone.Start(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	if obs != nil {
		if err := saveTopology(dataDir, t); err != nil {
			return nil, err
		}
		o := newObservers(ctx, stdout)
		defer o.stop()
		if err := o.metrics(obs.metrics, cfg.Registry); err != nil {
			return nil, err
		}
		if err := o.dashboard(obs.http, m.Tracker); err != nil {
			return nil, err
		}
	}
	pre, _, err := m.Task.Model.Evaluate(m.Task.Theta0, m.Task.Test)
	if err != nil {
		return nil, err
	}
	status("pre-trained checkpoint: accuracy %.4f on the clients' domain (%s digits, %d test images)", pre, t.Data.Shift, m.Task.Test.Len())
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
		return nil, errors.Join(runErr, err)
	}
	if runErr != nil {
		if errors.Is(runErr, context.Canceled) {
			return nil, fmt.Errorf("interrupted after %d committed rounds; everything is on disk in %s: run the same command to resume", l.CommittedRounds(), dataDir)
		}
		return nil, runErr
	}
	final, _, err := m.Task.Model.Evaluate(m.Theta(), m.Task.Test)
	if err != nil {
		return nil, err
	}
	rep := reportFrom(t, l, pre, final)
	if obs != nil {
		yaml, err := t.YAML()
		if err != nil {
			return nil, err
		}
		if rep.htmlReport, err = writeHTMLReport(l, yaml, filepath.Join(dataDir, "report"), nil, false); err != nil {
			return nil, err
		}
	}
	if t.Train.PersonalHead {
		per, err := m.Trainer.PersonalReport(m.Theta())
		if err != nil {
			return nil, err
		}
		rep.Personalisation = summarisePersonal(per)
	}
	return rep, nil
}

// personalSummary is the personalisation part of report.json: each
// personalised client's accuracy on its own evaluation data (held-out
// images with its label mix) with the global model and with its personal
// model (the global model with its head plus the client's private
// residual, finetune/personal.go). Clients never sampled have no
// head and are not listed. Heads live in memory: a resumed job reports
// only the clients trained since the restart.
type personalSummary struct {
	Clients      int                       `json:"clients"`
	MeanGlobal   float64                   `json:"mean_accuracy_global"`
	MeanPersonal float64                   `json:"mean_accuracy_personal"`
	Higher       int                       `json:"clients_personal_higher"`
	Equal        int                       `json:"clients_equal"`
	Lower        int                       `json:"clients_personal_lower"`
	PerClient    []finetune.ClientAccuracy `json:"per_client"`
}

func summarisePersonal(per []finetune.ClientAccuracy) *personalSummary {
	s := &personalSummary{Clients: len(per), PerClient: per}
	for _, c := range per {
		s.MeanGlobal += c.Global
		s.MeanPersonal += c.Personal
		switch {
		case c.Personal > c.Global:
			s.Higher++
		case c.Personal < c.Global:
			s.Lower++
		default:
			s.Equal++
		}
	}
	if len(per) > 0 {
		s.MeanGlobal /= float64(len(per))
		s.MeanPersonal /= float64(len(per))
	}
	return s
}

func reportFrom(t *topology.Topology, l *ledger.Ledger, pre, final float64) *report {
	rep := &report{
		Job: t.Job, RoundsCompleted: l.CommittedRounds(), PlannedRounds: t.Train.Rounds,
		AccuracyPretrained: pre, AccuracyFinal: final, Delta: t.Privacy.Delta,
		Epsilon: map[ledger.Observer]jf{}, Budget: jf(t.Privacy.Budget), Noise: ledger.Noise(t.Privacy.Noise),
		SamplingRate: t.Privacy.SamplingRate, Clients: t.Population(), Finished: l.Finished, FinishReason: l.FinishReason,
	}
	for _, r := range l.Rounds {
		if r.Status == "aborted" {
			rep.RoundsAborted++
		}
	}
	for _, o := range ledger.Observers {
		rep.Epsilon[o] = jf(l.Spent(o))
	}
	if cs, err := summariseClients(l); err == nil {
		rep.clientSummary = cs
	}
	return rep
}

func writeReport(dir string, rep *report) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(dir, "report.json")
	if err := os.WriteFile(path+".tmp", append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return os.Rename(path+".tmp", path)
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
		fmt.Fprintf(w, "[%s] round %3d  %3d/%d  participants %4d  accuracy %.4f  ε public %s%s\n",
			bar, r.Round, r.Committed, r.Planned, r.Participants, r.Accuracy, fmtEps(r.Epsilon.Public), note)
	}
}

func fmtEps(e float64) string {
	if math.IsInf(e, 1) {
		return "∞"
	}
	return fmt.Sprintf("%.4f", e)
}

func printSummary(w io.Writer, rep, base *report) {
	if base == nil {
		fmt.Fprintf(w, "\n  %-28s%s\n", "", "private")
	} else {
		fmt.Fprintf(w, "\n  %-28s%-16s%s\n", "", "private", "non-private (--baseline)")
	}
	row := func(name, a, b string) {
		if base == nil {
			fmt.Fprintf(w, "  %-28s%s\n", name, a)
			return
		}
		fmt.Fprintf(w, "  %-28s%-16s%s\n", name, a, b)
	}
	bf := func(f func(*report) string) string {
		if base == nil {
			return ""
		}
		return f(base)
	}
	row("accuracy, pre-trained", fmt.Sprintf("%.4f", rep.AccuracyPretrained), bf(func(r *report) string { return fmt.Sprintf("%.4f", r.AccuracyPretrained) }))
	row("accuracy, fine-tuned", fmt.Sprintf("%.4f", rep.AccuracyFinal), bf(func(r *report) string { return fmt.Sprintf("%.4f", r.AccuracyFinal) }))
	for _, o := range ledger.Observers {
		o := o
		row("ε "+string(o), fmtEps(float64(rep.Epsilon[o])), bf(func(r *report) string { return fmtEps(float64(r.Epsilon[o])) }))
	}
	row("δ", fmt.Sprintf("%g", rep.Delta), bf(func(r *report) string { return fmt.Sprintf("%g", r.Delta) }))
	row("rounds", fmt.Sprintf("%d/%d", rep.RoundsCompleted, rep.PlannedRounds), bf(func(r *report) string { return fmt.Sprintf("%d/%d", r.RoundsCompleted, r.PlannedRounds) }))
	row("time", fmt.Sprintf("%.1fs", rep.ElapsedSeconds), "")
	if p := rep.Personalisation; p != nil {
		fmt.Fprintf(w, "\n  personal heads: %d clients, on their own data (%d held-out images each, their label mix):\n", p.Clients, finetune.PersonalEvalExamples)
		fmt.Fprintf(w, "  %-28s%.4f\n  %-28s%.4f\n", "mean accuracy, global", p.MeanGlobal, "mean accuracy, personal", p.MeanPersonal)
		fmt.Fprintf(w, "  %-28s%d higher, %d equal, %d lower (per client in report.json)\n", "personal vs global", p.Higher, p.Equal, p.Lower)
	}
}
