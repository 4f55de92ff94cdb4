package lm

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"
)

// TestMeasurePretrain (STRATA_LM_LONG=1) pre-trains the default backbone
// and prints its bits per byte on both held-out domains: the shift the
// README reports.
func TestMeasurePretrain(t *testing.T) {
	if os.Getenv("STRATA_LM_LONG") == "" {
		t.Skip("set STRATA_LM_LONG=1 to pre-train the default backbone (minutes)")
	}
	c, err := ParseConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, 2000)
	for i := range ids {
		ids[i] = string(rune('a'+i%26)) + string(rune(i))
	}
	start := time.Now()
	tk, err := Prepare(context.Background(), Spec{Config: c, Clients: ids, Seed: 1, CacheDir: os.Getenv("STRATA_LM_CACHE"), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("prepared in %v: %d code dirs, %d held out (%d bytes), %d prose bytes", time.Since(start), len(tk.Corpus.Dirs), len(tk.Split.HeldDirs), len(tk.Split.Held), len(tk.Corpus.ProseTrain))
	ev, err := tk.Final().Evaluate(context.Background(), tk.Initial())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("version 0: %+v", ev)
}

// TestMeasureFedAvg (STRATA_LM_LONG=1) simulates the job's DP-FedAvg on
// the prepared task without the mesh — Poisson sampling at q, clipping to
// C, Gaussian noise σ·C on the sum, the global tier's server step
// (÷ q·N, server momentum and lr) — to choose the example's settings.
// STRATA_LM_SIGMA, _LR, _MOM, _ROUNDS, _Q, _LOCAL_LR, _STEPS override.
func TestMeasureFedAvg(t *testing.T) {
	if os.Getenv("STRATA_LM_LONG") == "" {
		t.Skip("set STRATA_LM_LONG=1 to simulate the LM job (minutes)")
	}
	env := func(k string, d float64) float64 {
		if v := os.Getenv("STRATA_LM_" + k); v != "" {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
		return d
	}
	sigma, lr, mom := env("SIGMA", 1.039), env("LR", 2), env("MOM", 0.5)
	rounds, q, clip := int(env("ROUNDS", 12)), env("Q", 0.1), env("CLIP", 1)
	opts := map[string]any{"local_lr": env("LOCAL_LR", 1), "local_steps": int(env("STEPS", 4))}
	c, err := ParseConfig(opts)
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, int(env("CLIENTS", 3600)))
	for i := range ids {
		ids[i] = strconv.Itoa(i)
	}
	tk, err := Prepare(context.Background(), Spec{Config: c, Clients: ids, Seed: 1, CacheDir: os.Getenv("STRATA_LM_CACHE"), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	tr, _ := tk.Trainer()
	theta := tk.Initial()
	vel := make([]float64, len(theta))
	rng := rand.New(rand.NewPCG(3, 4))
	ev, _ := tk.Evaluator().Evaluate(context.Background(), theta)
	t.Logf("round 0: %v", ev.Metrics)
	for r := 1; r <= rounds; r++ {
		start := time.Now()
		sum := make([]float64, len(theta))
		var mu sync.Mutex
		var wg sync.WaitGroup
		sem := make(chan struct{}, runtime.GOMAXPROCS(0))
		n := 0
		var norms float64
		for _, id := range ids {
			if rng.Float64() >= q {
				continue
			}
			n++
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				d := make([]float64, len(theta))
				if _, err := tr.Train(context.Background(), id, uint64(r), theta, d); err != nil {
					t.Error(err)
					return
				}
				var nn float64
				for _, v := range d {
					nn += v * v
				}
				nn = math.Sqrt(nn)
				s := math.Min(1, clip/nn)
				mu.Lock()
				defer mu.Unlock()
				norms += nn
				for j, v := range d {
					sum[j] += v * s
				}
			}()
		}
		wg.Wait()
		denom := q * float64(len(ids))
		for j := range theta {
			sum[j] += rng.NormFloat64() * sigma * clip
			vel[j] = mom*vel[j] + sum[j]/denom
			theta[j] += lr * vel[j]
		}
		ev, _ := tk.Evaluator().Evaluate(context.Background(), theta)
		t.Logf("round %d: %d clients, mean ‖Δ‖ %.3f, %v (%v)", r, n, norms/float64(n), ev.Metrics, time.Since(start).Round(time.Second))
	}
	ev, _ = tk.Final().Evaluate(context.Background(), theta)
	t.Logf("final: %v", ev.Metrics)
}
