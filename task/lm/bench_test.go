package lm

import (
	"fmt"
	"math/rand/v2"
	"testing"
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
