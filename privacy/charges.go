package privacy

import (
	"fmt"
	"math"
)

// EffectiveDelta returns the δ at which an ideal mechanism's RDP curve must
// be converted so that the real one is (ε, delta)-DP, when the real one
// departs from the ideal on events of total probability at most charged
// (the noise sampler's truncated tails, a top-up cap exceeded):
//
//	(delta − charged)·(1 − charged).
//
// Why: if the real output M equals the ideal M̃ conditioned on an event E
// with P(E^c) ≤ τ in both neighbouring worlds — the case of truncation,
// where M's density is M̃'s divided by 1 − τ on M's support and the privacy
// loss is the ideal one there — then δ_M(ε) ≤ δ_M̃(ε)/(1 − τ) + τ, so
// δ_M̃(ε) ≤ (δ − τ)(1 − τ) suffices; and if M equals M̃ except on an event
// of probability η that does not depend on the data, δ_M ≤ δ_M̃ + η, which
// the same bound covers with τ = η. Both kinds add up in charged.
func EffectiveDelta(delta, charged float64) (float64, error) {
	if err := CheckDelta(delta); err != nil {
		return 0, err
	}
	if !(charged >= 0) || !(charged < delta) {
		return 0, fmt.Errorf("%w: charged δ %g must be in [0, δ = %g)", ErrInvalidParameter, charged, delta)
	}
	return (delta - charged) * (1 - charged), nil
}

// BinomialTail returns P(X > k) for X ~ Binomial(n, q), summed in log space
// from k+1 up, so tails far below float64's resolution near 1 keep their
// relative precision.
func BinomialTail(n int, q float64, k int) float64 {
	if k >= n || q == 0 {
		return 0
	}
	if k < 0 {
		return 1
	}
	if q == 1 {
		return 1
	}
	lq, l1q := math.Log(q), math.Log1p(-q)
	lgn, _ := math.Lgamma(float64(n) + 1)
	logPMF := func(j int) float64 {
		a, _ := math.Lgamma(float64(j) + 1)
		b, _ := math.Lgamma(float64(n-j) + 1)
		return lgn - a - b + float64(j)*lq + float64(n-j)*l1q
	}
	acc := math.Inf(-1)
	for j := k + 1; j <= n; j++ {
		l := logPMF(j)
		acc = logAdd(acc, l)
		if float64(j) > float64(n)*q && l < acc-40 && j < n {
			// Past the mode the terms decrease: the n − j left are each
			// below this one, so adding n − j copies of it over-counts.
			acc = logAdd(acc, l+math.Log(float64(n-j)))
			break
		}
	}
	return math.Min(1, math.Exp(acc))
}

// TopUpCap returns the smallest cap k with P(Binomial(n, q) > k) ≤ eta and
// that tail probability: a region of n eligible clients sampled at rate q
// accepts more than k updates with probability at most eta.
func TopUpCap(n int, q, eta float64) (int, float64, error) {
	if err := CheckQ(q); err != nil {
		return 0, 0, err
	}
	if n < 0 || !(eta > 0 && eta < 1) {
		return 0, 0, fmt.Errorf("%w: top-up cap for n = %d, η = %g: want n ≥ 0 and η in (0, 1)", ErrInvalidParameter, n, eta)
	}
	lo, hi := -1, n // tail(lo) > eta ≥ tail(hi) = 0
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		if BinomialTail(n, q, mid) <= eta {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi, BinomialTail(n, q, hi), nil
}
