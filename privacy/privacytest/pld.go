// Package privacytest computes the privacy loss of a released statistic
// from first principles, for tests that check what the ledger claims. It
// never calls the privacy package's accountants or the ledger's cost
// functions: a test that re-derived ε with the ledger's own formula would
// prove nothing.
//
// The method is the privacy loss distribution (PLD) of a pair of output
// distributions (P, Q), the worlds with and without the client's data:
// the log-likelihood ratio L = log p(y)/q(y) of an output y drawn from P is
// a random variable whose T-fold sum is the loss of T independent rounds,
// and the mechanism is (ε, δ)-DP for δ ≥ E_P[(1 − e^{ε−L})₊] in both
// directions (Dwork and Rothblum 2016; Koskela et al. 2020). Here the
// densities of P and Q are written down in closed form for the statistic
// the observer actually sees, integrated numerically on a grid, binned on
// a loss grid and composed by FFT. Binning can round each loss up (an
// upper bound on δ, for the assertion "true δ ≤ the ledger's δ") or down
// (a lower bound, for "the old claim was wrong"). Mass the grid does not
// cover is put at +∞ when rounding up and dropped when rounding down.
package privacytest

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/dsp/fourier"
)

// Direction says how a loss is rounded onto the grid.
type Direction int

// Rounding directions.
const (
	Upper Direction = iota // round losses up: δ computed is an upper bound
	Lower                  // round losses down: δ computed is a lower bound
)

// PLD is a discretised privacy loss distribution: Mass[i] is the
// probability of loss (Offset+i)·H; Inf is the probability of +∞.
type PLD struct {
	H      float64
	Offset int
	Mass   []float64
	Inf    float64
	Dir    Direction
}

// Point is one output region: its probability under P and its loss.
type Point struct{ Mass, Loss float64 }

// FromPoints bins points on a grid of width h. Losses below −maxLoss are
// raised to −maxLoss (they contribute nothing to δ at any ε ≥ 0, so this is
// safe both ways), losses above maxLoss go to +∞ (Upper) or to maxLoss
// (Lower). missing is the probability the points do not cover: +∞ when
// rounding up, dropped when rounding down.
func FromPoints(pts []Point, h, maxLoss, missing float64, dir Direction) PLD {
	n := int(math.Ceil(maxLoss/h))*2 + 1
	p := PLD{H: h, Offset: -(n / 2), Mass: make([]float64, n), Dir: dir}
	if dir == Upper {
		p.Inf = max(0, missing)
	}
	for _, pt := range pts {
		if pt.Mass <= 0 {
			continue
		}
		l := pt.Loss
		if math.IsInf(l, 1) || l > maxLoss {
			if dir == Upper {
				p.Inf += pt.Mass
			} else {
				p.Mass[n-1] += pt.Mass
			}
			continue
		}
		l = max(l, -maxLoss)
		var k int
		if dir == Upper {
			k = int(math.Ceil(l / h))
		} else {
			k = int(math.Floor(l / h))
		}
		k = min(max(k-p.Offset, 0), n-1)
		p.Mass[k] += pt.Mass
	}
	return p.trim()
}

// trim drops empty bins at both ends, so composition works on the support
// alone.
func (p PLD) trim() PLD {
	lo, hi := 0, len(p.Mass)
	for lo < hi && p.Mass[lo] == 0 {
		lo++
	}
	for hi > lo && p.Mass[hi-1] == 0 {
		hi--
	}
	if lo == hi {
		return PLD{H: p.H, Mass: []float64{0}, Inf: p.Inf, Dir: p.Dir}
	}
	p.Offset += lo
	p.Mass = p.Mass[lo:hi]
	return p
}

// Compose returns the PLD of t independent copies (the sum of their
// losses), by one FFT. Mass at +∞ composes as 1 − (1 − Inf)^t.
func (p PLD) Compose(t int) PLD {
	if t == 1 {
		return p
	}
	n := t*(len(p.Mass)-1) + 1
	size := 1
	for size < n {
		size <<= 1
	}
	fft := fourier.NewFFT(size)
	seq := make([]float64, size)
	copy(seq, p.Mass)
	c := fft.Coefficients(nil, seq)
	for i, v := range c {
		c[i] = cpow(v, t)
	}
	out := fft.Sequence(nil, c)
	mass := make([]float64, n)
	for i := range mass {
		mass[i] = max(0, out[i]/float64(size)) // FFT round-off can go slightly negative
	}
	return PLD{H: p.H, Offset: t * p.Offset, Mass: mass, Inf: 1 - math.Pow(1-p.Inf, float64(t)), Dir: p.Dir}.trim()
}

func cpow(z complex128, t int) complex128 {
	r := complex(1, 0)
	for b := z; t > 0; t >>= 1 {
		if t&1 == 1 {
			r *= b
		}
		b *= b
	}
	return r
}

