package privacy

import (
	"fmt"
	"math"
	"slices"
	"sync"
)

// orders is built once, on first use, so that the package has no init-time
// work. It holds every order of Opacus's list (1.1…10.9 step 0.1, 12…63) and
// of dp_accounting's (adds 11, 128, 256, 512, 1024), plus finer and wider
// orders: 1.02…1.09 and 1.15…2.95 where large-ε schedules find their optimum
// (any α > 1 gives a valid bound, so more orders can only tighten ε), and
// integer orders up to 2048 for tiny per-step losses (small q, large σ).
var orders = sync.OnceValue(func() []float64 {
	var o []float64
	for k := 2; k <= 9; k++ { // 1.02 … 1.09
		o = append(o, float64(100+k)/100)
	}
	for k := 11; k <= 109; k++ { // 1.1 … 10.9
		o = append(o, float64(k)/10)
	}
	for k := 115; k <= 295; k += 10 { // 1.15 … 2.95
		o = append(o, float64(k)/100)
	}
	for a := 11; a <= 63; a++ {
		o = append(o, float64(a))
	}
	for a := 64; a <= 128; a += 8 {
		o = append(o, float64(a))
	}
	for _, a := range []int{160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 896, 1024, 1536, 2048} {
		o = append(o, float64(a))
	}
	slices.Sort(o)
	return slices.Compact(o)
})

// Orders returns the Rényi orders α at which Strata evaluates RDP, sorted
// ascending. The slice is a copy; RDP curves returned by RDPStep are indexed
// like it.
func Orders() []float64 { return slices.Clone(orders()) }

// maxIntOrder bounds the log-factorial table used by integer orders.
const maxIntOrder = 2048

var logFact = sync.OnceValue(func() []float64 {
	t := make([]float64, maxIntOrder+1)
	for i := range t {
		t[i], _ = math.Lgamma(float64(i) + 1)
	}
	return t
})

// RDPStep returns the Rényi DP of ONE step of the Poisson-subsampled Gaussian
// mechanism (sampling rate q, noise multiplier sigma; zero-out adjacency,
// which for this mechanism gives the add-or-remove pair) at each order of
// Orders(), following Mironov, Talwar and Zhang (2019). q = 0 costs nothing; q = 1 is the plain Gaussian, α/(2σ²); σ = 0
// (with q > 0) gives +Inf at every order. Invalid q or σ (NaN, ±Inf, out of
// range) give a curve of NaN; use CheckQ and CheckSigma first, or an
// Accountant, which reports the error.
func RDPStep(q, sigma float64) []float64 {
	ord := orders()
	out := make([]float64, len(ord))
	if CheckQ(q) != nil || CheckSigma(sigma) != nil {
		for i := range out {
			out[i] = math.NaN()
		}
		return out
	}
	if q == 0 || sigma == 0 || q == 1 {
		for i, a := range ord {
			out[i], _ = rdpOrder(q, sigma, a, nil)
		}
		return out
	}
	var buf []float64
	var fracIdx []int
	for i, a := range ord {
		if a == math.Trunc(a) && a <= maxIntOrder {
			out[i], buf = rdpIntOrder(q, sigma, int(a), buf)
		} else {
			fracIdx = append(fracIdx, i)
		}
	}
	rdpFracShared(q, sigma, ord, fracIdx, out)
	return out
}

// rdpOrder returns the one-step RDP at order a. buf is scratch space that is
// returned for reuse.
func rdpOrder(q, sigma, a float64, buf []float64) (float64, []float64) {
	switch {
	case q == 0:
		return 0, buf
	case sigma == 0:
		return math.Inf(1), buf
	case q == 1:
		return a / (2 * sigma * sigma), buf
	}
	if a == math.Trunc(a) && a <= maxIntOrder {
		return rdpIntOrder(q, sigma, int(a), buf)
	}
	return rdpFracOrder(q, sigma, a, buf)
}

