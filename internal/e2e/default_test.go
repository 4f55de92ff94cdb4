package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/roles"
	"github.com/strata-fl/strata/topology"
)

// TestDefaultJobWithBudgetPacing runs the built-in default job (5000
// clients, 40 rounds) with budget pacing aimed at ε = 3: the public ε must
// end within 2% below the target and never above it, and the job must still
// fine-tune for real (the foundation's accuracy bars).
func TestDefaultJobWithBudgetPacing(t *testing.T) {
	// Not under -short: the full default job takes 40–60 s on 2 loaded
	// cores, a third of what -short may take; the budget invariants also
	// run in -short on the small mesh (budget_test.go).
	if testing.Short() {
		t.Skip("runs the full default job (~1 min)")
	}
	const target = 3.0
	top := topology.Default()
	top.Privacy.Pacing.TargetEpsilon = target
	if err := top.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	m, err := roles.Start(ctx, roles.UpConfig{Topology: top, DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Run(ctx); err != nil {
		t.Fatal(err)
	}
	l, err := m.Ledger()
	if err != nil {
		t.Fatal(err)
	}
	if l.CommittedRounds() != top.Train.Rounds {
		t.Fatalf("%d rounds committed, want %d", l.CommittedRounds(), top.Train.Rounds)
	}
	eps := l.Spent(ledger.Public)
	t.Logf("paced public ε %.6f (target %v)", eps, target)
	if eps > target || eps < 0.98*target {
		t.Fatalf("public ε %v, want within [%v, %v]", eps, 0.98*target, target)
	}
	pre, _, _ := mnistOf(t, m).Model.Evaluate(mnistOf(t, m).Theta0, mnistOf(t, m).Test)
	final, _, _ := mnistOf(t, m).Model.Evaluate(serving(t, m), mnistOf(t, m).Test)
	t.Logf("accuracy pre-trained %.4f, fine-tuned %.4f", pre, final)
	if final < 0.85 || final < pre+0.15 {
		t.Fatalf("accuracy %.4f after fine-tuning (pre-trained %.4f): want ≥ 0.85 and ≥ pre-trained + 0.15", final, pre)
	}
}
