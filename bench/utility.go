package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/roles"
	"github.com/strata-fl/strata/task"
	"github.com/strata-fl/strata/task/builtin"
	"github.com/strata-fl/strata/topology"
)

// Geyer, Klein and Nabi 2017 ("Differentially Private Federated
// Learning: A Client Level Perspective"), Table 1: accuracy of their
// DP federated averaging on non-IID MNIST (two label shards per client)
// at ε = 8, as commonly cited. Their model is a CNN trained from scratch
// on ordinary digits; ours fine-tunes an adapter and head of a
// pre-trained MLP on inverted digits (docs/benchmarks.md states the
// differences).
const (
	geyerK100Accuracy  = 0.78
	geyerK1000Accuracy = 0.92
)

// UtilityRun is one job of the utility scenario.
type UtilityRun struct {
	Name         string  `json:"name"`
	Clients      int     `json:"clients"`
	Regions      int     `json:"regions"`
	Q            float64 `json:"q"`
	Sigma        float64 `json:"sigma"` // the public observer's noise multiplier as planned
	Delta        float64 `json:"delta"`
	Budget       float64 `json:"budget"`
	Rounds       int     `json:"rounds_planned"`
	Partition    string  `json:"partition"`
	PerClient    int     `json:"examples_per_client"`
	ServerLR     float64 `json:"server_lr"`
	NonPrivate   bool    `json:"non_private"` // also run without noise, same rounds
	PaperAcc     float64 `json:"paper_accuracy,omitempty"`
	PaperEpsilon float64 `json:"paper_epsilon,omitempty"`
}

// UtilityPoint is the model after one round: ε against the public
// observer (RDP, from the ledger) and accuracy on the evaluation subset.
type UtilityPoint struct {
	Round    int     `json:"round"`
	Epsilon  float64 `json:"epsilon"`
	Accuracy float64 `json:"accuracy_eval"`
}

// UtilityRow is one job's outcome.
type UtilityRow struct {
	UtilityRun
	RoundsDone         int            `json:"rounds_committed"`
	Epsilon            float64        `json:"epsilon"`
	AccuracyPretrained float64        `json:"accuracy_pretrained"` // full shifted test set
	AccuracyFinal      float64        `json:"accuracy_final"`      // full shifted test set
	AccuracyNonPrivate float64        `json:"accuracy_nonprivate,omitempty"`
	Seconds            float64        `json:"seconds"`
	Curve              []UtilityPoint `json:"curve"`
}

// UtilityConfig sizes the utility scenario.
type UtilityConfig struct {
	// Runs default to the accuracy–ε curves (1000 and 5000 clients, public
	// noise multiplier 0.5, 1 and 2, q = 0.05, 40 rounds) and the two
	// settings of Geyer et al. 2017 (quick: one small curve and both
	// Geyer settings cut to 3 rounds). Each needs a distinct name, at
	// least one client and 1..Clients regions, and must make a topology
	// that validates.
	Runs []UtilityRun
}

// Validate names the run and field that is wrong. No runs is valid: the
// defaults run.
func (c UtilityConfig) Validate() error {
	names := map[string]bool{}
	for i, r := range c.Runs {
		switch {
		case r.Name == "":
			return fmt.Errorf("%w: UtilityConfig.Runs[%d].Name is required", ErrConfig, i)
		case names[r.Name]:
			return fmt.Errorf("%w: UtilityConfig.Runs[%d].Name %q: another run has it", ErrConfig, i, r.Name)
		case r.Clients < 1:
			return fmt.Errorf("%w: UtilityConfig.Runs[%d].Clients %d: want ≥ 1", ErrConfig, i, r.Clients)
		case r.Regions < 1 || r.Regions > r.Clients:
			return fmt.Errorf("%w: UtilityConfig.Runs[%d].Regions %d: want 1..Clients (%d)", ErrConfig, i, r.Regions, r.Clients)
		}
		names[r.Name] = true
		for _, noise := range []bool{true, false} {
			if !noise && !r.NonPrivate {
				continue
			}
			if err := r.topology(noise).Validate(); err != nil {
				return fmt.Errorf("%w: UtilityConfig.Runs[%d] (%s): %w", ErrConfig, i, r.Name, err)
			}
		}
	}
	return nil
}