// rdpIntOrder evaluates the binomial sum for integer α in log space. It sums
// A_α − 1 = Σ_{k≥2} C(α,k) (1−q)^{α−k} q^k (e^{(k²−k)/(2σ²)} − 1), whose
// terms are all non-negative, rather than A_α itself: when the per-step loss
// is tiny, A_α is 1 + O(q²) and log A_α computed from A_α would keep only a
// few correct digits.
func rdpIntOrder(q, sigma float64, a int, buf []float64) (float64, []float64) {
	lf := logFact()
	lq, l1q := math.Log(q), math.Log1p(-q)
	s2 := 2 * sigma * sigma
	buf = buf[:0]
	lmax := math.Inf(-1)
	for k := 2; k <= a; k++ {
		x := float64(k*k-k) / s2
		var lem1 float64
		if x > 40 {
			lem1 = x // log(e^x − 1) = x − O(e^{−40})
		} else {
			lem1 = math.Log(math.Expm1(x))
		}
		t := lf[a] - lf[k] - lf[a-k] + float64(k)*lq + float64(a-k)*l1q + lem1
		buf = append(buf, t)
		lmax = max(lmax, t)
	}
	var s float64
	for _, t := range buf {
		if t > lmax-45 {
			s += math.Exp(t - lmax)
		}
	}
	logAm1 := lmax + math.Log(s)
	return log1pExp(logAm1) / float64(a-1), buf
}

// glNodes holds the 16-point Gauss–Legendre rule on [-1, 1] (nodes and
// weights), computed once by Newton's method on P₁₆.
var glNodes = sync.OnceValue(func() [2][16]float64 {
	const n = 16
	var r [2][16]float64
	for i := 0; i < n; i++ {
		x := math.Cos(math.Pi * (float64(i) + 0.75) / (n + 0.5))
		var dp float64
		for it := 0; it < 100; it++ {
			p0, p1 := 1.0, x
			for k := 2; k <= n; k++ {
				p0, p1 = p1, ((2*float64(k)-1)*x*p1-(float64(k)-1)*p0)/float64(k)
			}
			dp = n * (x*p1 - p0) / (x*x - 1)
			dx := p1 / dp
			x -= dx
			if math.Abs(dx) < 1e-16 {
				break
			}
		}
		p0, p1 := 1.0, x
		for k := 2; k <= n; k++ {
			p0, p1 = p1, ((2*float64(k)-1)*x*p1-(float64(k)-1)*p0)/float64(k)
		}
		dp = n * (x*p1 - p0) / (x*x - 1)
		r[0][i] = x
		r[1][i] = 2 / ((1 - x*x) * dp * dp)
	}
	return r
})

// rdpFracOrder evaluates A_α for fractional α by quadrature of
//
//	A_α − 1 = E_{z~N(0,σ²)} [ (1+y)^α − 1 − α·y ],  y = q·(e^{(2z−1)/(2σ²)} − 1),
//
// which holds because E[y] = 0. The integrand is non-negative (convexity of
// (1+y)^α), so, unlike the two-sided erfc series of Mironov, Talwar and Zhang
// (which Opacus sums with signs and dp_accounting with absolute values), no
// term cancels another: the result is accurate to ~1e-13 relative even when
// A_α − 1 is O(q²) tiny, and there is no slowly converging alternating tail
// (the series needs 10⁵+ terms at q = 0.5, σ = 3). The quadrature is a
// composite 16-point Gauss–Legendre rule over [−10σ, max(α,2) + 10σ] with
// panels of width 2σ (2σ² when σ < 1, where the integrand bends on that
// scale), summed in log space; a test checks it against a rule 8× finer and
// wider, and against the binomial sum at integer orders.
func rdpFracOrder(q, sigma, a float64, buf []float64) (float64, []float64) {
	return rdpFracQuad(q, sigma, a, buf, 2, 10)
}

// rdpFracQuad is rdpFracOrder with the panel width (in units of
// σ·min(σ,1)) and the half-range (in units of σ) as parameters, so that a
// test can compare the production rule against a much finer one.
func rdpFracQuad(q, sigma, a float64, buf []float64, quadH, quadR float64) (float64, []float64) {
	gl := glNodes()
	lq, l1q := math.Log(q), math.Log1p(-q)
	s2 := 2 * sigma * sigma
	lo := -quadR * sigma
	hi := max(a, 2) + quadR*sigma
	h := quadH * sigma * min(sigma, 1)
	panels := int(math.Ceil((hi - lo) / h))
	h = (hi - lo) / float64(panels)
	logNorm := -math.Log(sigma * math.Sqrt(2*math.Pi))
	buf = buf[:0]
	lmax := math.Inf(-1)
	for p := 0; p < panels; p++ {
		mid := lo + (float64(p)+0.5)*h
		for i := 0; i < 16; i++ {
			z := mid + 0.5*h*gl[0][i]
			l := math.Log(0.5*h*gl[1][i]) + logNorm - z*z/s2 + logG(a, q, lq, l1q, (2*z-1)/s2)
			buf = append(buf, l)
			lmax = max(lmax, l)
		}
	}
	var s float64
	for _, l := range buf {
		if l > lmax-45 {
			s += math.Exp(l - lmax)
		}
	}
	logAm1 := lmax + math.Log(s)
	return log1pExp(logAm1) / (a - 1), buf
}

