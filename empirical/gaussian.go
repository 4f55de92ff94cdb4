package empirical

import (
	"errors"
	"fmt"
	"math"
)

// ErrInvalid is wrapped by every error that rejects an input (a NaN, a
// non-positive standard deviation, a δ outside (0, 1), too few samples).
var ErrInvalid = errors.New("empirical: invalid input")

// Gaussian is a normal distribution N(Mu, Sigma²).
type Gaussian struct {
	Mu    float64 `json:"mu"`
	Sigma float64 `json:"sigma"`
}

func (g Gaussian) check(name string) error {
	if math.IsNaN(g.Mu) || math.IsInf(g.Mu, 0) {
		return fmt.Errorf("%w: %s.mu = %v: must be finite", ErrInvalid, name, g.Mu)
	}
	if !(g.Sigma > 0) || math.IsInf(g.Sigma, 0) {
		return fmt.Errorf("%w: %s.sigma = %v: must be positive and finite", ErrInvalid, name, g.Sigma)
	}
	return nil
}

// upper returns P[X > x] for X ~ g, accurate in the far tails.
func (g Gaussian) upper(x float64) float64 {
	return 0.5 * math.Erfc((x-g.Mu)/(g.Sigma*math.Sqrt2))
}

// lower returns P[X < x].
func (g Gaussian) lower(x float64) float64 {
	return 0.5 * math.Erfc(-(x-g.Mu)/(g.Sigma*math.Sqrt2))
}

// HockeyStick returns the hockey-stick divergence
//
//	H_{e^ε}(Q ‖ P) = sup_S Q(S) − e^ε P(S) = Q(A) − e^ε P(A),  A = {x : q(x) > e^ε p(x)},
//
// of two Gaussians in closed form: log q − log p is a quadratic in x, so A
// is an interval, the complement of one, a half-line, the whole line or
// empty, and its probabilities are erfc values. A mechanism whose outputs on
// two neighbouring inputs are P and Q is (ε, δ)-DP for that pair exactly
// when both H_{e^ε}(Q ‖ P) ≤ δ and H_{e^ε}(P ‖ Q) ≤ δ.
func HockeyStick(p, q Gaussian, epsilon float64) (float64, error) {
	if err := p.check("p"); err != nil {
		return 0, err
	}
	if err := q.check("q"); err != nil {
		return 0, err
	}
	if math.IsNaN(epsilon) || epsilon < 0 {
		return 0, fmt.Errorf("%w: epsilon = %v: must be ≥ 0", ErrInvalid, epsilon)
	}
	if math.IsInf(epsilon, 1) {
		return 0, nil
	}
	// The divergence is invariant under x → (x − μp)/σp: work with
	// P = N(0, 1) and Q = N(m, r²), where nothing underflows.
	m, r := (q.Mu-p.Mu)/p.Sigma, q.Sigma/p.Sigma
	if !(math.Abs(m) <= 1e8) || !(r >= 1e-8 && r <= 1e8) {
		return 0, fmt.Errorf("%w: q is %v standard deviations of p from it with %v times its spread: outside the range [−1e8, 1e8] × [1e-8, 1e8] this computes", ErrInvalid, m, r)
	}
	p, q = Gaussian{0, 1}, Gaussian{m, r}
	// log q(x) − log p(x) − ε = a x² + b x + c.
	vp, vq := p.Sigma*p.Sigma, q.Sigma*q.Sigma
	a := 1/(2*vp) - 1/(2*vq)
	b := q.Mu/vq - p.Mu/vp
	c := p.Mu*p.Mu/(2*vp) - q.Mu*q.Mu/(2*vq) + math.Log(p.Sigma/q.Sigma) - epsilon
	ge := math.Exp(epsilon)
	// mass returns Q(S) − e^ε P(S) for S = (lo, hi).
	mass := func(lo, hi float64) float64 {
		qm := q.upper(lo) - q.upper(hi)
		pm := p.upper(lo) - p.upper(hi)
		if lo == math.Inf(-1) {
			qm, pm = q.lower(hi), p.lower(hi)
		}
		if hi == math.Inf(1) {
			qm, pm = q.upper(lo), p.upper(lo)
		}
		return qm - ge*pm
	}
	var h float64
	if a == 0 {
		// Equal variances: a half-line.
		switch {
		case b > 0:
			h = mass(-c/b, math.Inf(1))
		case b < 0:
			h = mass(math.Inf(-1), -c/b)
		case c > 0:
			h = 1 - ge
		default:
			h = 0
		}
		return math.Max(h, 0), nil
	}
	disc := b*b - 4*a*c
	if disc <= 0 {
		// The quadratic never changes sign: A is everything (a > 0) or empty.
		if a > 0 {
			h = 1 - ge
		}
		return math.Max(h, 0), nil
	}
	// Roots without cancellation (when a is tiny, one root runs off to
	// ±Inf, where erfc is exact).
	sq := math.Sqrt(disc)
	var t float64
	if b >= 0 {
		t = -(b + sq) / 2
	} else {
		t = -(b - sq) / 2
	}
	r1, r2 := t/a, c/t
	if r1 > r2 {
		r1, r2 = r2, r1
	}
	if a > 0 {
		// Positive outside the roots.
		h = mass(math.Inf(-1), r1) + mass(r2, math.Inf(1))
	} else {
		h = mass(r1, r2)
	}
	if math.IsNaN(h) {
		return 0, fmt.Errorf("%w: the divergence of %v and %v at ε = %v is not a number", ErrInvalid, p, q, epsilon)
	}
	return math.Max(h, 0), nil
}

// Epsilon returns the smallest ε ≥ 0 at which the pair (P, Q) is
// (ε, δ)-indistinguishable in both directions: max over the two orders of
// the ε solving H_{e^ε} = δ. It is what Andrew et al. (2024) report as the
// ε estimate, with P the statistic's distribution for a canary that was not
// inserted and Q its fitted distribution for inserted canaries.
func Epsilon(p, q Gaussian, delta float64) (float64, error) {
	if !(delta > 0 && delta < 1) {
		return 0, fmt.Errorf("%w: delta = %v: must be in (0, 1)", ErrInvalid, delta)
	}
	e1, err := epsilonOneWay(p, q, delta)
	if err != nil {
		return 0, err
	}
	e2, err := epsilonOneWay(q, p, delta)
	if err != nil {
		return 0, err
	}
	return math.Max(e1, e2), nil
}

// epsilonOneWay solves H_{e^ε}(Q ‖ P) = δ by bisection; H decreases in ε.
func epsilonOneWay(p, q Gaussian, delta float64) (float64, error) {
	h, err := HockeyStick(p, q, 0)
	if err != nil {
		return 0, err
	}
	if h <= delta {
		return 0, nil
	}
	lo, hi := 0.0, 1.0
	for {
		h, err := HockeyStick(p, q, hi)
		if err != nil {
			return 0, err
		}
		if h <= delta {
			break
		}
		lo, hi = hi, 2*hi
		if hi > 1e6 {
			return math.Inf(1), nil
		}
	}
	for range 200 {
		mid := (lo + hi) / 2
		if mid == lo || mid == hi {
			break
		}
		h, _ := HockeyStick(p, q, mid)
		if h > delta {
			lo = mid
		} else {
			hi = mid
		}
	}
	// hi always satisfies H ≤ δ: report it, the conservative end.
	return hi, nil
}
