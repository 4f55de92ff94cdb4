package empirical

import (
	"errors"
	"math"
	"testing"
)

// gl5 holds the nodes and weights of 5-point Gauss–Legendre quadrature on
// [-1, 1] (exact for polynomials of degree 9).
var gl5 = [5][2]float64{
	{0, 128.0 / 225},
	{-0.5384693101056831, 0.4786286704993665},
	{0.5384693101056831, 0.4786286704993665},
	{-0.9061798459386640, 0.2369268850561891},
	{0.9061798459386640, 0.2369268850561891},
}

// numericHockeyStick integrates (q(x) − e^ε p(x))₊ over the real line by
// quadrature, knowing nothing of the closed form: the sign changes of the
// integrand are found by scanning a grid and bisecting on the densities
// themselves, and each piece where the integrand is positive is integrated
// by composite Gauss–Legendre (the integrand is smooth inside a piece, so
// the kinks cost no accuracy). Beyond ±40 standard deviations of either
// distribution the mass is below 1e-300.
func numericHockeyStick(p, q Gaussian, eps float64) float64 {
	dens := func(g Gaussian, x float64) float64 {
		z := (x - g.Mu) / g.Sigma
		return math.Exp(-z*z/2) / (g.Sigma * math.Sqrt(2*math.Pi))
	}
	ge := math.Exp(eps)
	f := func(x float64) float64 { return dens(q, x) - ge*dens(p, x) }
	s := math.Max(p.Sigma, q.Sigma)
	lo, hi := math.Min(p.Mu, q.Mu)-40*s, math.Max(p.Mu, q.Mu)+40*s
	const scan = 200000
	cuts := []float64{lo}
	prev := f(lo)
	for i := 1; i <= scan; i++ {
		x := lo + (hi-lo)*float64(i)/scan
		v := f(x)
		if (v > 0) != (prev > 0) {
			a, b := x-(hi-lo)/scan, x
			for range 200 {
				m := (a + b) / 2
				if (f(m) > 0) == (prev > 0) {
					a = m
				} else {
					b = m
				}
			}
			cuts = append(cuts, (a+b)/2)
		}
		prev = v
	}
	cuts = append(cuts, hi)
	total := 0.0
	for i := 0; i+1 < len(cuts); i++ {
		a, b := cuts[i], cuts[i+1]
		if f((a+b)/2) <= 0 {
			continue
		}
		const pieces = 20000
		h := (b - a) / pieces
		for k := 0; k < pieces; k++ {
			c := a + (float64(k)+0.5)*h
			for _, nw := range gl5 {
				total += nw[1] * h / 2 * math.Max(f(c+nw[0]*h/2), 0)
			}
		}
	}
	return total
}

// numericEpsilon solves numericHockeyStick = δ in both directions by bisection.
func numericEpsilon(p, q Gaussian, delta float64) float64 {
	one := func(p, q Gaussian) float64 {
		if numericHockeyStick(p, q, 0) <= delta {
			return 0
		}
		lo, hi := 0.0, 64.0
		for range 60 {
			m := (lo + hi) / 2
			if numericHockeyStick(p, q, m) > delta {
				lo = m
			} else {
				hi = m
			}
		}
		return (lo + hi) / 2
	}
	return math.Max(one(p, q), one(q, p))
}

func TestEpsilonMatchesNumericalIntegration(t *testing.T) {
	const d = 2858.0
	s0 := 1 / math.Sqrt(d)
	cases := []struct {
		name  string
		p, q  Gaussian
		delta float64
	}{
		{"equal variances, Gaussian mechanism σ=1", Gaussian{0, 1}, Gaussian{1, 1}, 1e-5},
		{"equal variances, far apart", Gaussian{0, 1}, Gaussian{4, 1}, 1e-5},
		{"observed wider than null", Gaussian{0, 1}, Gaussian{0.5, 1.2}, 1e-5},
		{"observed narrower than null", Gaussian{0, 1}, Gaussian{0.3, 0.9}, 1e-6},
		{"canary cosines, d = 2858", Gaussian{0, s0}, Gaussian{0.02, 1.05 * s0}, 1e-5},
		{"indistinguishable but for variance", Gaussian{0, 1}, Gaussian{0, 1.01}, 1e-5},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Epsilon(c.p, c.q, c.delta)
			if err != nil {
				t.Fatal(err)
			}
			want := numericEpsilon(c.p, c.q, c.delta)
			t.Logf("ε = %.9f (closed form), %.9f (quadrature)", got, want)
			if math.Abs(got-want) > 1e-6 {
				t.Errorf("Epsilon = %.9f, numerical integration gives %.9f (|diff| %.2e > 1e-6)", got, want, math.Abs(got-want))
			}
		})
	}
}

// TestHockeyStickEqualVariance checks the closed form against the analytic
// Gaussian mechanism (Balle and Wang 2018): for N(0, σ²) vs N(Δ, σ²),
// δ(ε) = Φ(Δ/2σ − εσ/Δ) − e^ε Φ(−Δ/2σ − εσ/Δ).
func TestHockeyStickEqualVariance(t *testing.T) {
	phi := func(x float64) float64 { return 0.5 * math.Erfc(-x/math.Sqrt2) }
	for _, sigma := range []float64{0.3, 1, 3} {
		for _, eps := range []float64{0, 0.5, 1, 3, 8} {
			const sens = 1.0
			want := phi(sens/(2*sigma)-eps*sigma/sens) - math.Exp(eps)*phi(-sens/(2*sigma)-eps*sigma/sens)
			for _, pq := range [][2]Gaussian{{{0, sigma}, {sens, sigma}}, {{sens, sigma}, {0, sigma}}} {
				got, err := HockeyStick(pq[0], pq[1], eps)
				if err != nil {
					t.Fatal(err)
				}
				if math.Abs(got-want) > 1e-14+1e-9*want {
					t.Errorf("σ=%v ε=%v: H = %.15g, analytic Gaussian mechanism %.15g", sigma, eps, got, want)
				}
			}
		}
	}
}

func TestEpsilonRejectsBadInput(t *testing.T) {
	for _, c := range []struct {
		p, q  Gaussian
		delta float64
	}{
		{Gaussian{0, 0}, Gaussian{0, 1}, 1e-5},
		{Gaussian{0, 1}, Gaussian{math.NaN(), 1}, 1e-5},
		{Gaussian{0, 1}, Gaussian{0, math.Inf(1)}, 1e-5},
		{Gaussian{0, 1}, Gaussian{1, 1}, 0},
		{Gaussian{0, 1}, Gaussian{1, 1}, 1},
	} {
		if _, err := Epsilon(c.p, c.q, c.delta); !errors.Is(err, ErrInvalid) {
			t.Errorf("Epsilon(%v, %v, %v): err = %v, want ErrInvalid", c.p, c.q, c.delta, err)
		}
	}
	if e, err := Epsilon(Gaussian{0, 1}, Gaussian{0, 1}, 1e-5); err != nil || e != 0 {
		t.Errorf("identical distributions: ε = %v, %v; want 0", e, err)
	}
}
