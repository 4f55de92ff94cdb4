package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"time"
)

// ErrConfig is wrapped by every error about a scenario's configuration.
var ErrConfig = errors.New("bench: invalid configuration")

// checkInts names the first element of v (the field) outside lo..hi.
func checkInts(field string, v []int, lo, hi int) error {
	for i, x := range v {
		if x < lo || x > hi {
			return fmt.Errorf("%w: %s[%d] %d: want %d..%d", ErrConfig, field, i, x, lo, hi)
		}
	}
	return nil
}

// finite reports whether x is neither NaN nor ±Inf.
func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

// Env is what every scenario gets from `strata bench`.
type Env struct {
	// Quick runs the scenario at small sizes (`--quick`: every scenario in
	// a few minutes at most).
	Quick bool
	// Progress receives progress bars (stderr); nil draws none.
	Progress io.Writer
	// TempDir holds the scenario's data dirs (NATS store, raft); required.
	TempDir string
	// Self returns the path of the strata binary, for scenarios that run
	// roles as child processes; default os.Executable.
	Self func() (string, error)
}

func (e Env) self() (string, error) {
	if e.Self != nil {
		return e.Self()
	}
	return os.Executable()
}

// Output is a scenario's result: the JSON report, its terminal tables and
// its figures.
type Output struct {
	Report  ScenarioReport
	Tables  []Table
	Figures []Figure
}

// begin fills the report's start fields.
func begin(name string, env Env, params any) Output {
	return Output{Report: ScenarioReport{Scenario: name, Quick: env.Quick, Started: time.Now().UTC(), LoadStart: LoadAvg(), Params: params}}
}

// end fills the report's end fields.
func (o *Output) end() {
	o.Report.Seconds = time.Since(o.Report.Started).Seconds()
	o.Report.LoadEnd = LoadAvg()
}

// SaveFigures writes the figures into dir and records their names.
func (o *Output) SaveFigures(dir string) error {
	for _, f := range o.Figures {
		names, err := f.Save(dir)
		if err != nil {
			return err
		}
		o.Report.Figures = append(o.Report.Figures, names...)
	}
	return nil
}

// Scenario is one `strata bench` scenario run with its defaults (or its
// quick sizes).
type Scenario struct {
	Name    string
	Summary string
	Run     func(ctx context.Context, env Env) (Output, error)
}

// Scenarios lists the suite in the order `--all` runs it.
func Scenarios() []Scenario {
	return []Scenario{
		{"kernel", "accumulation kernels beside a same-run memory read, d = 1e3…1e7", func(ctx context.Context, env Env) (Output, error) {
			return Kernel(ctx, env, KernelConfig{})
		}},
		{"ingest", "a region's ingest over real NATS beside raw NATS pub/sub of the same bytes", func(ctx context.Context, env Env) (Output, error) {
			return IngestScenario(ctx, env, IngestConfig{})
		}},
		{"accountant", "RDP and PLD accounting time vs rounds; per-client accounting vs clients in the ledger", func(ctx context.Context, env Env) (Output, error) {
			return Accountant(ctx, env, AccountantConfig{})
		}},
		{"round", "end-to-end round latency (no local training) over real NATS and raft, 1×10 … 10×1000 clients, d = 1e4…1e6", func(ctx context.Context, env Env) (Output, error) {
			return RoundScenario(ctx, env, RoundConfig{})
		}},
		{"scale", "up to 10 000 simulated clients in 10 regions in one process: cost vs N·d, memory, raft commit latency", func(ctx context.Context, env Env) (Output, error) {
			return Scale(ctx, env, ScaleConfig{})
		}},
		{"utility", "accuracy vs ε of the MNIST task, and the settings of Geyer, Klein and Nabi 2017", func(ctx context.Context, env Env) (Output, error) {
			return Utility(ctx, env, UtilityConfig{})
		}},
		{"secagg", "secure aggregation at one region: server and client cost vs n = 10…1000 and d = 1e4…1e6 beside a plain round, PRG beside AES-CTR", func(ctx context.Context, env Env) (Output, error) {
			return SecAggScenario(ctx, env, SecAggConfig{})
		}},
		{"lm", "the language-model task: trainer tokens/s beside same-run float32 GEMM, memory per client, bits per byte vs ε over 5 noise levels", func(ctx context.Context, env Env) (Output, error) {
			return LM(ctx, env, LMConfig{})
		}},
		{"faults", "leader and region kills of a mesh of processes: rounds completed, time to recover", func(ctx context.Context, env Env) (Output, error) {
			return Faults(ctx, env, FaultsConfig{})
		}},
		{"chaos", "a long seeded run of a mesh of processes under random kills and pauses: rounds/min beside undisturbed, time to recover per fault kind, the history checker's verdict", func(ctx context.Context, env Env) (Output, error) {
			return Chaos(ctx, env, ChaosConfig{})
		}},
	}
}

// ScenarioByName finds a scenario.
func ScenarioByName(name string) (Scenario, error) {
	var names []string
	for _, s := range Scenarios() {
		if s.Name == name {
			return s, nil
		}
		names = append(names, s.Name)
	}
	return Scenario{}, fmt.Errorf("unknown scenario %q: want one of %v", name, names)
}

// percentile returns the p-quantile (0…1) of v by linear interpolation.
func percentile(v []float64, p float64) float64 {
	s := sortedCopy(v)
	if len(s) == 0 {
		return 0
	}
	pos := p * float64(len(s)-1)
	lo := int(pos)
	if lo >= len(s)-1 {
		return s[len(s)-1]
	}
	f := pos - float64(lo)
	return s[lo]*(1-f) + s[lo+1]*f
}
