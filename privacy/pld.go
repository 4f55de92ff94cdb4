package privacy

import (
	"errors"
	"fmt"
	"math"
	"sync"

	"gonum.org/v1/gonum/dsp/fourier"
)

// PLDConfig configures the privacy-loss-distribution accountant. The zero
// value means the defaults.
type PLDConfig struct {
	// Interval is the discretisation interval of privacy-loss values (in
	// nats). Smaller is tighter and slower: the pessimistic estimate exceeds
	// the true ε by about Steps × Interval / 2 at worst. Default 1e-4, as in
	// dp_accounting.
	Interval float64
	// TailMass bounds the probability mass dropped when a composed
	// distribution is truncated to a finite window; it is added to δ (to the
	// mass at +∞), so the estimate stays pessimistic. Default 1e-15.
	TailMass float64
	// MaxPoints caps the length of the composed distribution. When the
	// window needed at Interval would be longer, the interval is multiplied
	// by 10 until it fits (dp_accounting's callers use the same ladder by
	// hand); the result is still an upper bound, only looser. Default 1<<23.
	MaxPoints int
}

// Defaults for PLDConfig.
const (
	DefaultPLDInterval  = 1e-4
	DefaultPLDTailMass  = 1e-15
	DefaultPLDMaxPoints = 1 << 23
)

// Validate reports the first invalid field, by name. Zero fields are valid
// (they mean the default).
func (c PLDConfig) Validate() error {
	if c.Interval != 0 && (!finite(c.Interval) || c.Interval <= 0 || c.Interval > 1) {
		return paramErr("PLDConfig.Interval", c.Interval, "(0, 1]")
	}
	if c.TailMass != 0 && (!finite(c.TailMass) || c.TailMass <= 0 || c.TailMass > 1e-3) {
		return paramErr("PLDConfig.TailMass", c.TailMass, "(0, 1e-3]")
	}
	if c.MaxPoints < 0 || (c.MaxPoints > 0 && c.MaxPoints < 1024) {
		return paramErr("PLDConfig.MaxPoints", float64(c.MaxPoints), "{0} ∪ [1024, +Inf)")
	}
	return nil
}

func (c PLDConfig) withDefaults() PLDConfig {
	if c.Interval == 0 {
		c.Interval = DefaultPLDInterval
	}
	if c.TailMass == 0 {
		c.TailMass = DefaultPLDTailMass
	}
	if c.MaxPoints == 0 {
		c.MaxPoints = DefaultPLDMaxPoints
	}
	return c
}

// PLD is the privacy-loss-distribution accountant (Name "pld"), following
// dp_accounting: each part's privacy loss distribution is discretised
// pessimistically with connect-the-dots (Doroshenko et al. 2022), parts are
// composed by FFT over a window chosen by Chernoff bounds, the mass outside
// the window goes to +∞, and ε is read off the composed distribution.
//
// Where Strata differs: ε(δ) and δ(ε) are computed relative to the current
// loss (never through e^{−loss} or e^{ε}), so ε in the thousands is as
// accurate as ε = 1, where dp_accounting returns +Inf or loses accuracy past
// ε ≈ 709; parts with q = 1 are Gaussian mechanisms whose PLDs compose in
// closed form (one Gaussian with μ² = Σ T/σ²), so a schedule of such parts
// is solved exactly (Balle and Wang 2018) and a mixed one discretises them
// once.
type PLD struct {
	cfg PLDConfig
}

// NewPLD returns the PLD accountant with the default configuration
// (interval 1e-4).
func NewPLD() Accountant {
	return &PLD{cfg: PLDConfig{}.withDefaults()}
}

// NewPLDWithConfig returns a PLD accountant with the given configuration;
// zero fields take their defaults.
func NewPLDWithConfig(cfg PLDConfig) (*PLD, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &PLD{cfg: cfg.withDefaults()}, nil
}

func newPLDByName() (Accountant, error) { return NewPLD(), nil }

// Name returns "pld".
func (*PLD) Name() string { return "pld" }

// Config returns the configuration in use, defaults applied.
func (a *PLD) Config() PLDConfig { return a.cfg }

