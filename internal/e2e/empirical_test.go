package e2e

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/strata-fl/strata/audit"
	"github.com/strata-fl/strata/empirical"
	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/roles"
	"github.com/strata-fl/strata/topology"
)

// TestEmpiricalPrivacy runs the default job (5000 clients, 40 rounds) with
// 1000 canary clients twice: with the noise off the canaries must be
// detected (ε estimate ≥ 5, lower bound > 0); with the default noise the
// estimate must stay below the ledger's ε. In both, the ledger's ε must not
// be below the lower bound: if it is, the accounting or the implementation
// is wrong.
func TestEmpiricalPrivacy(t *testing.T) {
	// Not under -short: two runs of the default job take minutes.
	if testing.Short() {
		t.Skip("runs the default job twice (~2.5 min)")
	}
	const canaries = 1000
	for _, c := range []struct {
		name  string
		noise bool
	}{{"noise off", false}, {"default noise", true}} {
		t.Run(c.name, func(t *testing.T) {
			top := topology.Default()
			top.Audit.Canaries = canaries
			if !c.noise {
				top.Privacy.Noise = topology.Noise{}
				top.Privacy.Budget = math.Inf(1)
			}
			if err := top.Validate(); err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
			defer cancel()
			var maxParticipants int
			m, err := roles.Start(ctx, roles.UpConfig{Topology: top, DataDir: dir, Progress: func(r global.RoundReport) {
				maxParticipants = max(maxParticipants, r.Participants)
			}})
			if err != nil {
				t.Fatal(err)
			}
			runErr := m.Run(ctx)
			l, lerr := m.Ledger()
			tk := m.Task
			m.Close()
			if err := errors.Join(runErr, lerr); err != nil {
				t.Fatal(err)
			}
			checkCanariesAccounted(t, l, top)
			a, err := audit.Privacy(ctx, audit.Config{DataDir: dir, Topology: top, Task: tk})
			if errors.Is(err, empirical.ErrBelowLowerBound) {
				t.Fatalf("FAIL LOUDLY: %v", err)
			}
			if err != nil {
				t.Fatal(err)
			}
			lb := a.LowerBound
			t.Logf("%s: ledger ε %.4g; ε estimate all iterates %.4g (null %+.4g±%.4g, inserted %+.4g±%.4g), final model %.4g (null ±%.4g, unseen %+.4g±%.4g, inserted %+.4g±%.4g); lower bound %.4g at %.0f%% (%s, %d/%d inserted vs %d/%d unseen); MIA AUC %.4f, TPR %.4f at FPR %.2f",
				c.name, a.LedgerEpsilon, a.EmpiricalEpsilon, a.AllIterates.Null.Mu, a.AllIterates.Null.Sigma, a.AllIterates.Observed.Mu, a.AllIterates.Observed.Sigma,
				a.Final.Epsilon, a.Final.Null.Sigma, a.Final.Unseen.Mu, a.Final.Unseen.Sigma, a.Final.Observed.Mu, a.Final.Observed.Sigma,
				lb.Epsilon, 100*lb.Confidence, a.LowerBoundStatistic, lb.Hits, lb.Inserted, lb.False, lb.Unseen, a.MIA.AUC, a.MIA.TPRAtFPR, a.MIA.FPR)
			if maxParticipants > top.Population() {
				t.Errorf("a round reported %d participants, more than the %d real clients: canaries counted", maxParticipants, top.Population())
			}
			if !c.noise {
				if a.EmpiricalEpsilon < 5 || lb.Epsilon <= 0 {
					t.Errorf("noise off: ε estimate %.4g (want ≥ 5), lower bound %.4g (want > 0): the canaries were not detected", a.EmpiricalEpsilon, lb.Epsilon)
				}
				return
			}
			if !(a.EmpiricalEpsilon < a.LedgerEpsilon) {
				t.Errorf("default noise: ε estimate %.4g is not below the ledger's ε %.4g", a.EmpiricalEpsilon, a.LedgerEpsilon)
			}
		})
	}
}

// checkCanariesAccounted checks that every canary was enrolled and charged
// like any client.
func checkCanariesAccounted(t *testing.T, l *ledger.Ledger, top *topology.Topology) {
	t.Helper()
	byID := map[string]ledger.Client{}
	for _, c := range l.Clients {
		byID[c.ID] = c
	}
	real, err := l.ClientEpsilon(topology.ClientID(top.Regions[0].ID, 0))
	if err != nil {
		t.Fatal(err)
	}
	sampled := 0
	for _, cc := range top.CanaryClients() {
		c, ok := byID[cc.ID]
		if !ok {
			t.Fatalf("canary %s is not enrolled in the ledger", cc.ID)
		}
		sampled += len(c.Sampled)
		// Public ε composes over the rounds a client was eligible for, so
		// a canary enrolled with everyone is charged exactly what a real
		// client is.
		e, err := l.ClientEpsilon(cc.ID)
		if err != nil {
			t.Fatal(err)
		}
		if e.Public != real.Public || c.Budget != top.Privacy.Budget {
			t.Fatalf("canary %s: public ε %v, budget %v; a real client's ε %v, the budget %v", cc.ID, e.Public, c.Budget, real.Public, top.Privacy.Budget)
		}
	}
	// Every round opened sampled, aborted ones included.
	rounds := len(l.Rounds)
	want := top.Privacy.SamplingRate * float64(rounds*top.Audit.Canaries)
	t.Logf("canaries sampled %d times in %d rounds (%d committed; expected %.0f)", sampled, rounds, l.CommittedRounds(), want)
	// Poisson sampling: the count has standard deviation ≤ √want; 6 of
	// them is a false alarm below 1e-8.
	if math.Abs(float64(sampled)-want) > 6*math.Sqrt(want) {
		t.Errorf("canaries sampled %d times, expected %.0f ± %.0f", sampled, want, 6*math.Sqrt(want))
	}
}
