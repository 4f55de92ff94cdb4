package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/strata-fl/strata/privacy"
)

func validReport() Report {
	return Report{
		Machine:   Machine{CPUModel: "cpu", Cores: 2, MemBytes: 1 << 30, GoVersion: "go1"},
		Scenarios: []ScenarioReport{{Scenario: "kernel", Seconds: 1, Rows: []KernelRow{{D: 10, AddManyGBs: 1}}, Summary: map[string]float64{"x": 1}}},
	}
}

func TestCheck(t *testing.T) {
	encode := func(r any) string {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	good := encode(validReport())
	if err := Check(strings.NewReader(good)); err != nil {
		t.Fatalf("a valid report: %v", err)
	}
	tests := []struct{ name, json, want string }{
		{"not JSON", "{", "not JSON"},
		{"no machine", `{"scenarios":[]}`, "machine"},
		{"no cores", strings.Replace(good, `"cores":2`, `"cores":0`, 1), "cores"},
		{"no scenarios", strings.Replace(good, `"scenarios":[`, `"scenarios":[],"x":[`, 1), "no scenarios"},
		{"no rows", strings.Replace(good, `"rows":[{`, `"rows":[],"y":[{`, 1), "no rows"},
		{"NaN as a string", strings.Replace(good, `"add_many_gb_s":1`, `"add_many_gb_s":"NaN"`, 1), "add_many_gb_s"},
		{"null figure", strings.Replace(good, `"add_many_gb_s":1`, `"add_many_gb_s":null`, 1), "add_many_gb_s"},
		{"Inf in the summary", strings.Replace(good, `"x":1`, `"x":"+Inf"`, 1), "summary.x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Check(strings.NewReader(tt.json))
			if !errors.Is(err, ErrCheck) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an ErrCheck naming %q", err, tt.want)
			}
		})
	}
	// A non-finite figure cannot even be encoded: the suite fails loudly
	// rather than writing a file that would pass.
	r := validReport()
	r.Scenarios[0].Rows = []KernelRow{{D: 10, AddManyGBs: math.NaN()}}
	if _, err := json.Marshal(r); err == nil {
		t.Fatal("a NaN figure encoded without error")
	}
}

func TestFitLogLog(t *testing.T) {
	x := []float64{1e3, 1e4, 1e5, 1e6}
	y := make([]float64, len(x))
	for i := range x {
		y[i] = 3 * math.Pow(x[i], 1.5)
	}
	s, a, r2 := FitLogLog(x, y)
	if math.Abs(s-1.5) > 1e-12 || math.Abs(a-math.Log(3)) > 1e-9 || math.Abs(r2-1) > 1e-12 {
		t.Fatalf("got slope %v intercept %v R² %v, want 1.5, ln 3, 1", s, a, r2)
	}
	if s, _, _ := FitLogLog([]float64{1}, []float64{1}); !math.IsNaN(s) {
		t.Fatalf("one point gave slope %v, want NaN", s)
	}
}

func TestPercentile(t *testing.T) {
	v := []float64{4, 1, 3, 2, 5}
	for _, c := range []struct{ p, want float64 }{{0, 1}, {0.5, 3}, {1, 5}, {0.25, 2}, {0.9, 4.6}} {
		if got := percentile(v, c.p); math.Abs(got-c.want) > 1e-12 {
			t.Fatalf("percentile(%v) = %v, want %v", c.p, got, c.want)
		}
	}
}