// Epsilon returns the smallest ε (up to discretisation, always from above)
// such that the schedule is (ε, δ)-DP.
func (a *PLD) Epsilon(parts []Part, delta float64) (float64, error) {
	if err := checkParts(parts); err != nil {
		return 0, fmt.Errorf("pld accountant: %w", err)
	}
	if err := CheckDelta(delta); err != nil {
		return 0, fmt.Errorf("pld accountant: %w", err)
	}
	if unprotected(parts) {
		return math.Inf(1), nil
	}
	mu, sub := splitSchedule(parts)
	if len(sub) == 0 {
		if mu == 0 {
			return 0, nil
		}
		return gaussianEpsilon(mu, delta), nil
	}
	ds, err := a.composeBoth(mu, sub)
	if err != nil {
		return 0, fmt.Errorf("pld accountant: %w", err)
	}
	return max(ds[0].epsilon(delta), ds[1].epsilon(delta)), nil
}

// Delta returns the smallest δ (from above) such that the schedule is
// (ε, δ)-DP: the hockey-stick divergence at ε of the composed distribution.
func (a *PLD) Delta(parts []Part, epsilon float64) (float64, error) {
	if err := checkParts(parts); err != nil {
		return 0, fmt.Errorf("pld accountant: %w", err)
	}
	if !(epsilon >= 0) || math.IsInf(epsilon, 0) {
		return 0, fmt.Errorf("pld accountant: %w", paramErr("epsilon", epsilon, "[0, +Inf)"))
	}
	if unprotected(parts) {
		return 1, nil
	}
	mu, sub := splitSchedule(parts)
	if len(sub) == 0 {
		if mu == 0 {
			return 0, nil
		}
		return math.Exp(gaussianLogDelta(mu, epsilon)), nil
	}
	ds, err := a.composeBoth(mu, sub)
	if err != nil {
		return 0, fmt.Errorf("pld accountant: %w", err)
	}
	return max(ds[0].delta(epsilon), ds[1].delta(epsilon)), nil
}

// composeBoth composes the remove and the add distributions concurrently
// (they are independent and each is dominated by its FFTs) and joins both
// goroutines before returning.
func (a *PLD) composeBoth(mu float64, sub []Part) ([2]dist, error) {
	var ds [2]dist
	var errs [2]error
	var wg sync.WaitGroup
	for i, dir := range []direction{remove, add} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ds[i], errs[i] = a.compose(dir, mu, sub)
		}()
	}
	wg.Wait()
	return ds, errors.Join(errs[0], errs[1])
}

// splitSchedule merges the q = 1 parts into one Gaussian of parameter μ
// (μ² = Σ T/σ²) and returns the subsampled parts with T > 0, merged by
// (q, σ).
func splitSchedule(parts []Part) (mu float64, sub []Part) {
	var mu2 float64
	for _, p := range parts {
		if p.Steps == 0 || p.Q == 0 {
			continue
		}
		if p.Q == 1 {
			mu2 += float64(p.Steps) / (p.Sigma * p.Sigma)
			continue
		}
		merged := false
		for i := range sub {
			if sub[i].Q == p.Q && sub[i].Sigma == p.Sigma {
				sub[i].Steps += p.Steps
				merged = true
				break
			}
		}
		if !merged {
			sub = append(sub, p)
		}
	}
	return math.Sqrt(mu2), sub
}

// direction selects one of the two dominating pairs of the subsampled
// Gaussian (zero-out adjacency: the client's contribution present or
// zeroed, its participation the same); ε is the larger of the two.
type direction int

const (
	// remove: P = (1−q)N(0,σ²) + qN(1,σ²), Q = N(0,σ²).
	remove direction = iota
	// add: P = N(0,σ²), Q = (1−q)N(0,σ²) + qN(1,σ²).
	add
)

// dist is a discrete privacy loss distribution: mass p[j] at loss
// (lo + j)·h, and mass inf at +∞.
type dist struct {
	lo  int
	p   []float64
	inf float64
	h   float64
}

// tailZ is where the continuous distributions are cut when discretised, in
// standard deviations: Φ(−10) ≈ 7.6e-24, below dp_accounting's e^{−50}.
const tailZ = 10

