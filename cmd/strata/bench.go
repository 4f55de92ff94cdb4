package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/strata-fl/strata/bench"
)

const benchUsage = `strata bench SCENARIO [--quick] [--json] [--plot DIR] [scenario flags]
strata bench --all [--quick] [--json] [--plot DIR]
strata bench check FILE        validate a --json results file (every figure finite)

scenarios: kernel, ingest, accountant, round, scale, utility, secagg, lm, faults, chaos
(strata bench SCENARIO -h lists a scenario's flags)`

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: %s", errUsage, benchUsage)
	}
	switch args[0] {
	case "region": // the region process of `bench ingest`, re-executed
		return bench.RegionMain(ctx, os.Getenv(bench.RegionEnv), stdout)
	case "check":
		if len(args) != 2 {
			return fmt.Errorf("%w: strata bench check FILE", errUsage)
		}
		f, err := os.Open(args[1])
		if err != nil {
			return err
		}
		defer f.Close()
		if err := bench.Check(f); err != nil {
			return fmt.Errorf("%s: %w", args[1], err)
		}
		fmt.Fprintf(stdout, "%s: valid, every figure finite\n", args[1])
		return nil
	}
	name := ""
	if !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("bench "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, benchUsage); fs.PrintDefaults() }
	all := fs.Bool("all", false, "run every scenario")
	quick := fs.Bool("quick", false, "small sizes: the whole suite in a few minutes")
	asJSON := fs.Bool("json", false, "print the results as JSON on stdout (tables go to stderr)")
	plotDir := fs.String("plot", "", "write PNG and SVG figures into this dir")
	noBars := fs.Bool("no-progress", false, "draw no progress bars")
	// Scenario flags; each applies to its scenario only.
	ns := fs.String("n", "", "ingest, secagg: client counts N, comma-separated (default 10,100,1000)")
	ds := fs.String("d", "", "ingest, kernel, scale, secagg: model dimensions, comma-separated")
	chunk := fs.Int("chunk", 1<<20, "ingest: bytes of update data per chunk (and per raw NATS message)")
	slots := fs.Int("slots", 0, "ingest: streams the region stages at once (0: the region's default)")
	window := fs.Int("window", 0, "ingest: unacknowledged chunks per client (0: 4)")
	enc := fs.String("encoding", "f32", "ingest: update encoding: f32, q8 or topk")
	conns := fs.Int("conns", 16, "ingest: NATS connections the simulated clients share")
	signed := fs.Bool("signed", false, "ingest: clients sign their streams and the region verifies them and hashes every byte, as in a production job")
	clients := fs.String("clients", "", "scale: total client counts, comma-separated (default 100,1000,10000)")
	maxND := fs.Float64("max-nd", 0, "round, scale: skip points whose clients × parameters exceed this (scale's default 1e9)")
	globalNodes := fs.Int("global-nodes", 0, "scale: raft nodes of the global tier (default 1; 3 runs them over TCP loopback in this process)")
	regions := fs.Int("regions", 0, "scale: regions the clients are spread over (default 10)")
	rounds := fs.Int("rounds", 0, "round, scale: rounds measured per point after a warm-up; chaos: rounds committed under faults (default 500, quick 30)")
	seed := fs.Uint64("seed", 0, "chaos: seed of the fault schedule (default 2026)")
	kills := fs.Int("kills", 0, "faults: leader kills (default 10)")
	only := fs.String("only", "", "utility: run only \"geyer\", only \"curves\", or the runs named (comma-separated)")
	serverLR := fs.Float64("server-lr", 0, "utility: the server learning rate of the runs (0: each run's own)")
	sigmas := fs.String("sigmas", "", "lm: noise multipliers of the privacy–utility jobs, comma-separated (0: non-private; default 0,0.5,0.7,1,2)")
	prof := fs.String("cpuprofile", "", "write a CPU profile of the bench process to this file")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected %q: give the scenario first, then flags", errUsage, fs.Arg(0))
	}
	var scenarios []bench.Scenario
	switch {
	case *all && name != "":
		return fmt.Errorf("%w: give a scenario or --all, not both", errUsage)
	case *all:
		scenarios = bench.Scenarios()
	case name == "":
		return fmt.Errorf("%w: %s", errUsage, benchUsage)
	default:
		s, err := bench.ScenarioByName(name)
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		scenarios = []bench.Scenario{s}
	}
	ints := func(flagName, s string) ([]int, error) {
		if s == "" {
			return nil, nil
		}
		v, err := parseInts(s)
		if err != nil {
			return nil, fmt.Errorf("--%s: %w", flagName, err)
		}
		return v, nil
	}
	nv, err := ints("n", *ns)
	if err != nil {
		return err
	}
	dv, err := ints("d", *ds)
	if err != nil {
		return err
	}
	cv, err := ints("clients", *clients)
	if err != nil {
		return err
	}

	// Scenario flags replace the defaults of the named scenario.
	for i, s := range scenarios {
		switch s.Name {
		case "ingest":
			cfg := bench.IngestConfig{Ns: nv, Ds: dv, ChunkBytes: *chunk, Slots: *slots, Window: *window, Encoding: *enc, Conns: *conns, Signed: *signed}
			scenarios[i].Run = func(ctx context.Context, env bench.Env) (bench.Output, error) {
				return bench.IngestScenario(ctx, env, cfg)
			}
		case "kernel":
			cfg := bench.KernelConfig{Ds: dv}
			scenarios[i].Run = func(ctx context.Context, env bench.Env) (bench.Output, error) { return bench.Kernel(ctx, env, cfg) }
		case "round":
			cfg := bench.RoundConfig{Rounds: *rounds, MaxND: *maxND}
			scenarios[i].Run = func(ctx context.Context, env bench.Env) (bench.Output, error) {
				return bench.RoundScenario(ctx, env, cfg)
			}
		case "scale":
			cfg := bench.ScaleConfig{Clients: cv, Ds: dv, Regions: *regions, Rounds: *rounds, MaxND: *maxND, GlobalNodes: *globalNodes}
			scenarios[i].Run = func(ctx context.Context, env bench.Env) (bench.Output, error) { return bench.Scale(ctx, env, cfg) }
		case "secagg":
			cfg := bench.SecAggConfig{Ns: nv, Ds: dv}
			scenarios[i].Run = func(ctx context.Context, env bench.Env) (bench.Output, error) {
				return bench.SecAggScenario(ctx, env, cfg)
			}
		case "lm":
			var cfg bench.LMConfig
			if *sigmas != "" {
				for _, f := range strings.Split(*sigmas, ",") {
					v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
					if err != nil {
						return fmt.Errorf("%w: --sigmas %q: %v (want numbers ≥ 0, e.g. 0,0.7,1,2)", errUsage, *sigmas, err)
					}
					cfg.Sigmas = append(cfg.Sigmas, v)
				}
			}
			scenarios[i].Run = func(ctx context.Context, env bench.Env) (bench.Output, error) { return bench.LM(ctx, env, cfg) }
		case "faults":
			cfg := bench.FaultsConfig{LeaderKills: *kills}
			scenarios[i].Run = func(ctx context.Context, env bench.Env) (bench.Output, error) { return bench.Faults(ctx, env, cfg) }
		case "chaos":
			cfg := bench.ChaosConfig{Rounds: *rounds, Seed: *seed}
			scenarios[i].Run = func(ctx context.Context, env bench.Env) (bench.Output, error) { return bench.Chaos(ctx, env, cfg) }
		case "utility":
			if *only != "" || *serverLR != 0 {
				o := *only
				scenarios[i].Run = func(ctx context.Context, env bench.Env) (bench.Output, error) {
					cfg, err := bench.UtilityConfig{}.Only(o, env.Quick, *serverLR)
					if err != nil {
						return bench.Output{}, fmt.Errorf("%w: --only: %v", errUsage, err)
					}
					return bench.Utility(ctx, env, cfg)
				}
			}
		}
	}
	if *plotDir != "" {
		if err := os.MkdirAll(*plotDir, 0o755); err != nil {
			return err
		}
	}
	if *prof != "" {
		f, err := os.Create(*prof)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	dir, err := os.MkdirTemp("", "strata-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	env := bench.Env{Quick: *quick, TempDir: dir}
	if !*noBars {
		env.Progress = stderr
	}
	tables := stdout
	if *asJSON {
		tables = stderr
	}
	rep := bench.Report{Machine: bench.DescribeMachine(), Command: "strata bench " + strings.Join(os.Args[2:], " ")}
	m := rep.Machine
	fmt.Fprintf(tables, "machine: %s; %d cores; %.1f GiB; %s; %s; load %.2f\n", m.CPUModel, m.Cores, float64(m.MemBytes)/(1<<30), strings.Join(m.CPUFlags, " "), m.GoVersion, bench.LoadAvg())
	start := time.Now()
	for _, s := range scenarios {
		sdir, err := os.MkdirTemp(dir, s.Name+"-")
		if err != nil {
			return err
		}
		env.TempDir = sdir
		out, err := s.Run(ctx, env)
		if env.Progress != nil {
			fmt.Fprintln(stderr)
		}
		if err != nil {
			return fmt.Errorf("bench %s: %w", s.Name, err)
		}
		if *plotDir != "" {
			if err := out.SaveFigures(*plotDir); err != nil {
				return err
			}
		}
		for _, t := range out.Tables {
			t.Write(tables)
		}
		fmt.Fprintf(tables, "(%s: %.0f s, load average %.2f → %.2f)\n", s.Name, out.Report.Seconds, out.Report.LoadStart, out.Report.LoadEnd)
		rep.Scenarios = append(rep.Scenarios, out.Report)
		os.RemoveAll(sdir)
	}
	if len(scenarios) > 1 {
		fmt.Fprintf(tables, "\n%d scenarios in %s\n", len(scenarios), time.Since(start).Round(time.Second))
	}
	if *plotDir != "" {
		fmt.Fprintf(tables, "figures in %s\n", *plotDir)
	}
	if *asJSON {
		e := json.NewEncoder(stdout)
		e.SetIndent("", "  ")
		if err := e.Encode(rep); err != nil {
			return fmt.Errorf("bench: results as JSON: %w", err)
		}
	}
	return nil
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || v < 1 || v != float64(int(v)) {
			return nil, fmt.Errorf("%w: %q is not a positive integer", errUsage, f)
		}
		out = append(out, int(v))
	}
	return out, nil
}