// GeyerRuns are the settings of Geyer, Klein and Nabi 2017, Table 1:
// non-IID MNIST with two label shards per client, noise multiplier 1,
// ε ≤ 8; K = 100 clients with 30 per round at δ = 1e-3 and K = 1000
// with 100 per round at δ = 1e-5. Rounds run until the next one would
// take ε past 8 (the ledger refuses it).
func GeyerRuns() []UtilityRun {
	return []UtilityRun{
		{Name: "geyer-k100", Clients: 100, Regions: 1, Q: 0.3, Sigma: 1, Delta: 1e-3, Budget: 8, Rounds: 1000, Partition: "shards",
			PerClient: 500, ServerLR: 1, NonPrivate: true, PaperAcc: geyerK100Accuracy, PaperEpsilon: 8},
		{Name: "geyer-k1000", Clients: 1000, Regions: 1, Q: 0.1, Sigma: 1, Delta: 1e-5, Budget: 8, Rounds: 1000, Partition: "shards",
			PerClient: 50, ServerLR: 1, NonPrivate: true, PaperAcc: geyerK1000Accuracy, PaperEpsilon: 8},
	}
}

// Only returns the default runs (full-size, or quick) that match which:
// "geyer" (the Geyer settings), "curves" (the rest) or a comma-separated
// list of run names; "" keeps them all. A positive serverLR replaces each
// run's server learning rate.
func (c UtilityConfig) Only(which string, quick bool, serverLR float64) (UtilityConfig, error) {
	c = c.withDefaults(quick)
	names := map[string]bool{}
	for _, n := range strings.Split(which, ",") {
		names[strings.TrimSpace(n)] = true
	}
	var runs []UtilityRun
	for _, r := range c.Runs {
		geyer := r.PaperAcc > 0
		if which == "" || (which == "geyer" && geyer) || (which == "curves" && !geyer) || names[r.Name] {
			if serverLR > 0 {
				r.ServerLR = serverLR
			}
			runs = append(runs, r)
		}
	}
	if len(runs) == 0 {
		var all []string
		for _, r := range c.Runs {
			all = append(all, r.Name)
		}
		return c, fmt.Errorf("%q matches no run: use geyer, curves or names among %v", which, all)
	}
	c.Runs = runs
	return c, nil
}

// withDefaults returns a copy of c with the default runs (full-size, or
// quick) when it has none.
func (c UtilityConfig) withDefaults(quick bool) UtilityConfig {
	if len(c.Runs) > 0 {
		return c
	}
	if quick {
		c.Runs = []UtilityRun{{Name: "curve-n300-z1", Clients: 300, Regions: 3, Q: 0.1, Sigma: 1, Delta: 1e-5, Budget: 1e6, Rounds: 3, PerClient: 10, ServerLR: 2}}
		for _, g := range GeyerRuns() {
			g.Rounds, g.NonPrivate = 3, false
			c.Runs = append(c.Runs, g)
		}
		return c
	}
	for _, n := range []int{1000, 5000} {
		for _, z := range []float64{0.5, 1, 2} {
			c.Runs = append(c.Runs, UtilityRun{Name: fmt.Sprintf("curve-n%d-z%s", n, strings.ReplaceAll(fmt.Sprint(z), ".", "p")), Clients: n, Regions: 3, Q: 0.05, Sigma: z, Delta: 1e-5,
				Budget: 1e6, Rounds: 40, PerClient: 10, ServerLR: 2})
		}
	}
	c.Runs = append(c.Runs, GeyerRuns()...)
	return c
}