// mechanism is one discretisable mechanism: a hockey-stick curve δ(ε) and
// the range of losses that carry all but ~e^{−50} of the mass.
type mechanism struct {
	delta  func(eps float64) float64
	lo, hi float64
}

func subsampledMechanism(dir direction, q, sigma float64) mechanism {
	s2 := sigma * sigma
	l1q := math.Log1p(-q)
	loss := func(x float64) float64 { // log(1 − q + q·e^{(2x−1)/(2σ²)})
		return logAdd(l1q, math.Log(q)+(2*x-1)/(2*s2))
	}
	if dir == remove {
		return mechanism{
			lo: loss(-tailZ * sigma),
			hi: loss(1 + tailZ*sigma),
			delta: func(eps float64) float64 {
				if eps <= l1q {
					return -math.Expm1(eps)
				}
				c := math.Expm1(eps) + q // e^ε − (1−q)
				x := s2*(math.Log(c)-math.Log(q)) + 0.5
				d := q*normSF((x-1)/sigma) - c*normSF(x/sigma)
				return max(d, 0)
			},
		}
	}
	return mechanism{
		lo: -loss(tailZ * sigma),
		hi: -loss(-tailZ * sigma),
		delta: func(eps float64) float64 {
			if eps >= -l1q {
				return 0
			}
			c := math.Expm1(-eps) + q // e^{−ε} − (1−q)
			x := s2*(math.Log(c)-math.Log(q)) + 0.5
			e := math.Exp(eps)
			d := normCDF(x/sigma)*(-math.Expm1(eps+l1q)) - e*q*normCDF((x-1)/sigma)
			return max(d, 0)
		},
	}
}

func gaussianMechanism(mu float64) mechanism {
	return mechanism{
		lo: mu*mu/2 - tailZ*mu,
		hi: mu*mu/2 + tailZ*mu,
		delta: func(eps float64) float64 {
			return math.Exp(gaussianLogDelta(mu, eps))
		},
	}
}

func normSF(x float64) float64  { return 0.5 * math.Erfc(x/math.Sqrt2) }
func normCDF(x float64) float64 { return 0.5 * math.Erfc(-x/math.Sqrt2) }

// discretise builds the pessimistic connect-the-dots distribution on the
// grid h·[⌊lo/h⌋, ⌈hi/h⌉]: it matches the mechanism's δ(ε) at every grid
// point and interpolates it (linearly in e^ε) between them, so its δ(ε) is
// never below the true one (Doroshenko et al. 2022, Algorithm 1, with the
// fixed-gap formulas of dp_accounting's pld_pmf).
func discretise(m mechanism, h float64) dist {
	lo := int(math.Floor(m.lo / h))
	hi := int(math.Ceil(m.hi / h))
	if hi <= lo {
		hi = lo + 1
	}
	n := hi - lo + 1
	deltas := make([]float64, n)
	for i := range deltas {
		deltas[i] = m.delta(float64(lo+i) * h)
		if i > 0 && deltas[i] > deltas[i-1] {
			deltas[i] = deltas[i-1] // δ(ε) is non-increasing; remove rounding noise
		}
	}
	p := make([]float64, n)
	em1 := math.Expm1(h)
	emh := math.Expm1(-h)
	p[0] = (1 - deltas[0]) + (deltas[1]-deltas[0])/em1
	for i := 1; i < n-1; i++ {
		p[i] = ((deltas[i+1] - deltas[i]) - (em1+1)*(deltas[i]-deltas[i-1])) / em1
	}
	p[n-1] = (deltas[n-1] - deltas[n-2]) / emh
	for i := range p {
		p[i] = max(p[i], 0)
	}
	return dist{lo: lo, p: p, inf: deltas[n-1], h: h}
}

// chernoffLambdas are the loss-scale exponents λ used to bound the tails of
// a composition by E[e^{λS}] e^{−λk}.
var chernoffLambdas = []float64{
	1.0 / 1024, 1.0 / 256, 1.0 / 64, 1.0 / 16, 1.0 / 8, 0.25, 0.5, 1, 2, 4, 8, 16, 64, 256,
}