// rdpFracShared fills out[i] for every i in idx (fractional orders ord[i])
// with the quadrature of rdpFracOrder on one node set shared by all orders:
// panels of 3σ·min(σ,1) over [−9σ, α_max + 9σ]. The order-independent parts
// of the integrand — the Gaussian weight, y and log(1+y) — are computed once
// per node, leaving about one exp and one log per node and order. A test
// holds it to 1e-11 of the finer per-order rule (itself within 1e-13 of a
// rule 8× finer and of the binomial sum).
func rdpFracShared(q, sigma float64, ord []float64, idx []int, out []float64) {
	if len(idx) == 0 {
		return
	}
	amax := 2.0
	for _, i := range idx {
		amax = max(amax, ord[i])
	}
	gl := glNodes()
	s2 := 2 * sigma * sigma
	lo := -9 * sigma
	hi := amax + 9*sigma
	h := 3 * sigma * min(sigma, 1)
	panels := int(math.Ceil((hi - lo) / h))
	h = (hi - lo) / float64(panels)
	logNorm := -math.Log(sigma * math.Sqrt(2*math.Pi))
	lq, l1q := math.Log(q), math.Log1p(-q)
	n := panels * 16
	type node struct {
		lw, y, l1 float64 // log weight·density, y, log(1+y)
		small     bool    // |y| < 0.05: use the series
		big       bool    // u ≥ 30: y overflows, only l1 is meaningful
	}
	nodes := make([]node, 0, n)
	for p := 0; p < panels; p++ {
		mid := lo + (float64(p)+0.5)*h
		for i := 0; i < 16; i++ {
			z := mid + 0.5*h*gl[0][i]
			nd := node{lw: math.Log(0.5*h*gl[1][i]) + logNorm - z*z/s2}
			u := (2*z - 1) / s2
			switch {
			case u >= 30:
				nd.big = true
				nd.l1 = u + lq + math.Log1p(math.Exp(l1q-lq-u))
			default:
				nd.y = q * (math.Exp(u) - 1)
				if math.Abs(nd.y) < 0.05 {
					nd.small = true
					nd.y = q * math.Expm1(u)
				} else {
					nd.l1 = math.Log(1 + nd.y)
				}
			}
			nodes = append(nodes, nd)
		}
	}
	ls := make([]float64, n)
	var binom [17]float64
	for _, oi := range idx {
		a := ord[oi]
		binom[1] = a
		for j := 2; j <= 16; j++ {
			binom[j] = binom[j-1] * (a - float64(j-1)) / float64(j)
		}
		lmax := math.Inf(-1)
		for k, nd := range nodes {
			var lg float64
			switch {
			case nd.small:
				// Σ_{j=2}^{16} C(α,j) y^j by Horner; |y| < 0.05 so the
				// omitted terms are below 1e-20 relative.
				g := binom[16]
				for j := 15; j >= 2; j-- {
					g = g*nd.y + binom[j]
				}
				lg = math.Log(g * nd.y * nd.y)
			case !nd.big && a*nd.l1 < 30:
				lg = math.Log(math.Exp(a*nd.l1) - 1 - a*nd.y)
			default:
				corr := (1-a)*math.Exp(-a*nd.l1) + a*math.Exp((1-a)*nd.l1)
				lg = a*nd.l1 + math.Log1p(-corr)
			}
			l := nd.lw + lg
			ls[k] = l
			lmax = max(lmax, l)
		}
		var sum float64
		for _, l := range ls {
			if l > lmax-45 {
				sum += math.Exp(l - lmax)
			}
		}
		out[oi] = log1pExp(lmax+math.Log(sum)) / (a - 1)
	}
}