// TestAccountantScenario runs the scenario small and checks its figures
// against the accountants themselves: PLD is never looser than RDP, and
// every client of the ledger (eligible for every round) spent exactly the
// ε of the mesh's RDP schedule.
func TestAccountantScenario(t *testing.T) {
	cfg := AccountantConfig{Rounds: []int{5, 50}, Clients: []int{200}, LedgerRounds: 4}
	out, err := Accountant(context.Background(), Env{}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	rows := out.Report.Rows.([]AccountantRow)
	eps := map[string]map[int]float64{"rdp": {}, "pld": {}}
	for _, r := range rows {
		if r.Kind == "schedule" {
			eps[r.Accountant][r.Rounds] = r.Epsilon
		}
	}
	for _, n := range cfg.Rounds {
		if !(eps["pld"][n] <= eps["rdp"][n]) || !(eps["pld"][n] > 0) {
			t.Fatalf("%d rounds: PLD ε %v, RDP ε %v: want 0 < PLD ≤ RDP", n, eps["pld"][n], eps["rdp"][n])
		}
	}
	want, err := privacy.NewRDP().Epsilon([]privacy.Part{{Q: 0.05, Sigma: 1.04, Steps: 4}}, 1e-5)
	if err != nil {
		t.Fatal(err)
	}
	last := rows[len(rows)-1]
	if last.Kind != "ledger" || last.Clients != 200 || math.Abs(last.Epsilon-want) > 1e-9*want {
		t.Fatalf("ledger row %+v: want ε %v for every client", last, want)
	}
	checkOutput(t, out)
}

func TestKernelScenario(t *testing.T) {
	out, err := Kernel(context.Background(), Env{}, KernelConfig{Ds: []int{1000, 4096}, Bytes: 1 << 20, Reps: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range out.Report.Rows.([]KernelRow) {
		if !(r.AddManyGBs > 0 && r.MemreadGBs > 0 && r.PlainLoopGBs > 0) || r.Vectors < 2 {
			t.Fatalf("row %+v: every rate must be positive, at least 2 vectors", r)
		}
	}
	checkOutput(t, out)
}

// TestSynthRound runs a small synthetic mesh end to end (real NATS, raft
// with bolt, regions, an edge fleet) and checks that every client's
// update counted in every measured round.
func TestSynthRound(t *testing.T) {
	res, err := runSynth(t.Context(), synthConfig{Regions: 2, PerRegion: 3, Dim: 100, Rounds: 2, ProbeRaft: true, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if res.Participants != 6 || len(res.RoundSeconds) != 2 {
		t.Fatalf("participants %d, rounds measured %d: want 6 and 2", res.Participants, len(res.RoundSeconds))
	}
	for _, s := range res.RoundSeconds {
		if !(s > 0) {
			t.Fatalf("round took %v s", s)
		}
	}
	if res.PeakRSS <= 0 {
		t.Fatalf("peak RSS %d", res.PeakRSS)
	}
}

func checkOutput(t *testing.T, out Output) {
	t.Helper()
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(Report{Machine: DescribeMachine(), Scenarios: []ScenarioReport{out.Report}}); err != nil {
		t.Fatal(err)
	}
	if err := Check(&buf); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := out.SaveFigures(dir); err != nil {
		t.Fatal(err)
	}
	if len(out.Report.Figures) == 0 {
		t.Fatal("no figure written")
	}
	var tb bytes.Buffer
	for _, tab := range out.Tables {
		tab.Write(&tb)
	}
	if tb.Len() == 0 {
		t.Fatal("no table")
	}
}

// TestUtilityRunsAreValidTopologies checks every default run (full and
// quick) makes a topology that validates: a run name is part of the job
// name, which must be a NATS subject token.
func TestUtilityRunsAreValidTopologies(t *testing.T) {
	for _, quick := range []bool{false, true} {
		for _, r := range (UtilityConfig{}).withDefaults(quick).Runs {
			for _, noise := range []bool{true, false} {
				if err := r.topology(noise).Validate(); err != nil {
					t.Errorf("run %s (noise %v): %v", r.Name, noise, err)
				}
			}
		}
	}
}

// TestSecAggScenario runs the secagg scenario at small sizes: every point
// has a session with the dropped clients' masks removed (more expansions
// than survivors), positive times and rates, and a valid report.
func TestSecAggScenario(t *testing.T) {
	out, err := SecAggScenario(context.Background(), Env{Quick: true, TempDir: t.TempDir()}, SecAggConfig{Ns: []int{10, 20}, Ds: []int{1000, 4000}, MaskSamples: 1})
	if err != nil {
		t.Fatal(err)
	}
	rows := out.Report.Rows.([]SecAggRow)
	if len(rows) != 4 {
		t.Fatalf("%d rows, want 4", len(rows))
	}
	for _, r := range rows {
		if r.Survivors != r.N-int(0.3*float64(r.N)) || r.Expansions <= r.Survivors || r.K < r.T || r.T < 1 {
			t.Fatalf("row %+v: want 30%% dropped, their masks removed (expansions > survivors), k ≥ t ≥ 1", r)
		}
		if !(r.ServerS > 0 && r.PlainS > 0 && r.ClientMaskS > 0 && r.ClientKeysS > 0 && r.PRGGBs > 0 && r.AESCTRGBs > 0 && r.CompleteS > 0) {
			t.Fatalf("row %+v: every time and rate must be positive", r)
		}
		if r.CompleteExpansions < r.Expansions {
			t.Fatalf("row %+v: the complete graph expanded fewer masks than SecAgg+'s k-regular graph", r)
		}
	}
	if _, ok := out.Report.Summary["server_loglog_slope_vs_nlog2n_d"]; !ok {
		t.Fatalf("summary %v lacks the fitted slope", out.Report.Summary)
	}
	checkOutput(t, out)
}