// logMGF returns log Σ_j p[j]·e^{t·j} for t in index units, shifted by the
// end of the support that dominates, with the powers of e^{±t} built by
// multiplication. It returns -Inf or +Inf when the sum under- or overflows;
// the caller then ignores this t (any t gives a valid bound).
func logMGF(p []float64, t float64) float64 {
	n := len(p)
	var s float64
	if t > 0 {
		r, w := math.Exp(-t), 1.0
		for j := n - 1; j >= 0 && w > 0; j-- {
			s += p[j] * w
			w *= r
		}
		return t*float64(n-1) + math.Log(s)
	}
	r, w := math.Exp(t), 1.0
	for j := 0; j < n && w > 0; j++ {
		s += p[j] * w
		w *= r
	}
	return math.Log(s)
}

// compose returns the distribution of the composed schedule for one
// direction: the Gaussian of parameter mu (if mu > 0, symmetric in both
// directions) and each subsampled part self-composed Steps times.
func (a *PLD) compose(dir direction, mu float64, sub []Part) (dist, error) {
	h := a.cfg.Interval
	for {
		d, ok, err := a.composeAt(dir, mu, sub, h)
		if err != nil || ok {
			return d, err
		}
		h *= 10
		if h > 1 {
			return dist{}, fmt.Errorf("%w: composed distribution too wide even at interval 1", ErrNotConverged)
		}
	}
}

func (a *PLD) composeAt(dir direction, mu float64, sub []Part, h float64) (dist, bool, error) {
	var ds []dist
	var times []int
	// A rough width check before discretising: each subsampled step spans
	// at most its single-step loss range.
	for _, p := range sub {
		m := subsampledMechanism(dir, p.Q, p.Sigma)
		if (m.hi-m.lo)/h > float64(a.cfg.MaxPoints) {
			return dist{}, false, nil
		}
		ds = append(ds, discretise(m, h))
		times = append(times, p.Steps)
	}
	if mu > 0 {
		m := gaussianMechanism(mu)
		if (m.hi-m.lo)/h > float64(a.cfg.MaxPoints) {
			return dist{}, false, nil
		}
		ds = append(ds, discretise(m, h))
		times = append(times, 1)
	}
	if len(ds) == 1 && times[0] == 1 {
		return ds[0], true, nil
	}
	// Window [klo, khi] of the composed index (relative to Σ T·lo) outside
	// which each tail carries at most TailMass/2, by Chernoff bounds.
	logTail := math.Log(a.cfg.TailMass / 2)
	maxK := 0
	for i, d := range ds {
		maxK += times[i] * (len(d.p) - 1)
	}
	khi, klo := float64(maxK), 0.0
	for _, lam := range chernoffLambdas {
		for _, sgn := range []float64{1, -1} {
			t := sgn * lam * h
			var lm float64
			for i, d := range ds {
				lm += float64(times[i]) * logMGF(d.p, t)
			}
			b := (lm - logTail) / t
			if math.IsNaN(b) || math.IsInf(b, 0) {
				continue
			}
			if sgn > 0 {
				khi = min(khi, math.Ceil(b))
			} else {
				klo = max(klo, math.Floor(b))
			}
		}
	}
	if klo > khi {
		klo, khi = 0, float64(maxK)
	}
	width := int(khi-klo) + 1
	if width > a.cfg.MaxPoints {
		return dist{}, false, nil
	}
	n := fastLen(width)
	fft := fourier.NewFFT(n)
	buf := make([]float64, n)
	var acc []complex128
	for i, d := range ds {
		clear(buf)
		for j, v := range d.p {
			buf[j%n] += v
		}
		c := fft.Coefficients(nil, buf)
		for k := range c {
			c[k] = cpow(c[k], times[i])
		}
		if acc == nil {
			acc = c
		} else {
			for k := range acc {
				acc[k] *= c[k]
			}
		}
	}
	out := fft.Sequence(buf, acc)
	inv := 1 / float64(n)
	p := make([]float64, width)
	kl := int(klo)
	for k := range p {
		p[k] = max(out[(kl+k)%n]*inv, 0)
	}
	lo := kl
	var logKeep float64 // log Π (1 − inf_i)^{T_i}
	for i, d := range ds {
		lo += times[i] * d.lo
		logKeep += float64(times[i]) * math.Log1p(-d.inf)
	}
	inf := -math.Expm1(logKeep) + a.cfg.TailMass
	return dist{lo: lo, p: p, inf: min(inf, 1), h: h}, true, nil
}

