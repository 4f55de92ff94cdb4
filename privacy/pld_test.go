package privacy

import (
	"math"
	"testing"
)

// exactGaussianEpsilon solves the Balle–Wang (2018) condition
// Φ(μ/2 − ε/μ) − e^ε Φ(−μ/2 − ε/μ) = δ independently of the package code:
// log Φ by math.Erfc, or by the continued fraction of the Mills ratio in the
// far tail, and bisection over ε on the log-δ residual.
func exactGaussianEpsilon(t *testing.T, mu, delta float64) float64 {
	t.Helper()
	// log Φ(x) for x ≤ 0 via erfc, with a continued fraction for the far
	// tail (Lentz), independent of logErfc.
	logPhi := func(x float64) float64 {
		if x > -30 {
			return math.Log(0.5 * math.Erfc(-x/math.Sqrt2))
		}
		z := -x
		// Φ(−z) = φ(z)·R(z), R(z) = 1/(z + 1/(z + 2/(z + 3/(z + …)))).
		r := 0.0
		for k := 200; k >= 1; k-- {
			r = float64(k) / (z + r)
		}
		return -z*z/2 - 0.5*math.Log(2*math.Pi) - math.Log(z+r)
	}
	resid := func(eps float64) float64 {
		a := logPhi(mu/2 - eps/mu)
		b := logPhi(-mu/2 - eps/mu)
		return a + math.Log(-math.Expm1(eps+b-a)) - math.Log(delta)
	}
	lo, hi := 0.0, 1.0
	for resid(hi) > 0 {
		lo, hi = hi, hi*2
	}
	for i := 0; i < 300; i++ {
		mid := (lo + hi) / 2
		if resid(mid) > 0 {
			lo = mid
		} else {
			hi = mid
		}
	}
	return hi
}

func TestPLDAgainstReferences(t *testing.T) {
	v := loadVectors(t)
	rdp := NewRDP()
	for _, c := range v.Cases {
		ref, ok := c.Results["dp_accounting_pld"]
		if !ok {
			t.Fatalf("%s: no dp_accounting_pld result", c.ID)
		}
		acc, err := NewPLDWithConfig(PLDConfig{Interval: ref.VDI})
		if err != nil {
			t.Fatal(err)
		}
		got, err := acc.Epsilon(c.parts(), c.Delta)
		if err != nil {
			t.Errorf("%s: %v", c.ID, err)
			continue
		}
		reliable := ref.Reliable != nil && *ref.Reliable && ref.Epsilon != nil
		if reliable {
			lo := 0.0
			if ref.Lower != nil {
				lo = *ref.Lower
			}
			hi := *ref.Epsilon*(1+1e-3) + 1e-4
			if !(got >= lo && got <= hi) {
				t.Errorf("%s: got ε %.10g, want in [%.10g, %.10g]", c.ID, got, lo, hi)
			}
		} else {
			re, err := rdp.Epsilon(c.parts(), c.Delta)
			if err != nil {
				t.Fatal(err)
			}
			if math.IsInf(got, 0) || !(got <= re) {
				t.Errorf("%s (unreliable reference): got ε %.10g, want finite and ≤ RDP ε %.10g", c.ID, got, re)
			}
		}
		if c.allQ1() {
			var mu2 float64
			for _, p := range c.Mechanism.Parts {
				mu2 += float64(p.Steps) / (p.Sigma * p.Sigma)
			}
			want := exactGaussianEpsilon(t, math.Sqrt(mu2), c.Delta)
			if ex, ok := c.Results["exact_analytic_gaussian"]; ok && math.Abs(want-*ex.Epsilon) > 1e-9*want {
				t.Errorf("%s: test's closed form %.15g disagrees with the 50-digit reference %.15g", c.ID, want, *ex.Epsilon)
			}
			if math.Abs(got-want) > 1e-4*want {
				t.Errorf("%s: got ε %.10g, exact composed Gaussian %.10g", c.ID, got, want)
			}
		}
	}
}

// TestPLDDeltaInvertsEpsilon checks δ(ε(δ)) ≤ δ and that δ just below ε(δ)
// exceeds δ, for a subsampled, a Gaussian and a mixed schedule.
func TestPLDDeltaInvertsEpsilon(t *testing.T) {
	acc, err := NewPLDWithConfig(PLDConfig{Interval: 1e-3})
	if err != nil {
		t.Fatal(err)
	}
	for _, parts := range [][]Part{
		{{Q: 0.05, Sigma: 1, Steps: 200}},
		{{Q: 1, Sigma: 3, Steps: 20}},
		{{Q: 0.1, Sigma: 1.5, Steps: 50}, {Q: 1, Sigma: 20, Steps: 5}},
	} {
		for _, delta := range []float64{1e-3, 1e-6} {
			eps, err := acc.Epsilon(parts, delta)
			if err != nil {
				t.Fatal(err)
			}
			d, err := acc.Delta(parts, eps)
			if err != nil {
				t.Fatal(err)
			}
			if d > delta*(1+1e-9) {
				t.Errorf("%v: δ(ε(%g) = %g) = %g, want ≤ %g", parts, delta, eps, d, delta)
			}
			if d2, _ := acc.Delta(parts, eps*0.99); !(d2 > delta) {
				t.Errorf("%v: δ(0.99·ε(%g)) = %g, want > %g", parts, delta, d2, delta)
			}
		}
	}
}