func (r UtilityRun) topology(noise bool) *topology.Topology {
	t := &topology.Topology{Job: "utility-" + r.Name, Seed: 1}
	per := r.Clients / r.Regions
	for i := range r.Regions {
		n := per
		if i == r.Regions-1 {
			n = r.Clients - per*(r.Regions-1)
		}
		t.Regions = append(t.Regions, topology.Region{ID: fmt.Sprintf("r%d", i), Clients: n})
	}
	// All the noise at the global tier: the public observer's multiplier
	// is then exactly Sigma (before the sampler's sensitivity widening,
	// which the ledger charges).
	t.Privacy = topology.Privacy{SamplingRate: r.Q, Delta: r.Delta, Budget: r.Budget, Noise: topology.Noise{Global: r.Sigma}}
	if !noise {
		t.Job += "-nonprivate"
		t.Privacy.Noise = topology.Noise{}
		t.Privacy.Budget = math.Inf(1)
	}
	t.Train = topology.Training{Rounds: r.Rounds, ServerLR: r.ServerLR, GateMaxDrop: 1}
	t.Task = topology.Task{Name: "mnist", Options: map[string]any{"examples_per_client": r.PerClient}}
	if r.Partition != "" {
		t.Task.Options["partition"] = r.Partition
	}
	t.Round.Timeout.Duration = 10 * time.Minute
	t.ApplyDefaults()
	return t
}

// Utility runs the MNIST fine-tuning job of the standalone mesh (real
// NATS, real raft, the real regional and edge tiers) for each run and
// records accuracy against ε round by round.
func Utility(ctx context.Context, env Env, cfg UtilityConfig) (Output, error) {
	if err := cfg.Validate(); err != nil {
		return Output{}, err
	}
	cfg = cfg.withDefaults(env.Quick)
	out := begin("utility", env, cfg)
	total := 0
	for _, r := range cfg.Runs {
		total++
		if r.NonPrivate {
			total++
		}
	}
	bar := NewProgress(env.Progress, "utility", total)
	ckDir := filepath.Join(env.TempDir, "utility-checkpoint")
	var rows []UtilityRow
	for i, r := range cfg.Runs {
		row := UtilityRow{UtilityRun: r}
		start := time.Now()
		t := r.topology(true)
		if err := t.Validate(); err != nil {
			return out, fmt.Errorf("bench utility %s: %w", r.Name, err)
		}
		bar.Label("%s", r.Name)
		res, err := runUtilityJob(ctx, t, filepath.Join(env.TempDir, fmt.Sprintf("utility-%d", i)), ckDir, func(rep global.RoundReport) {
			metric, v := rep.Eval.Primary()
			bar.Label("%s: round %d, ε %.3g, %s %.3f", r.Name, rep.Round, rep.Epsilon.Public, metric, v)
		})
		if err != nil {
			return out, fmt.Errorf("bench utility %s: %w", r.Name, err)
		}
		bar.Step()
		row.RoundsDone, row.Epsilon, row.AccuracyPretrained, row.AccuracyFinal, row.Curve = res.rounds, res.eps, res.pre, res.final, res.curve
		if r.NonPrivate {
			bt := r.topology(false)
			bt.Train.Rounds = max(1, res.rounds)
			bar.Label("%s without noise, %d rounds", r.Name, bt.Train.Rounds)
			base, err := runUtilityJob(ctx, bt, filepath.Join(env.TempDir, fmt.Sprintf("utility-%d-np", i)), ckDir, nil)
			if err != nil {
				return out, fmt.Errorf("bench utility %s (non-private): %w", r.Name, err)
			}
			row.AccuracyNonPrivate = base.final
			bar.Step()
		}
		row.Seconds = time.Since(start).Seconds()
		rows = append(rows, row)
	}
	bar.Done()
	out.Report.Rows = rows
	out.Report.Summary = map[string]float64{}
	t := Table{Title: "utility: MNIST fine-tuning (adapter + head of a pre-trained MLP, inverted digits), accuracy on the full test set",
		Header: []string{"run", "clients", "q", "σ", "δ", "rounds", "ε (RDP)", "acc pre", "acc final", "acc non-private", "paper acc (ε)"}}
	fig := Figure{Name: "utility_curve", Title: "Accuracy vs ε (public observer)", XLabel: "ε (δ as in the run)", YLabel: "accuracy (eval subset)", LogX: true, LegendBottom: true}
	for _, r := range rows {
		np, paper := "-", "-"
		if r.NonPrivate {
			np = fmt.Sprintf("%.4f", r.AccuracyNonPrivate)
		}
		if r.PaperAcc > 0 {
			paper = fmt.Sprintf("%.2f (%g)", r.PaperAcc, r.PaperEpsilon)
			out.Report.Summary[r.Name+"_accuracy"] = r.AccuracyFinal
			out.Report.Summary[r.Name+"_epsilon"] = r.Epsilon
			out.Report.Summary[r.Name+"_paper_accuracy"] = r.PaperAcc
		}
		t.Add(r.Name, r.Clients, r.Q, r.Sigma, r.Delta, r.RoundsDone, r.Epsilon, r.AccuracyPretrained, r.AccuracyFinal, np, paper)
		s := Series{Name: r.Name}
		for _, p := range r.Curve {
			s.X, s.Y = append(s.X, p.Epsilon), append(s.Y, p.Accuracy)
		}
		fig.Series = append(fig.Series, s)
	}
	out.Tables = []Table{t}
	out.Figures = []Figure{fig}
	out.end()
	return out, nil
}