// Delta returns δ(ε) = Inf + Σ mass·(1 − e^{ε−loss})₊.
func (p PLD) Delta(eps float64) float64 {
	d := p.Inf
	for i, m := range p.Mass {
		l := float64(p.Offset+i) * p.H
		if l > eps {
			d += m * -math.Expm1(eps-l)
		}
	}
	return d
}

// Epsilon returns the smallest ε ≥ 0 with Delta(ε) ≤ delta, by bisection
// (Delta is non-increasing in ε); +Inf when even the largest finite loss
// leaves δ above delta.
func (p PLD) Epsilon(delta float64) float64 {
	if p.Inf > delta {
		return math.Inf(1)
	}
	if p.Delta(0) <= delta {
		return 0
	}
	lo, hi := 0.0, float64(p.Offset+len(p.Mass))*p.H
	for i := 0; i < 100 && hi-lo > 1e-7; i++ {
		mid := (lo + hi) / 2
		if p.Delta(mid) <= delta {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi
}

// Pair is a neighbouring pair of output distributions given by their log
// densities on a product grid: LogP and LogQ take the grid point.
type Pair struct {
	LogP, LogQ func(x []float64) float64
	// Grid gives, per dimension, the integration range and number of
	// midpoints.
	Grid []Axis
}

// Axis is one dimension of an integration grid.
type Axis struct {
	Lo, Hi float64
	N      int
}

// Losses integrates the pair on its grid and returns the PLD of P against
// Q and of Q against P (DP needs both directions), rounded as dir says.
func (pr Pair) Losses(h, maxLoss float64, dir Direction) (pq, qp PLD, err error) {
	if len(pr.Grid) == 0 {
		return pq, qp, fmt.Errorf("privacytest: pair has no grid")
	}
	cell := 1.0
	for _, a := range pr.Grid {
		if a.N <= 0 || !(a.Hi > a.Lo) {
			return pq, qp, fmt.Errorf("privacytest: bad axis %+v", a)
		}
		cell *= (a.Hi - a.Lo) / float64(a.N)
	}
	var ptsP, ptsQ []Point
	var totP, totQ float64
	x := make([]float64, len(pr.Grid))
	idx := make([]int, len(pr.Grid))
	for {
		for d, a := range pr.Grid {
			x[d] = a.Lo + (float64(idx[d])+0.5)*(a.Hi-a.Lo)/float64(a.N)
		}
		lp, lq := pr.LogP(x), pr.LogQ(x)
		mp, mq := math.Exp(lp)*cell, math.Exp(lq)*cell
		totP += mp
		totQ += mq
		ptsP = append(ptsP, Point{Mass: mp, Loss: lp - lq})
		ptsQ = append(ptsQ, Point{Mass: mq, Loss: lq - lp})
		d := 0
		for ; d < len(idx); d++ {
			idx[d]++
			if idx[d] < pr.Grid[d].N {
				break
			}
			idx[d] = 0
		}
		if d == len(idx) {
			break
		}
	}
	return FromPoints(ptsP, h, maxLoss, 1-totP, dir), FromPoints(ptsQ, h, maxLoss, 1-totQ, dir), nil
}

// ComposedDelta is δ(ε) after t rounds, the larger of the two directions.
func ComposedDelta(pq, qp PLD, t int, eps float64) float64 {
	return max(pq.Compose(t).Delta(eps), qp.Compose(t).Delta(eps))
}

// ComposedEpsilon is ε(δ) after t rounds, the larger of the two directions.
func ComposedEpsilon(pq, qp PLD, t int, delta float64) float64 {
	return max(pq.Compose(t).Epsilon(delta), qp.Compose(t).Epsilon(delta))
}

// LogNormal is the log density of N(mu, s²) at x.
func LogNormal(x, mu, s float64) float64 {
	z := (x - mu) / s
	return -0.5*z*z - math.Log(s) - 0.5*math.Log(2*math.Pi)
}

// LogScaledChi2 is the log density at r of s²·χ²_k (the squared norm of a
// k-dimensional N(0, s²I) vector).
func LogScaledChi2(r float64, k int, s float64) float64 {
	if r <= 0 {
		return math.Inf(-1)
	}
	half := float64(k) / 2
	lg, _ := math.Lgamma(half)
	v := 2 * s * s
	return (half-1)*math.Log(r) - r/v - half*math.Log(v) - lg
}

// LogMix returns log(w·e^a + (1−w)·e^b) without overflow.
func LogMix(w, a, b float64) float64 {
	switch {
	case w == 0:
		return b
	case w == 1:
		return a
	}
	x, y := math.Log(w)+a, math.Log1p(-w)+b
	if x < y {
		x, y = y, x
	}
	if math.IsInf(y, -1) {
		return x
	}
	return x + math.Log1p(math.Exp(y-x))
}
