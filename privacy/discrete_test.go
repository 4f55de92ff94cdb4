package privacy

import (
	"errors"
	"math"
	"testing"

	"gonum.org/v1/gonum/stat/distuv"
)

// TestDiscreteGaussianPMF compares N = 60 000 draws with the exact pmf
// P[X = x] = e^{−x²/(2σ²)} / Σ_y e^{−y²/(2σ²)} by a chi-square test over the
// bins x = −K…K (|x| > K merged into the two end bins, K chosen so every bin
// expects ≥ 5 draws). The critical value is the 1 − 1e-6 quantile of the
// chi-square distribution with (bins − 1) degrees of freedom: a correct
// sampler fails with probability 1e-6 per σ² (the seed is fixed).
func TestDiscreteGaussianPMF(t *testing.T) {
	const N = 60000
	for _, sigma2 := range []float64{0.3, 1, 2.5, 17.3} {
		g := NewGaussian(seeded(7))
		sigma := math.Sqrt(sigma2)
		var z float64
		for y := -int(50*sigma) - 50; y <= int(50*sigma)+50; y++ {
			z += math.Exp(-float64(y*y) / (2 * sigma2))
		}
		pmf := func(x int) float64 { return math.Exp(-float64(x*x)/(2*sigma2)) / z }
		K := 0
		for N*pmf(K+1) >= 5 {
			K++
		}
		counts := make([]float64, 2*K+1)
		for i := 0; i < N; i++ {
			x, err := g.DiscreteSample(sigma2)
			if err != nil {
				t.Fatal(err)
			}
			b := min(max(int(x), -K), K) + K
			counts[b]++
		}
		var chi2 float64
		var tail float64 // P[X ≥ K]
		for y := K; y <= int(50*sigma)+50; y++ {
			tail += pmf(y)
		}
		for b := range counts {
			x := b - K
			p := pmf(x)
			if x == -K || x == K {
				p = tail
			}
			e := N * p
			chi2 += (counts[b] - e) * (counts[b] - e) / e
		}
		crit := distuv.ChiSquared{K: float64(len(counts) - 1)}.Quantile(1 - 1e-6)
		if chi2 > crit {
			t.Errorf("σ² = %v: chi-square %.1f over %d bins exceeds the 1e-6 critical value %.1f", sigma2, chi2, len(counts), crit)
		}
	}
}

func TestDiscreteGaussianRejectsBadInput(t *testing.T) {
	g := NewGaussian(seeded(8))
	for _, s2 := range []float64{0, -1, math.NaN(), math.Inf(1), 1e30} {
		if _, err := g.DiscreteSample(s2); !errors.Is(err, ErrInvalidParameter) {
			t.Errorf("DiscreteSample(%v): got %v, want ErrInvalidParameter", s2, err)
		}
	}
	dst := []int64{5, 5, 5}
	if err := g.AddDiscrete(dst, 4); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkDiscreteSample(b *testing.B) {
	g := NewGaussian(seeded(9))
	for b.Loop() {
		if _, err := g.DiscreteSample(100); err != nil {
			b.Fatal(err)
		}
	}
}
