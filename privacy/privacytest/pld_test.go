package privacytest

import (
	"math"
	"testing"
)

// gaussianPair is N(1, σ²) against N(0, σ²) in one dimension.
func gaussianPair(sigma float64) Pair {
	return Pair{
		LogP: func(x []float64) float64 { return LogNormal(x[0], 1, sigma) },
		LogQ: func(x []float64) float64 { return LogNormal(x[0], 0, sigma) },
		Grid: []Axis{{Lo: -14 * sigma, Hi: 1 + 14*sigma, N: 200000}},
	}
}

// exactGaussianDelta is the tight δ(ε) of the Gaussian mechanism with
// sensitivity 1 and noise σ (Balle and Wang 2018, Theorem 8).
func exactGaussianDelta(sigma, eps float64) float64 {
	phi := func(x float64) float64 { return 0.5 * math.Erfc(-x/math.Sqrt2) }
	return phi(-eps*sigma+1/(2*sigma)) - math.Exp(eps)*phi(-eps*sigma-1/(2*sigma))
}

// TestGaussianBracketsTheExactDelta checks the quadrature, binning and FFT
// composition against the closed form: T rounds of noise σ are one round
// of σ/√T, and the upper and lower PLDs must bracket it.
func TestGaussianBracketsTheExactDelta(t *testing.T) {
	for _, tc := range []struct {
		sigma  float64
		rounds int
		eps    float64
	}{{1, 1, 1}, {2, 10, 1.5}, {4, 40, 0.8}} {
		pr := gaussianPair(tc.sigma)
		up, upRev, err := pr.Losses(1e-3, 30, Upper)
		if err != nil {
			t.Fatal(err)
		}
		lo, loRev, err := pr.Losses(1e-3, 30, Lower)
		if err != nil {
			t.Fatal(err)
		}
		want := exactGaussianDelta(tc.sigma/math.Sqrt(float64(tc.rounds)), tc.eps)
		u := ComposedDelta(up, upRev, tc.rounds, tc.eps)
		l := ComposedDelta(lo, loRev, tc.rounds, tc.eps)
		if !(l <= want*(1+1e-6) && want <= u*(1+1e-6)) {
			t.Errorf("σ %v T %d ε %v: bracket [%g, %g] does not hold the exact δ %g", tc.sigma, tc.rounds, tc.eps, l, u, want)
		}
		if u > 1.2*want || l < want/1.2 {
			t.Errorf("σ %v T %d ε %v: bracket [%g, %g] too loose around %g", tc.sigma, tc.rounds, tc.eps, l, u, want)
		}
	}
}

// TestSubsampledGaussianBracket checks the method on the Poisson-subsampled
// Gaussian, (1−q)N(0,σ²) + qN(1,σ²) against N(0,σ²): the upper and lower
// estimates agree within the discretisation error T·h, and land where the
// PLD references put this schedule (tighter than the RDP bound).
func TestSubsampledGaussianBracket(t *testing.T) {
	const q, sigma, rounds, delta = 0.05, 1.04, 40, 1e-5
	pr := Pair{
		LogP: func(x []float64) float64 { return LogMix(q, LogNormal(x[0], 1, sigma), LogNormal(x[0], 0, sigma)) },
		LogQ: func(x []float64) float64 { return LogNormal(x[0], 0, sigma) },
		Grid: []Axis{{Lo: -15 * sigma, Hi: 1 + 15*sigma, N: 200000}},
	}
	up, upRev, _ := pr.Losses(2e-4, 30, Upper)
	lo, loRev, _ := pr.Losses(2e-4, 30, Lower)
	eu := ComposedEpsilon(up, upRev, rounds, delta)
	el := ComposedEpsilon(lo, loRev, rounds, delta)
	if !(el <= eu) || eu-el > 2*rounds*2e-4+1e-3 {
		t.Fatalf("ε bracket [%v, %v] is inverted or wider than the discretisation allows", el, eu)
	}
	// The tight ε of this schedule is about 2.2 (PLD); the RDP bound the
	// ledger uses is 2.72. A first-principles value outside [1.8, 2.7]
	// would mean the method is broken.
	if eu < 1.8 || eu > 2.7 {
		t.Fatalf("ε = %v for q=%v σ=%v T=%d: outside the plausible range", eu, q, sigma, rounds)
	}
	t.Logf("PLD from first principles: ε ∈ [%.4f, %.4f] at δ=%g", el, eu, delta)
}
