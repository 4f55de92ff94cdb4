package bench

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/strata-fl/strata/mesh/wire"
)

// TestConfigsValidate checks every scenario's Validate, and that the
// scenario refuses a bad configuration with that error before doing any
// work.
func TestConfigsValidate(t *testing.T) {
	env := Env{Quick: true, TempDir: t.TempDir()}
	ctx := context.Background()
	dir := t.TempDir()
	geyer := GeyerRuns()[0]
	tests := []struct {
		name     string
		validate func() error
		run      func() error // nil: valid, not run
		wantErr  string       // "" means valid
	}{
		// UtilityConfig
		{"utility defaults", UtilityConfig{}.Validate, nil, ""},
		{"utility quick defaults", UtilityConfig{}.withDefaults(true).Validate, nil, ""},
		{"utility full defaults", UtilityConfig{}.withDefaults(false).Validate, nil, ""},
		{"utility run without name", UtilityConfig{Runs: []UtilityRun{{Clients: 10, Regions: 1}}}.Validate,
			func() error {
				_, err := Utility(ctx, env, UtilityConfig{Runs: []UtilityRun{{Clients: 10, Regions: 1}}})
				return err
			}, "UtilityConfig.Runs[0].Name"},
		{"utility runs with one name", UtilityConfig{Runs: []UtilityRun{geyer, geyer}}.Validate, nil, "UtilityConfig.Runs[1].Name \"geyer-k100\""},
		{"utility no clients", UtilityConfig{Runs: []UtilityRun{{Name: "a", Regions: 1}}}.Validate, nil, "UtilityConfig.Runs[0].Clients 0"},
		{"utility no regions", UtilityConfig{Runs: []UtilityRun{{Name: "a", Clients: 10}}}.Validate, nil, "UtilityConfig.Runs[0].Regions 0"},
		{"utility more regions than clients", UtilityConfig{Runs: []UtilityRun{{Name: "a", Clients: 2, Regions: 3}}}.Validate, nil, "UtilityConfig.Runs[0].Regions 3"},
		{"utility invalid topology", UtilityConfig{Runs: []UtilityRun{{Name: "a", Clients: 10, Regions: 1, Q: 2, Sigma: 1, Delta: 1e-5, Budget: 1, Rounds: 1, PerClient: 10}}}.Validate, nil, "UtilityConfig.Runs[0] (a): topology"},

		// IngestConfig
		{"ingest minimal", IngestConfig{StoreDir: dir}.Validate, nil, ""},
		{"ingest everything", IngestConfig{StoreDir: dir, Ns: []int{1}, Ds: []int{10}, ChunkBytes: MaxIngestChunk, Slots: 2, Window: 1, Encoding: wire.EncodingQ8, Conns: 1}.Validate, nil, ""},
		{"ingest no store", IngestConfig{}.Validate, func() error { _, err := Ingest(ctx, IngestConfig{}); return err }, "IngestConfig.StoreDir"},
		{"ingest zero clients", IngestConfig{StoreDir: dir, Ns: []int{10, 0}}.Validate,
			func() error { _, err := IngestScenario(ctx, env, IngestConfig{Ns: []int{10, 0}}); return err }, "IngestConfig.Ns[1] 0"},
		{"ingest zero dim", IngestConfig{StoreDir: dir, Ds: []int{0}}.Validate, nil, "IngestConfig.Ds[0] 0"},
		{"ingest negative chunk", IngestConfig{StoreDir: dir, ChunkBytes: -1}.Validate, nil, "IngestConfig.ChunkBytes -1"},
		{"ingest chunk above the payload", IngestConfig{StoreDir: dir, ChunkBytes: 8 << 20}.Validate, nil, "IngestConfig.ChunkBytes 8388608"},
		{"ingest negative slots", IngestConfig{StoreDir: dir, Slots: -1}.Validate, nil, "IngestConfig.Slots -1"},
		{"ingest negative window", IngestConfig{StoreDir: dir, Window: -1}.Validate, nil, "IngestConfig.Window -1"},
		{"ingest f64", IngestConfig{StoreDir: dir, Encoding: wire.EncodingF64}.Validate, nil, "IngestConfig.Encoding \"f64\""},
		{"ingest negative conns", IngestConfig{StoreDir: dir, Conns: -1}.Validate, nil, "IngestConfig.Conns -1"},

		// RoundConfig
		{"round defaults", RoundConfig{}.Validate, nil, ""},
		{"round everything", RoundConfig{Shapes: []Shape{{1, 2, 3}}, Rounds: 1, MaxND: 1e6}.Validate, nil, ""},
		{"round empty shape", RoundConfig{Shapes: []Shape{{1, 2, 3}, {1, 0, 3}}}.Validate,
			func() error {
				_, err := RoundScenario(ctx, env, RoundConfig{Shapes: []Shape{{1, 2, 3}, {1, 0, 3}}})
				return err
			}, "RoundConfig.Shapes[1] 1×0 clients"},
		{"round negative rounds", RoundConfig{Rounds: -1}.Validate, nil, "RoundConfig.Rounds -1"},
		{"round NaN max", RoundConfig{MaxND: math.NaN()}.Validate, nil, "RoundConfig.MaxND NaN"},
		{"round negative max", RoundConfig{MaxND: -1}.Validate, nil, "RoundConfig.MaxND -1"},

		// RegionConfig
		{"region minimal", RegionConfig{URL: "nats://x", Job: "j", Region: "r"}.Validate, nil, ""},
		{"region no URL", RegionConfig{Job: "j", Region: "r"}.Validate,
			func() error { return RegionMain(ctx, `{"job":"j","region":"r"}`, nil) }, "RegionConfig.URL"},
		{"region bad job", RegionConfig{URL: "nats://x", Job: "a.b", Region: "r"}.Validate, nil, "RegionConfig.Job \"a.b\""},
		{"region no region", RegionConfig{URL: "nats://x", Job: "j"}.Validate, nil, "Region \"\""},
		{"region negative slots", RegionConfig{URL: "nats://x", Job: "j", Region: "r", Slots: -1}.Validate, nil, "RegionConfig.Slots -1"},
		{"region negative window", RegionConfig{URL: "nats://x", Job: "j", Region: "r", Window: -2}.Validate, nil, "RegionConfig.Window -2"},
		{"region negative memory", RegionConfig{URL: "nats://x", Job: "j", Region: "r", MemoryLimit: -1}.Validate, nil, "RegionConfig.MemoryLimit -1"},

		// SecAggConfig
		{"secagg defaults", SecAggConfig{}.Validate, nil, ""},
		{"secagg everything", SecAggConfig{Ns: []int{2}, Ds: []int{1}, Dropout: 0.5, MaskSamples: 1, CompleteUpTo: -1}.Validate, nil, ""},
		{"secagg one client", SecAggConfig{Ns: []int{1}}.Validate,
			func() error { _, err := SecAggScenario(ctx, env, SecAggConfig{Ns: []int{1}}); return err }, "SecAggConfig.Ns[0] 1"},
		{"secagg zero dim", SecAggConfig{Ds: []int{0}}.Validate, nil, "SecAggConfig.Ds[0] 0"},
		{"secagg dropout 1", SecAggConfig{Dropout: 1}.Validate, nil, "SecAggConfig.Dropout 1"},
		{"secagg negative dropout", SecAggConfig{Dropout: -0.1}.Validate, nil, "SecAggConfig.Dropout -0.1"},
		{"secagg negative samples", SecAggConfig{MaskSamples: -1}.Validate, nil, "SecAggConfig.MaskSamples -1"},

		// ScaleConfig
		{"scale defaults", ScaleConfig{}.Validate, nil, ""},
		{"scale everything", ScaleConfig{Clients: []int{4}, Ds: []int{10}, MaxND: 1e3, Regions: 2, RegionSweep: []int{1, 4}, SweepClients: 4, SweepD: 10, Rounds: 1, GlobalNodes: 3}.Validate, nil, ""},
		{"scale no sweep", ScaleConfig{RegionSweep: []int{}}.Validate, nil, ""},
		{"scale fewer clients than regions", ScaleConfig{Clients: []int{5}}.Validate,
			func() error { _, err := Scale(ctx, env, ScaleConfig{Clients: []int{5}}); return err }, "ScaleConfig.Clients[0] 5: want 10.."},
		{"scale negative regions", ScaleConfig{Regions: -1}.Validate, nil, "ScaleConfig.Regions -1"},
		{"scale zero dim", ScaleConfig{Ds: []int{0}}.Validate, nil, "ScaleConfig.Ds[0] 0"},
		{"scale infinite max", ScaleConfig{MaxND: math.Inf(1)}.Validate, nil, "ScaleConfig.MaxND +Inf"},
		{"scale sweep beyond its clients", ScaleConfig{RegionSweep: []int{1, 20}, SweepClients: 10, SweepD: 10}.Validate, nil, "ScaleConfig.RegionSweep[1] 20"},
		{"scale sweep without d", ScaleConfig{RegionSweep: []int{1}, SweepClients: 10}.Validate, nil, "ScaleConfig.SweepD 0"},
		{"scale negative rounds", ScaleConfig{Rounds: -1}.Validate, nil, "ScaleConfig.Rounds -1"},
		{"scale negative nodes", ScaleConfig{GlobalNodes: -1}.Validate, nil, "ScaleConfig.GlobalNodes -1"},

		// synthConfig
		{"synth minimal", synthConfig{Regions: 1, PerRegion: 1, Dim: 1, Dir: dir}.Validate, nil, ""},
		{"synth no clients", synthConfig{Regions: 1, Dim: 1, Dir: dir}.Validate,
			func() error { _, err := runSynth(ctx, synthConfig{Regions: 1, Dim: 1, Dir: dir}); return err }, "synthConfig.PerRegion 0"},
		{"synth no regions", synthConfig{PerRegion: 1, Dim: 1, Dir: dir}.Validate, nil, "synthConfig.Regions 0"},
		{"synth no dim", synthConfig{Regions: 1, PerRegion: 1, Dir: dir}.Validate, nil, "synthConfig.Dim 0"},
		{"synth negative rounds", synthConfig{Regions: 1, PerRegion: 1, Dim: 1, Dir: dir, Rounds: -1}.Validate, nil, "synthConfig.Rounds -1"},
		{"synth rate above 1", synthConfig{Regions: 1, PerRegion: 1, Dim: 1, Dir: dir, Q: 1.5}.Validate, nil, "synthConfig.Q 1.5"},
		{"synth negative nodes", synthConfig{Regions: 1, PerRegion: 1, Dim: 1, Dir: dir, GlobalNodes: -1}.Validate, nil, "synthConfig.GlobalNodes -1"},
		{"synth no dir", synthConfig{Regions: 1, PerRegion: 1, Dim: 1}.Validate, nil, "synthConfig.Dir"},
		{"synth negative timeout", synthConfig{Regions: 1, PerRegion: 1, Dim: 1, Dir: dir, Timeout: -time.Second}.Validate, nil, "synthConfig.Timeout -1s"},

		// KernelConfig
		{"kernel defaults", KernelConfig{}.Validate, nil, ""},
		{"kernel zero dim", KernelConfig{Ds: []int{0}}.Validate,
			func() error { _, err := Kernel(ctx, env, KernelConfig{Ds: []int{0}}); return err }, "KernelConfig.Ds[0] 0"},
		{"kernel negative bytes", KernelConfig{Bytes: -1}.Validate, nil, "KernelConfig.Bytes -1"},
		{"kernel negative reps", KernelConfig{Reps: -1}.Validate, nil, "KernelConfig.Reps -1"},

		// FaultsConfig
		{"faults defaults", FaultsConfig{}.Validate, nil, ""},
		{"faults negative kills", FaultsConfig{LeaderKills: -1}.Validate,
			func() error { _, err := Faults(ctx, env, FaultsConfig{LeaderKills: -1}); return err }, "FaultsConfig.LeaderKills -1"},
		{"faults negative steady", FaultsConfig{Steady: -time.Second}.Validate, nil, "FaultsConfig.Steady -1s"},

		// AccountantConfig
		// ChaosConfig
		{"chaos defaults", ChaosConfig{}.Validate, nil, ""},
		{"chaos quick defaults", ChaosConfig{}.withDefaults(true).Validate, nil, ""},
		{"chaos negative rounds", ChaosConfig{Rounds: -1}.Validate,
			func() error { _, err := Chaos(ctx, env, ChaosConfig{Rounds: -1}); return err }, "ChaosConfig.Rounds -1"},
		{"chaos negative steady rounds", ChaosConfig{SteadyRounds: -2}.Validate, nil, "ChaosConfig.SteadyRounds -2"},
		{"accountant defaults", AccountantConfig{}.Validate, nil, ""},
		{"accountant zero rounds", AccountantConfig{Rounds: []int{0}}.Validate,
			func() error { _, err := Accountant(ctx, env, AccountantConfig{Rounds: []int{0}}); return err }, "AccountantConfig.Rounds[0] 0"},
		{"accountant zero clients", AccountantConfig{Clients: []int{10, 0}}.Validate, nil, "AccountantConfig.Clients[1] 0"},
		{"accountant negative ledger rounds", AccountantConfig{LedgerRounds: -1}.Validate, nil, "AccountantConfig.LedgerRounds -1"},
		{"accountant rate above 1", AccountantConfig{Q: 1.1}.Validate, nil, "AccountantConfig.Q 1.1"},
		{"accountant infinite sigma", AccountantConfig{Sigma: math.Inf(1)}.Validate, nil, "AccountantConfig.Sigma +Inf"},
		{"accountant delta 1", AccountantConfig{Delta: 1}.Validate, nil, "AccountantConfig.Delta 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check := func(what string, err error) {
				t.Helper()
				if tt.wantErr == "" {
					if err != nil {
						t.Fatalf("%s: got %v, want nil", what, err)
					}
					return
				}
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrConfig) {
					t.Fatalf("%s: got %v, want an ErrConfig naming %q", what, err, tt.wantErr)
				}
			}
			check("Validate", tt.validate())
			if tt.run != nil {
				check("the scenario", tt.run())
			}
		})
	}
}
