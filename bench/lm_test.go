package bench

import (
	"context"
	"strings"
	"testing"
)

// TestLMScenario runs the lm scenario at its quick sizes with four noise
// levels: positive throughputs against the same run's GEMM, ε falling as
// σ rises, finite bits per byte, and a report bench check accepts.
func TestLMScenario(t *testing.T) {
	if testing.Short() {
		t.Skip("runs four small LM jobs")
	}
	out, err := LM(context.Background(), Env{Quick: true, TempDir: t.TempDir()}, LMConfig{Calls: 2, Sigmas: []float64{0, 0.7, 1, 2}})
	if err != nil {
		t.Fatal(err)
	}
	row := out.Report.Rows.([]LMRow)[0]
	tp := row.Throughput
	if !(tp.TokensPerSecond > 0 && tp.TrainGFLOPS > 0 && tp.MatmulGFLOPS > 0 && tp.Ratio > 0 && tp.AllocPerCall > 0) || tp.TokensPerCall <= 0 {
		t.Fatalf("throughput %+v: every figure must be positive", tp)
	}
	if len(row.Curve) != 4 {
		t.Fatalf("%d points, want 4", len(row.Curve))
	}
	for i, p := range row.Curve {
		if !(p.BitsFinal > 0 && p.BitsFinal < 8.5) || p.Rounds == 0 {
			t.Errorf("point %+v: want committed rounds and bits per byte in (0, 8.5)", p)
		}
		if i >= 2 && !(p.Epsilon < row.Curve[i-1].Epsilon) {
			t.Errorf("σ %g: ε %v not below σ %g's %v", p.Sigma, p.Epsilon, row.Curve[i-1].Sigma, row.Curve[i-1].Epsilon)
		}
	}
	if row.Curve[0].Epsilon != 0 || !(row.Curve[1].Epsilon > 0) {
		t.Errorf("ε: non-private %v (want 0, shown ∞), σ=0.7 %v (want > 0)", row.Curve[0].Epsilon, row.Curve[1].Epsilon)
	}
	checkOutput(t, out)
}

func TestLMConfigValidate(t *testing.T) {
	for name, c := range map[string]LMConfig{
		"negative clients": {Clients: -1},
		"q":                {Q: 2},
		"sigma":            {Sigmas: []float64{-1}},
	} {
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "LMConfig") {
			t.Errorf("%s: %v, want an error naming LMConfig", name, err)
		}
	}
	for _, q := range []bool{true, false} {
		c := LMConfig{}.withDefaults(q)
		for _, s := range c.Sigmas {
			if err := c.topology(s).Validate(); err != nil {
				t.Errorf("quick %v σ %g: %v", q, s, err)
			}
		}
	}
}
