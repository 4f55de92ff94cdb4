package lm

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// BenchmarkPass measures tokens per second of forward+backward at a few
// shapes: the backbone's gradient (pre-training) and B's only (a client).
func BenchmarkPass(b *testing.B) {
	for _, d := range []int{64, 96, 128} {
		for _, full := range []bool{true, false} {
			b.Run(fmt.Sprintf("d%d/full=%v", d, full), func(b *testing.B) {
				a := Arch{Layers: 2, DModel: d, Heads: 4, Context: 64, Hidden: 4 * d}
				w, _ := InitWeights(a, 1)
				ad, _ := NewAdapter(a, 4, 8, []string{"q", "k", "v", "o"}, 1)
				n, _ := NewNet(w, ad, make([]float64, dimOf(ad.BLayout(a))))
				rng := rand.New(rand.NewPCG(1, 1))
				win := make([][]byte, 16)
				for i := range win {
					win[i] = make([]byte, a.Context+1)
					for j := range win[i] {
						win[i][j] = byte(rng.IntN(Vocab))
					}
				}
				g := &Grads{B: n.NewBGrads()}
				if full {
					g.W, _ = NewWeights(a)
				}
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if _, err := n.Pass(win, g, 1); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(16*a.Context*b.N)/b.Elapsed().Seconds(), "tokens/s")
			})
		}
	}
}

// BenchmarkClientStep times one local step of a client of the default
// job (LocalBatch windows, B's gradient only) beside float32 GEMM at the
// shape TrainCost names, alternating the two so both see the same load:
// the ratio of their FLOP rates is what `strata bench lm` reports.
func BenchmarkClientStep(b *testing.B) {
	c := Config{}.withDefaults()
	a := c.Arch()
	w, _ := InitWeights(a, 1)
	ad, _ := NewAdapter(a, c.LoraRank, c.LoraAlpha, c.LoraTargets, 1)
	theta := make([]float64, dimOf(ad.BLayout(a)))
	rng := rand.New(rand.NewPCG(1, 1))
	for i := range theta {
		theta[i] = rng.NormFloat64() * 0.01
	}
	n, _ := NewNet(w, ad, theta)
	win := make([][]byte, c.LocalBatch)
	for i := range win {
		win[i] = make([]byte, a.Context+1)
		for j := range win[i] {
			win[i][j] = byte(rng.IntN(Vocab))
		}
	}
	cost := (&Task{Config: c, Weights: w, Adapter: ad}).TrainCost()
	stepFlops := cost.FLOPs / float64(c.LocalSteps)
	m, k, nn := cost.Matmul[0], cost.Matmul[1], cost.Matmul[2]
	ga, gb, gc := make([]float32, m*k), make([]float32, k*nn), make([]float32, m*nn)
	for i := range ga {
		ga[i] = float32(i%7) * 0.1
	}
	for i := range gb {
		gb[i] = float32(i%5) * 0.1
	}
	g := &Grads{B: n.NewBGrads()}
	var trainSec, gemmSec float64
	var gemmFlops float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if _, err := n.Pass(win, g, 1); err != nil {
			b.Fatal(err)
		}
		trainSec += time.Since(start).Seconds()
		start = time.Now()
		for time.Since(start) < 2*time.Millisecond {
			gemm(false, false, m, nn, k, 1, ga, k, gb, nn, 0, gc, nn)
			gemmFlops += 2 * float64(m*k*nn)
		}
		gemmSec += time.Since(start).Seconds()
	}
	train := float64(b.N) * stepFlops / trainSec / 1e9
	ref := gemmFlops / gemmSec / 1e9
	b.ReportMetric(train, "train_GFLOP/s")
	b.ReportMetric(ref, "gemm_GFLOP/s")
	b.ReportMetric(train/ref, "ratio")
}
