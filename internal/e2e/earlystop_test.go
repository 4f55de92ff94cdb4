package e2e

import (
	"context"
	"math"
	"testing"

	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/privacy/privacytest"
	"github.com/strata-fl/strata/roles"
	"github.com/strata-fl/strata/task"
)

// flatLoss reports the same evaluation loss for every model, so that a job
// with pacing.patience stops as soon as it may.
type flatLoss struct{ task.Evaluator }

func (f flatLoss) Evaluate(ctx context.Context, theta []float64) (task.Evaluation, error) {
	ev, err := f.Evaluator.Evaluate(ctx, theta)
	ev.Loss = 1
	return ev, err
}

// TestEarlyStopChargesThePlannedRun: a job that stops because its
// evaluation loss stopped improving chose its stopping time from its
// outputs, so ε after the rounds it ran is no guarantee. The ledger charges
// the planned run instead (stopping early is post-processing of it): the
// mesh's and every still-eligible client's ε are those of all planned
// rounds, and the true δ of the planned run, computed from first
// principles, holds at that ε. The ledger once reported ε after the rounds
// run (2 of 6 here), far below.
func TestEarlyStopChargesThePlannedRun(t *testing.T) {
	top := smallTopology(t)
	top.Train.Rounds = 6
	top.Privacy.Pacing.Patience = 1
	m, l := runMesh(t, roles.UpConfig{Topology: top,
		WrapEvaluator: func(e task.Evaluator) task.Evaluator { return flatLoss{e} }})
	if !l.Finished || l.CommittedRounds() != 2 {
		t.Fatalf("job finished %v after %d committed rounds (%q); want it stopped after 2", l.Finished, l.CommittedRounds(), l.FinishReason)
	}
	if l.Planned == nil || l.Planned.Rounds != 4 {
		t.Fatalf("planned charge %+v, want the 4 rounds not run", l.Planned)
	}
	dim := len(mnistOf(t, m).Theta0)
	proj, err := global.Project(top, dim)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range ledger.Observers {
		got, want := l.Spent(o), proj.Epsilon.Get(o)
		if !(got >= want*(1-1e-9)) && !(math.IsInf(want, 1) && math.IsInf(got, 1)) {
			t.Errorf("%s: ε after stopping early %v, below the planned run's %v", o, got, want)
		}
	}
	c, _ := l.Client("a-c00000")
	ce, err := l.ClientEpsilon(c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if ce.Public < proj.Epsilon.Public*(1-1e-9) {
		t.Errorf("client %s: public ε %v, below the planned run's %v", c.ID, ce.Public, proj.Epsilon.Public)
	}
	// First principles: 6 rounds of the subsampled Gaussian the public sees.
	n, mr, q := top.Privacy.Noise, float64(top.Privacy.MinRegions), top.Privacy.SamplingRate
	s := math.Sqrt(mr*n.Regional*n.Regional + n.Global*n.Global)
	pr := privacytest.Pair{
		LogP: func(x []float64) float64 {
			return privacytest.LogMix(q, privacytest.LogNormal(x[0], 1, s), privacytest.LogNormal(x[0], 0, s))
		},
		LogQ: func(x []float64) float64 { return privacytest.LogNormal(x[0], 0, s) },
		Grid: []privacytest.Axis{{Lo: -15 * s, Hi: 1 + 15*s, N: 100000}},
	}
	up, upRev, _ := pr.Losses(5e-4, 30, privacytest.Upper)
	if d := privacytest.ComposedDelta(up, upRev, top.Train.Rounds, l.Spent(ledger.Public)); d > top.Privacy.Delta {
		t.Errorf("true δ of the planned run at the reported ε %v is %.3g > %g", l.Spent(ledger.Public), d, top.Privacy.Delta)
	}
	lo, loRev, _ := pr.Losses(5e-4, 30, privacytest.Lower)
	ran := l.Rounds[len(l.Rounds)-1].EpsilonAfter.Public // what the ledger once reported
	if d := privacytest.ComposedDelta(lo, loRev, top.Train.Rounds, ran); !(d > top.Privacy.Delta) {
		t.Errorf("the planned run's true δ at the ε of the rounds run (%v) is %.3g: the test would not catch the old claim", ran, d)
	}
	t.Logf("stopped after 2 of 6 rounds: ε of the rounds run %.4f, reported (planned run) %.4f", ran, l.Spent(ledger.Public))
}