// cpow returns z^n by repeated squaring (more accurate than exp(n·log z)).
func cpow(z complex128, n int) complex128 {
	r := complex(1, 0)
	for n > 0 {
		if n&1 == 1 {
			r *= z
		}
		z *= z
		n >>= 1
	}
	return r
}

// fastLen returns the smallest n ≥ m whose prime factors are 2, 3 and 5.
func fastLen(m int) int {
	best := math.MaxInt
	for p2 := 1; p2 < 2*m; p2 *= 2 {
		for p3 := p2; p3 < 2*m; p3 *= 3 {
			for p5 := p3; p5 < 2*m; p5 *= 5 {
				if p5 >= m && p5 < best {
					best = p5
				}
			}
		}
	}
	return best
}

// epsilon returns the smallest ε ≥ 0 with δ(ε) ≤ delta. Scanning from the
// largest loss down, it keeps U = Σ_{j>i} p_j + inf and W = Σ_{j>i} p_j
// e^{L_{i+1} − L_j}, referenced to the current loss, so nothing overflows or
// underflows however large the losses; on [L_i, L_{i+1}],
// δ(ε) = U − e^{ε − L_{i+1}}·W.
func (d dist) epsilon(delta float64) float64 {
	if d.inf > delta {
		return math.Inf(1)
	}
	eh := math.Exp(-d.h)
	U, W := d.inf, 0.0
	n := len(d.p)
	for i := n - 1; i >= 0; i-- {
		if U-eh*W > delta { // δ(L_i) > delta: the answer is in (L_i, L_{i+1}]
			return max(0, float64(d.lo+i+1)*d.h+math.Log((U-delta)/W))
		}
		U += d.p[i]
		W = d.p[i] + eh*W
	}
	if U <= delta || W == 0 {
		return 0
	}
	return max(0, float64(d.lo)*d.h+math.Log((U-delta)/W))
}

// delta returns the hockey-stick divergence at eps:
// inf + Σ_{L_j > ε} p_j (1 − e^{ε − L_j}).
func (d dist) delta(eps float64) float64 {
	s := d.inf
	for j := len(d.p) - 1; j >= 0; j-- {
		l := float64(d.lo+j) * d.h
		if l <= eps {
			break
		}
		s += d.p[j] * -math.Expm1(eps-l)
	}
	return min(s, 1)
}

// gaussianLogDelta returns log δ(ε) for the Gaussian mechanism with
// sensitivity/σ = mu (Balle and Wang 2018, Theorem 8):
// δ = Φ(μ/2 − ε/μ) − e^ε Φ(−μ/2 − ε/μ), in log space so that ε in the
// thousands neither overflows e^ε nor underflows Φ.
func gaussianLogDelta(mu, eps float64) float64 {
	la := logNormCDF(mu/2 - eps/mu)
	lb := logNormCDF(-mu/2 - eps/mu)
	r := eps + lb - la // log of the ratio of the second term to the first, < 0
	if r >= 0 {
		return math.Inf(-1)
	}
	return la + log1mExp(-r)
}

// gaussianEpsilon solves δ(ε) = delta for the Gaussian mechanism by
// bisection on ε (δ(ε) is decreasing).
func gaussianEpsilon(mu, delta float64) float64 {
	ld := math.Log(delta)
	if gaussianLogDelta(mu, 0) <= ld {
		return 0
	}
	lo, hi := 0.0, 1.0
	for gaussianLogDelta(mu, hi) > ld {
		lo, hi = hi, 2*hi
	}
	for i := 0; i < 200 && hi-lo > 1e-15*hi; i++ {
		mid := (lo + hi) / 2
		if gaussianLogDelta(mu, mid) > ld {
			lo = mid
		} else {
			hi = mid
		}
	}
	return hi
}