type utilityResult struct {
	rounds     int
	eps        float64
	pre, final float64
	curve      []UtilityPoint
}

// runUtilityJob runs one job to its planned rounds or to its budget. The
// pre-trained checkpoint is shared between runs through ckDir.
func runUtilityJob(ctx context.Context, t *topology.Topology, dir, ckDir string, onRound func(global.RoundReport)) (utilityResult, error) {
	var pre, final float64
	res, err := runUtilityJobWith(ctx, t, dir, ckDir, onRound, func(tk task.Task, initial, serving []float64) error {
		score := func(theta []float64) (float64, error) {
			ev, err := tk.Final().Evaluate(ctx, theta)
			if err != nil {
				return 0, err
			}
			acc, _ := ev.Get("accuracy")
			return acc, nil
		}
		var err error
		if pre, err = score(initial); err != nil {
			return err
		}
		final, err = score(serving)
		return err
	})
	res.pre, res.final = pre, final
	return res, err
}

// runUtilityJobWith runs the job and hands the prepared task, version 0
// and the serving version to evaluate.
func runUtilityJobWith(ctx context.Context, t *topology.Topology, dir, ckDir string, onRound func(global.RoundReport), evaluate func(tk task.Task, initial, serving []float64) error) (utilityResult, error) {
	var res utilityResult
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	tk, err := builtin.Prepare(ctx, t, builtin.Spec{CacheDir: ckDir})
	if err != nil {
		return res, err
	}
	m, err := roles.Start(ctx, roles.UpConfig{Topology: t, DataDir: dir, Task: tk, Progress: func(r global.RoundReport) {
		if r.Aborted == "" && !math.IsInf(r.Epsilon.Public, 0) {
			_, v := r.Eval.Primary()
			res.curve = append(res.curve, UtilityPoint{Round: int(r.Round), Epsilon: r.Epsilon.Public, Accuracy: v})
		}
		if onRound != nil {
			onRound(r)
		}
	}})
	if err != nil {
		return res, err
	}
	defer m.Close()
	runErr := m.Run(ctx)
	if runErr != nil && !errors.Is(runErr, global.ErrBudgetExhausted) {
		return res, runErr
	}
	l, err := m.Ledger()
	if err != nil {
		return res, err
	}
	res.rounds = l.CommittedRounds()
	for _, p := range res.curve {
		res.eps = p.Epsilon
	}
	if math.IsInf(res.eps, 0) {
		res.eps = 0 // a non-private run: its ε is not reported
	}
	theta, err := m.Serving(ctx)
	if err != nil {
		return res, err
	}
	return res, evaluate(tk, tk.Initial(), theta)
}
