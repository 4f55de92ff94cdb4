package privacy

import "math"

// logAdd returns log(e^a + e^b) without overflow.
func logAdd(a, b float64) float64 {
	if a < b {
		a, b = b, a
	}
	if math.IsInf(b, -1) {
		return a
	}
	return a + math.Log1p(math.Exp(b-a))
}

// logErfc returns log(erfc(x)) for any x, staying accurate where erfc(x)
// underflows (x ≳ 26), by the asymptotic series of erfc.
func logErfc(x float64) float64 {
	if x < 25 {
		return math.Log(math.Erfc(x))
	}
	// erfc(x) = e^{-x²}/(x√π) · Σ_k (-1)^k (2k-1)!! / (2x²)^k; at x ≥ 25 the
	// terms fall below 1e-17 within 10 steps.
	inv := 1 / (2 * x * x)
	sum, term := 1.0, 1.0
	for k := 1; k < 12; k++ {
		term *= -float64(2*k-1) * inv
		sum += term
	}
	return -x*x - math.Log(x) - 0.5*math.Log(math.Pi) + math.Log(sum)
}

// logNormCDF returns log Φ(x) for the standard normal CDF, accurate for very
// negative x where Φ underflows.
func logNormCDF(x float64) float64 {
	if x > 5 {
		// Φ(x) = 1 - Φ(-x); log1p keeps the tiny tail.
		return math.Log1p(-0.5 * math.Erfc(x/math.Sqrt2))
	}
	return math.Log(0.5) + logErfc(-x/math.Sqrt2)
}

// log1mExp returns log(1 - e^{-a}) for a > 0 (Mächler 2012).
func log1mExp(a float64) float64 {
	if a <= math.Ln2 {
		return math.Log(-math.Expm1(-a))
	}
	return math.Log1p(-math.Exp(-a))
}

// logExpm1 returns log(e^x - 1) for x > 0.
func logExpm1(x float64) float64 {
	if x > 30 {
		return x + math.Log1p(-math.Exp(-x))
	}
	return math.Log(math.Expm1(x))
}

// log1pExp returns log(1 + e^x).
func log1pExp(x float64) float64 {
	if x > 35 {
		return x + math.Exp(-x)
	}
	return math.Log1p(math.Exp(x))
}