// logG returns log((1+y)^α − 1 − α·y) for y = q·(e^u − 1), accurately for
// y near 0 (series), moderate y (expm1/log1p) and huge y (log space).
func logG(a, q, lq, l1q, u float64) float64 {
	var l1 float64 // log(1+y)
	if u < 30 {
		y := q * math.Expm1(u)
		if math.Abs(y) < 0.01 {
			// Σ_{k≥2} C(α,k) y^k; |y| < 0.01 so 12 terms reach 1e-20.
			c, yk, g := a, y, 0.0
			for k := 2; k <= 14; k++ {
				c *= (a - float64(k-1)) / float64(k)
				yk *= y
				g += c * yk
			}
			return math.Log(g)
		}
		l1 = math.Log1p(y)
		if a*l1 < 30 {
			return math.Log(math.Expm1(a*l1) - a*y)
		}
	} else {
		l1 = u + lq + math.Log1p(math.Exp(l1q-lq-u))
	}
	// (1+y)^α − 1 − αy = (1+y)^α · (1 − (1−α)e^{−αL} − α e^{(1−α)L}), L = log(1+y).
	corr := (1-a)*math.Exp(-a*l1) + a*math.Exp((1-a)*l1)
	return a*l1 + math.Log1p(-corr)
}

// EpsilonFromRDP converts an RDP curve (indexed like Orders()) to (ε, δ)-DP
// with the improved conversion of Balle et al. (2020) / Canonne, Kamath and
// Steinke (2020):
//
//	ε = min_α  rdp(α) + log((α−1)/α) − (log δ + log α)/(α−1)
//
// with dp_accounting's guards: an order gives ε = 0 when δ ≥ √(1 − e^{−rdp(α)})
// (the KL bound), orders α ≤ 1.01 are skipped (the formula is unstable as
// α → 1), and ε is clamped at 0. It returns ε and the order that attains it.
// A curve that is +Inf everywhere gives ε = +Inf and order NaN.
func EpsilonFromRDP(rdp []float64, delta float64) (eps float64, order float64, err error) {
	if err := CheckDelta(delta); err != nil {
		return 0, 0, err
	}
	ord := orders()
	if len(rdp) != len(ord) {
		return 0, 0, fmt.Errorf("%w: rdp has %d values, want %d (one per order of Orders())", ErrInvalidParameter, len(rdp), len(ord))
	}
	eps, order = math.Inf(1), math.NaN()
	logDelta := math.Log(delta)
	for i, a := range ord {
		r := rdp[i]
		if math.IsNaN(r) || r < 0 {
			return 0, 0, paramErr(fmt.Sprintf("rdp[%d]", i), r, "[0, +Inf]")
		}
		var e float64
		switch {
		case delta*delta+math.Expm1(-r) > 0:
			e = 0
		case a > 1.01:
			e = r + math.Log1p(-1/a) - (logDelta+math.Log(a))/(a-1)
		default:
			continue
		}
		if e < eps {
			eps, order = e, a
		}
	}
	return max(eps, 0), order, nil
}

// rdpAccountant composes RDP curves (sum over parts of Steps × one-step RDP)
// and converts once.
type rdpAccountant struct{}

// NewRDP returns the Rényi DP accountant (Name "rdp"). It is the one the
// ledger uses when it must store curves: curves of different rounds add.
func NewRDP() Accountant { return rdpAccountant{} }

func (rdpAccountant) Name() string { return "rdp" }

func (rdpAccountant) Epsilon(parts []Part, delta float64) (float64, error) {
	if err := checkParts(parts); err != nil {
		return 0, fmt.Errorf("rdp accountant: %w", err)
	}
	if err := CheckDelta(delta); err != nil {
		return 0, fmt.Errorf("rdp accountant: %w", err)
	}
	if unprotected(parts) {
		return math.Inf(1), nil
	}
	curve, err := ScheduleRDP(parts)
	if err != nil {
		return 0, fmt.Errorf("rdp accountant: %w", err)
	}
	eps, _, err := EpsilonFromRDP(curve, delta)
	if err != nil {
		return 0, fmt.Errorf("rdp accountant: %w", err)
	}
	return eps, nil
}

// ScheduleRDP returns the RDP curve of a whole schedule, indexed like
// Orders(): the sum over parts of Steps × RDPStep(Q, Sigma). Parts with equal
// (Q, Sigma) share one evaluation.
func ScheduleRDP(parts []Part) ([]float64, error) {
	if err := checkParts(parts); err != nil {
		return nil, err
	}
	ord := orders()
	total := make([]float64, len(ord))
	type key struct{ q, s float64 }
	seen := map[key][]float64{}
	for _, p := range parts {
		if p.Steps == 0 || p.Q == 0 {
			continue
		}
		k := key{p.Q, p.Sigma}
		c, ok := seen[k]
		if !ok {
			c = RDPStep(p.Q, p.Sigma)
			seen[k] = c
		}
		for i, v := range c {
			total[i] += float64(p.Steps) * v
		}
	}
	return total, nil
}
