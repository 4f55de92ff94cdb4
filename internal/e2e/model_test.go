package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/roles"
	"github.com/strata-fl/strata/task"
)

// sabotage reports a collapsed accuracy for the n-th evaluation (the
// checkpoint is evaluation 0), so that round's model must fail the gate.
type sabotage struct {
	task.Evaluator
	n     int
	calls *int
}

func (s sabotage) Evaluate(ctx context.Context, theta []float64) (task.Evaluation, error) {
	ev, err := s.Evaluator.Evaluate(ctx, theta)
	*s.calls++
	if *s.calls-1 == s.n {
		return task.Evaluation{Loss: 99, Metrics: []task.Metric{{Name: "accuracy", Value: -1, HigherIsBetter: true}}}, err
	}
	return ev, err
}

// TestGateAndRollback: a version that fails the evaluation gate is recorded
// but never served; a rollback makes an old version serve new rounds again
// and leaves the ledger's spend exactly as it was.
func TestGateAndRollback(t *testing.T) {
	top := smallTopology(t)
	top.Train.Rounds = 5
	// A lenient gate: only the sabotaged evaluation (accuracy −1) fails it,
	// whatever the noise does to this tiny job's accuracy.
	top.Train.GateMaxDrop = 0.9
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	calls := 0
	runCtx, stop := context.WithCancel(ctx)
	m, err := roles.Start(ctx, roles.UpConfig{Topology: top, DataDir: dir,
		WrapEvaluator: func(e task.Evaluator) task.Evaluator { return sabotage{e, 2, &calls} },
		Progress: func(r global.RoundReport) {
			if r.Round == 3 {
				stop() // pause the job after round 3
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	m.Run(runCtx)
	t.Logf("paused after %v", time.Since(t0))
	l, _ := m.Ledger()
	if len(l.Models) != 3 {
		t.Fatalf("%d models after the pause, want 3", len(l.Models))
	}
	if l.Models[1].Promoted || l.Models[1].GateReason == "" {
		t.Fatalf("v2 (sabotaged evaluation) should have failed the gate: %+v", l.Models[1])
	}
	if l.Rounds[2].ModelVersion != 1 {
		t.Fatalf("round 3 trained from v%d, want v1 (v2 failed the gate)", l.Rounds[2].ModelVersion)
	}
	if !l.Models[2].Promoted || l.ServingVersion() != 3 {
		t.Fatalf("v3 should serve: serving v%d, v3 %+v", l.ServingVersion(), l.Models[2])
	}
	spent := l.Spent(ledger.Public)
	curve := l.Curve(ledger.Public)
	if err := m.Node().Rollback(ctx, 1, "test"); err != nil {
		t.Fatal(err)
	}
	if err := m.Node().Rollback(ctx, 2, "test"); err == nil {
		t.Fatal("rolled back to a version that failed the gate")
	}
	l2, _ := m.Ledger()
	if l2.Spent(ledger.Public) != spent || l2.ServingVersion() != 1 {
		t.Fatalf("after rollback: spent %v (was %v), serving v%d", l2.Spent(ledger.Public), spent, l2.ServingVersion())
	}
	for i, v := range l2.Curve(ledger.Public) {
		if v != curve[i] {
			t.Fatal("rollback changed the RDP curve")
		}
	}
	m.Close()
	t.Logf("closed after %v", time.Since(t0))

	// Resume: the next round trains from v1.
	m2, err := roles.Start(ctx, roles.UpConfig{Topology: top, DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	t.Logf("restarted after %v", time.Since(t0))
	if err := m2.Run(ctx); err != nil {
		t.Fatal(err)
	}
	l3, _ := m2.Ledger()
	var resumed *ledger.RoundEntry
	for i := range l3.Rounds {
		if l3.Rounds[i].Round > 3 && l3.Rounds[i].Status == "committed" {
			resumed = &l3.Rounds[i]
			break
		}
	}
	if resumed == nil || resumed.ModelVersion != 1 {
		t.Fatalf("first round after the rollback: %+v, want it to train from v1", resumed)
	}
	if l3.Spent(ledger.Public) < spent {
		t.Fatal("spend went down after rollback")
	}
}
