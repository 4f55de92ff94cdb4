package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/strata-fl/strata/roles"
	"github.com/strata-fl/strata/task/mnist"
	"github.com/strata-fl/strata/topology"
)

// TestDefaultJobPersonalised runs the built-in default job (5000 clients,
// 40 rounds) with personal heads, and again without (plain DP-FedAvg), and
// compares on every personalised client's own data (held-out images with
// its label mix): the personal model must beat both the global model of
// the same job and the global model of the plain job, on average and for
// most clients.
func TestDefaultJobPersonalised(t *testing.T) {
	// Not under -short: two runs of the default job take minutes.
	if testing.Short() {
		t.Skip("runs the full default job twice (~2.5 min)")
	}
	run := func(personal bool) *roles.Up {
		top := topology.Default()
		setTask(top, "personal_head", personal)
		// The default job takes about a minute on an idle machine; allow for
		// a loaded one.
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		t.Cleanup(cancel)
		m, err := roles.Start(ctx, roles.UpConfig{Topology: top, DataDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		if err := m.Run(ctx); err != nil {
			t.Fatal(err)
		}
		acc, _, _ := mnistOf(t, m).Model.Evaluate(serving(t, m), mnistOf(t, m).Test)
		t.Logf("personal_head=%v: global model accuracy on the whole test set %.4f", personal, acc)
		return m
	}
	pm := run(true)
	per, err := trainerOf(t, pm).PersonalReport(serving(t, pm))
	if err != nil {
		t.Fatal(err)
	}
	pm.Close()
	ids := make([]string, len(per))
	for i, c := range per {
		ids[i] = c.Client
	}
	fm := run(false)
	fedavg, err := trainerOf(t, fm).GlobalReport(serving(t, fm), ids)
	if err != nil {
		t.Fatal(err)
	}
	var meanP, meanG, meanF float64
	var higherG, higherF int
	for i := range per {
		meanP += per[i].Personal
		meanG += per[i].Global
		meanF += fedavg[i].Global
		if per[i].Personal > per[i].Global {
			higherG++
		}
		if per[i].Personal > fedavg[i].Global {
			higherF++
		}
	}
	n := float64(len(per))
	meanP, meanG, meanF = meanP/n, meanG/n, meanF/n
	t.Logf("%d personalised clients, %d images each of their own label mix: mean accuracy personal %.4f, global (same job) %.4f, global (DP-FedAvg job) %.4f; personal higher for %d and %d clients",
		len(per), mnist.PersonalEvalExamples, meanP, meanG, meanF, higherG, higherF)
	if len(per) < 1000 {
		t.Fatalf("only %d clients personalised in 40 rounds at q = 0.05 of 5000", len(per))
	}
	if meanP <= meanG || meanP <= meanF || 2*higherF <= len(per) {
		t.Fatalf("personal %.4f vs global %.4f (same job), %.4f (DP-FedAvg); higher than DP-FedAvg for %d of %d: want personal higher on average and for most clients",
			meanP, meanG, meanF, higherF, len(per))
	}
}
