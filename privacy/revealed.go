package privacy

import "math"

// RevealedRDPStep returns the Rényi DP of ONE round at each order of
// Orders() when the client's participation may be revealed: it takes part
// with probability q, and when it does its contribution is protected by
// Gaussian noise of multiplier sigma, but an observer may tell whether it
// took part (for instance because the client adds noise of its own only
// when sampled, and the variance of the release shows it).
//
// Under zero-out adjacency the observer sees the pair (S, Y), S ~
// Bernoulli(q) the participation, identical in both worlds; given S = 0
// both worlds release the same distribution, given S = 1 they differ by a
// Gaussian mechanism of multiplier sigma. The Rényi divergence of the pair
// is therefore exactly
//
//	RDP(α) = log(1 − q + q·e^{α(α−1)/(2σ²)}) / (α − 1),
//
// and by data processing it bounds what Y alone reveals. Unlike RDPStep it
// holds whatever the observer learns about participation; it is larger
// than RDPStep(q, sigma) at every order (joint convexity) and equals it at
// q = 1. q = 0 costs nothing, σ = 0 with q > 0 gives +Inf; invalid inputs
// give NaN, as RDPStep does.
func RevealedRDPStep(q, sigma float64) []float64 {
	ord := orders()
	out := make([]float64, len(ord))
	if CheckQ(q) != nil || CheckSigma(sigma) != nil {
		for i := range out {
			out[i] = math.NaN()
		}
		return out
	}
	for i, a := range ord {
		out[i] = revealedOrder(q, sigma, a)
	}
	return out
}

func revealedOrder(q, sigma, a float64) float64 {
	switch {
	case q == 0:
		return 0
	case sigma == 0:
		return math.Inf(1)
	case q == 1:
		return a / (2 * sigma * sigma)
	}
	x := a * (a - 1) / (2 * sigma * sigma) // the Gaussian's (α−1)·RDP(α)
	// log(1 − q + q·e^x) = log1p(q·(e^x − 1)), accurate for tiny x; in log
	// space once e^x would overflow.
	if x < 700 {
		return math.Log1p(q*math.Expm1(x)) / (a - 1)
	}
	return logAdd(math.Log1p(-q), math.Log(q)+x) / (a - 1)
}
