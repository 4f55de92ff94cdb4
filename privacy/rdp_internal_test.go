package privacy

import (
	"math"
	"testing"
)

// TestQuadratureAgreesWithBinomialSum checks the fractional-order quadrature
// against the exact binomial sum at integer orders, where both apply.
func TestQuadratureAgreesWithBinomialSum(t *testing.T) {
	for _, q := range []float64{1e-4, 0.001, 0.01, 0.05, 0.1, 0.5, 0.9, 0.999} {
		for _, sigma := range []float64{0.3, 0.5, 0.8, 1, 1.5, 3, 10, 50} {
			for _, a := range []int{2, 3, 5, 8, 11, 20, 32, 63} {
				want, _ := rdpIntOrder(q, sigma, a, nil)
				got, _ := rdpFracOrder(q, sigma, float64(a), nil)
				if rel := math.Abs(got-want) / want; !(rel < 1e-10) && math.Abs(got-want) > 1e-300 {
					t.Errorf("q=%v σ=%v α=%d: quadrature %.15g, binomial %.15g (rel %.2g)", q, sigma, a, got, want, rel)
				}
			}
		}
	}
}

// TestQuadratureConverged compares the production quadrature rule against one
// with panels 8× narrower over a wider range.
func TestQuadratureConverged(t *testing.T) {
	worst := 0.0
	for _, q := range []float64{1e-5, 0.001, 0.01, 0.1, 0.5, 0.99} {
		for _, sigma := range []float64{0.2, 0.5, 0.8, 1, 2, 5, 20, 100} {
			for _, a := range []float64{1.02, 1.1, 1.5, 2.25, 3.7, 6.5, 10.9} {
				got, _ := rdpFracOrder(q, sigma, a, nil)
				want, _ := rdpFracQuad(q, sigma, a, nil, 0.25, 14)
				rel := math.Abs(got-want) / want
				worst = max(worst, rel)
				if !(rel < 1e-11) {
					t.Errorf("q=%v σ=%v α=%v: %.15g, finer rule %.15g (rel %.2g)", q, sigma, a, got, want, rel)
				}
			}
		}
	}
	t.Logf("worst relative difference %.2g", worst)
}

// TestSharedQuadratureMatches checks the shared-node evaluation used by
// RDPStep against the per-order rule.
func TestSharedQuadratureMatches(t *testing.T) {
	ord := orders()
	for _, q := range []float64{1e-5, 0.001, 0.05, 0.5, 0.99} {
		for _, sigma := range []float64{0.2, 0.5, 1, 3, 30} {
			got := RDPStep(q, sigma)
			for i, a := range ord {
				if a == math.Trunc(a) {
					continue
				}
				want, _ := rdpFracOrder(q, sigma, a, nil)
				if rel := math.Abs(got[i]-want) / want; !(rel < 1e-11) {
					t.Errorf("q=%v σ=%v α=%v: shared %.15g, per-order %.15g (rel %.2g)", q, sigma, a, got[i], want, rel)
				}
			}
		}
	}
}

func BenchmarkRDPStep(b *testing.B) {
	for b.Loop() {
		RDPStep(0.05, 1)
	}
}
