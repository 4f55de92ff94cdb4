package privacy

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"math"
)

// GranularityBits fixes the noise lattice: noise of standard deviation σ is
// a multiple of g = 2^(⌈log₂σ⌉ − GranularityBits), so σ/g lies in
// (2^39, 2^40].
const GranularityBits = 40

// tailSigmas bounds the envelope's table, in standard deviations; the mass
// beyond it, 2·Φ(−12) ≈ 3.6e-33 per draw, is part of TailMass.
const tailSigmas = 12

// TailMass bounds the probability mass of the discrete Gaussian that a draw
// never reaches: blocks whose probability is below what 64-bit thresholds
// can express (tail mass below 2^-65) and the mass beyond 12σ. The ledger
// charges it in δ for every credited draw (privacy.EffectiveDelta);
// TestTailMassBound checks the tables stay within it.
const TailMass = 0x1p-64

// Granularity returns the power of two g on which Gaussian noise of
// standard deviation sigma is snapped: 2^(⌈log₂σ⌉ − 40), so that σ/g is in
// (2^39, 2^40]. It returns 0 for sigma = 0 and NaN for an invalid sigma.
func Granularity(sigma float64) float64 {
	if CheckSigma(sigma) != nil || sigma < minNoiseSigma {
		if sigma == 0 {
			return 0
		}
		return math.NaN()
	}
	frac, exp := math.Frexp(sigma) // sigma = frac·2^exp, frac in [0.5, 1)
	if frac == 0.5 {
		exp-- // sigma is a power of two
	}
	return math.Ldexp(1, exp-GranularityBits)
}

// minNoiseSigma keeps the granularity a normal float64.
const minNoiseSigma = 0x1p-900

// Lattice returns the one lattice g, a power of two, on which every tier
// of a round adds its noise: the granularity of the smallest positive
// noise standard deviation among sigmas, made coarser where needed so that
// every value the round can produce, at most magnitude in absolute value,
// is an integer multiple of g below 2^52·g — then sums of such values in
// float64 are exact (no rounding between tiers) and the snap of a value
// already on the lattice is the identity. It returns 0 when no sigma is
// positive, and an error when no lattice keeps every σ/g in [2^20, 2^52].
func Lattice(sigmas []float64, magnitude float64) (float64, error) {
	lo, hi := math.Inf(1), 0.0
	for _, s := range sigmas {
		if s > 0 {
			lo, hi = math.Min(lo, s), math.Max(hi, s)
		}
	}
	if hi == 0 {
		return 0, nil
	}
	g := Granularity(lo)
	if err := CheckSigma(lo); err != nil || math.IsNaN(g) {
		return 0, fmt.Errorf("lattice: %w", paramErr("sigma", lo, "a positive finite noise standard deviation"))
	}
	for magnitude/g >= 0x1p52 {
		g *= 2
	}
	if lo/g < minLatticeScale || hi/g > maxLatticeScale {
		return 0, fmt.Errorf("%w: no lattice fits noise σ from %g to %g with values up to %g (σ/g must stay in [2^20, 2^52])", ErrInvalidParameter, lo, hi, magnitude)
	}
	return g, nil
}

// SnapSensitivity returns the L2 sensitivity to account for when a vector of
// n coordinates with L2 sensitivity c is released through AddTo or AddTo64
// with noise sigma: each coordinate is rounded to the granularity g before
// noise is added, which moves it by at most g/2, so two neighbouring inputs
// can end up to c + g·√n apart. The overhead g√n/c is below 2^-40·(σ/c)·√n
// relative — 9e-10 for σ = c and n = 10⁶ — and the ledger can charge it by
// dividing the noise multiplier by (1 + g√n/c).
func SnapSensitivity(c, sigma float64, n int) float64 {
	return c + Granularity(sigma)*math.Sqrt(float64(n))
}

// Gaussian draws Gaussian noise from an injected source of random bytes in a
// way that does not leak through floating-point artefacts.
//
// Mironov (2012) showed that textbook samplers (Box–Muller, ziggurat, inverse
// CDF) leave the low-order bits of x + noise dependent on x: the set of
// doubles reachable from one input differs from that of its neighbour, and
// that breaks DP outright. As Google's differential-privacy library does in
// go/noise, Strata instead works on a lattice gℤ with g a power of two
// (Granularity): x is rounded to X = round(x/g), an integer M is drawn from
// the discrete Gaussian with scale s = σ/g ∈ (2^39, 2^40], and the output is
// float(X + M)·g, computed from the exact integer X + M. The output is a
// fixed function of X + M, whose distribution is that of M shifted by X, so
// no bit of it depends on x other than through X.
//
// Google samples a symmetric binomial by rejection with a geometric
// proposal, which accepts one proposal in about 16; Strata samples the
// discrete Gaussian by rejection from a piecewise-uniform envelope (blocks of
// 2^37 lattice points whose probabilities are exact dyadic rationals), which
// accepts about 85% of proposals and needs three 64-bit words per proposal,
// so 10⁶ coordinates take about 0.1 s on one core (BenchmarkAddTo).
//
// The extra privacy cost, all of it stated here and none of it hidden:
//   - rounding x to g: the L2 sensitivity grows from c to c + g√n for n
//     coordinates (SnapSensitivity), i.e. the effective noise multiplier is
//     σ/(c + g√n) instead of σ/c — a relative change below 1e-9 for σ ≤ c·√(10⁶/n);
//   - truncation: blocks whose tail mass is below 2^-65, and the mass beyond
//     12σ, are never proposed; on the support that remains the output's
//     density is the untruncated one's divided by 1 − τ (τ ≤ TailMass), so
//     the privacy loss is the ideal one there and δ grows by at most
//     TailMass per coordinate (EffectiveDelta says how);
//   - a discrete Gaussian with scale s ≥ 2^39 instead of the continuous one:
//     its privacy loss for an integer shift equals the continuous one
//     pointwise; the acceptance test is computed in float64 with relative
//     error below 2^-48 per lattice point, so each coordinate's privacy loss
//     is within 2^-47 of ideal, i.e. at most n·2^-47 (7e-9 for n = 10⁶) added
//     to ε per release.
//
// The ledger charges all three: the first by SnapSensitivity, the second in
// δ (TailMass per credited draw), the third in ε (2^-47 per credited draw).
//
// A Gaussian is not safe for concurrent use; give each goroutine its own.
type Gaussian struct {
	src bitSource
	tab *dgTable // cached envelope of the last scale used
}

// NewGaussian returns a sampler reading random bytes from r, buffered so that
// large vectors cost few reads. A nil r means crypto/rand.Reader; tests pass
// a seeded math/rand/v2 ChaCha8 for reproducibility.
func NewGaussian(r io.Reader) *Gaussian {
	if r == nil {
		r = rand.Reader
	}
	return &Gaussian{src: bitSource{r: r, pos: len(bitSource{}.buf)}}
}

// Sample returns one draw of Gaussian noise with standard deviation sigma,
// snapped to Granularity(sigma). sigma = 0 returns 0.
func (g *Gaussian) Sample(sigma float64) (float64, error) {
	if err := checkNoiseSigma(sigma); err != nil {
		return 0, fmt.Errorf("gaussian sample: %w", err)
	}
	if sigma == 0 {
		return 0, nil
	}
	gran := Granularity(sigma)
	t := g.table(sigma / gran)
	m, err := g.lattice(t)
	if err != nil {
		return 0, fmt.Errorf("gaussian sample: %w", err)
	}
	return float64(m) * gran, nil
}

// AddTo adds independent Gaussian noise of standard deviation sigma to every
// element of dst, snapping each result to the lattice as described on
// Gaussian. sigma = 0 leaves dst unchanged. An element that is NaN or ±Inf is
// an error; on any error dst may be partly noised and must be discarded.
func (g *Gaussian) AddTo(dst []float32, sigma float64) error {
	if err := checkNoiseSigma(sigma); err != nil {
		return fmt.Errorf("gaussian noise: %w", err)
	}
	if sigma == 0 {
		return nil
	}
	gran := Granularity(sigma)
	t := g.table(sigma / gran)
	inv := 1 / gran
	for i, v := range dst {
		y, err := g.snap(float64(v), t, gran, inv, i)
		if err != nil {
			return err
		}
		dst[i] = float32(y)
	}
	return nil
}

// AddTo64 is AddTo for float64 vectors.
func (g *Gaussian) AddTo64(dst []float64, sigma float64) error {
	return g.AddTo64On(dst, sigma, Granularity(sigma))
}

// Lattice scale bounds: a lattice finer or coarser than a sampler's own
// (Granularity) keeps σ/g within these, so that the discrete Gaussian stays
// indistinguishable from a smooth one (its smoothing error is below
// e^{−2π²·2^40}) and the tables stay small.
const (
	minLatticeScale = 0x1p20
	maxLatticeScale = 0x1p52
)

// AddTo64On is AddTo64 on an explicit lattice gran·ℤ, a power of two with
// sigma/gran in [2^20, 2^52]: every tier of a round adds its noise on the
// round's one lattice (Lattice), so that sums of noised values from
// different tiers are exact in float64 and no rounding sits between two
// noises. Values already on the lattice are not moved by the snap.
func (g *Gaussian) AddTo64On(dst []float64, sigma, gran float64) error {
	if err := checkNoiseSigma(sigma); err != nil {
		return fmt.Errorf("gaussian noise: %w", err)
	}
	if sigma == 0 {
		return nil
	}
	if f, _ := math.Frexp(gran); f != 0.5 || !(sigma/gran >= minLatticeScale && sigma/gran <= maxLatticeScale) {
		return fmt.Errorf("gaussian noise: %w", paramErr("gran", gran, fmt.Sprintf("a power of two with σ/gran in [2^20, 2^52] (σ = %g)", sigma)))
	}
	t := g.table(sigma / gran)
	inv := 1 / gran
	for i, v := range dst {
		y, err := g.snap(v, t, gran, inv, i)
		if err != nil {
			return err
		}
		dst[i] = y
	}
	return nil
}

// snap returns float(X + M)·g for X = round(x/g) and M a lattice draw. X is
// an integer-valued float64 (x/g is exact: g is a power of two) and |M| <
// 2^45, so X + M is the correctly rounded value of the exact integer sum: the
// output is a fixed function of X + M, whatever the magnitude of x.
func (g *Gaussian) snap(x float64, t *dgTable, gran, inv float64, i int) (float64, error) {
	X := math.RoundToEven(x * inv)
	if math.IsInf(X, 0) || math.IsNaN(X) {
		return 0, fmt.Errorf("gaussian noise: %w", paramErr(fmt.Sprintf("dst[%d]", i), x, "finite values"))
	}
	m, err := g.lattice(t)
	if err != nil {
		return 0, fmt.Errorf("gaussian noise: %w", err)
	}
	y := (X + float64(m)) * gran
	if math.IsInf(y, 0) {
		return 0, fmt.Errorf("gaussian noise: %w", paramErr(fmt.Sprintf("dst[%d]", i), x, "values whose noised result is finite"))
	}
	return y, nil
}

func checkNoiseSigma(sigma float64) error {
	if err := CheckSigma(sigma); err != nil {
		return err
	}
	if sigma != 0 && sigma < minNoiseSigma {
		return paramErr("sigma", sigma, "{0} ∪ [2^-900, +Inf)")
	}
	return nil
}

// blockBits returns log₂ of the width W of an envelope block, in lattice
// points, for scale s: W ≤ s/4 keeps the acceptance rate near 85% (37 for
// the scales Granularity gives, (2^39, 2^40]; less on a finer or coarser
// lattice).
func blockBits(s float64) int {
	_, e := math.Frexp(s) // s in [2^(e−1), 2^e)
	return max(0, e-1-2)
}

// dgTable is the rejection envelope for the discrete Gaussian with scale s
// over n ≥ 0, target weight w(n)·e^{−n²/(2s²)} with w(0) = 1, w(n>0) = 2 (a
// random sign then gives the symmetric distribution on ℤ). Block k covers
// [kW, (k+1)W); it is proposed with the dyadic probability p_k = (cum[k+1] −
// cum[k])/2^64 and the point uniformly within it; the point n is accepted
// with probability (w(n)/2)·e^{−(n² − (kW)²)/(2s²)}·rho[k], where rho[k] ≤ 1
// makes the accepted distribution exactly proportional to the target.
type dgTable struct {
	s    float64
	bits int      // log₂ of the block width W
	inv2 float64  // 1/(2s²)
	cum  []uint64 // cum[k] = lower threshold of block k; cum[0] = 0
	rho  []float64
	// guide[i] is the block containing the threshold i·2^56, where the
	// search for u with top byte i starts (a guide table: one or two
	// comparisons instead of a binary search).
	guide [256]int32
}

func (g *Gaussian) table(s float64) *dgTable {
	if g.tab != nil && g.tab.s == s {
		return g.tab
	}
	bits := blockBits(s)
	W := math.Ldexp(1, bits)
	K := int(math.Ceil(tailSigmas * s / W))
	inv2 := 1 / (2 * s * s)
	pi := make([]float64, K)
	var total float64
	for k := range pi {
		b := float64(k) * W
		pi[k] = math.Exp(-b * b * inv2)
		total += pi[k]
	}
	// Thresholds come from the tail masses, summed from the far end, so that
	// blocks far out keep their probability to 64-bit resolution (a
	// cumulative sum from the centre would stop resolving them at 2^-53).
	tail := make([]float64, K+1)
	for k := K - 1; k >= 0; k-- {
		tail[k] = tail[k+1] + pi[k]
	}
	for K > 1 && tail[K-1]/total*0x1p64 < 0.5 {
		K-- // the block's probability rounds to nothing: never proposed
	}
	pi = pi[:K]
	cum := make([]uint64, K)
	for k := 1; k < K; k++ {
		cum[k] = -uint64(math.Round(tail[k] / total * 0x1p64)) // 2^64 − tail·2^64
	}
	// Actual dyadic block probabilities, and rho so that envelope·rho is
	// proportional to the target's block maximum.
	p := make([]float64, K)
	for k := range p {
		hi := uint64(0) // 2^64 wraps to 0: the last block ends at 2^64
		if k+1 < K {
			hi = cum[k+1]
		}
		p[k] = float64(hi-cum[k]) * 0x1p-64
	}
	var m float64 // max over blocks of pi[k]/p[k]
	for k := range p {
		if p[k] > 0 {
			m = max(m, pi[k]/p[k])
		}
	}
	rho := make([]float64, K)
	for k := range rho {
		if p[k] > 0 {
			rho[k] = pi[k] / (p[k] * m)
		}
	}
	tab := &dgTable{s: s, bits: bits, inv2: inv2, cum: cum, rho: rho}
	k := 0
	for i := range tab.guide {
		u := uint64(i) << 56
		for k+1 < K && cum[k+1] <= u {
			k++
		}
		tab.guide[i] = int32(k)
	}
	g.tab = tab
	return tab
}

// lattice returns one draw of the (truncated) discrete Gaussian of scale t.s.
func (g *Gaussian) lattice(t *dgTable) (int64, error) {
	W := int64(1) << t.bits
	for {
		u, err := g.src.uint64()
		if err != nil {
			return 0, err
		}
		// Block: the last k with cum[k] ≤ u.
		k := int(t.guide[u>>56])
		for k+1 < len(t.cum) && t.cum[k+1] <= u {
			k++
		}
		v, err := g.src.uint64()
		if err != nil {
			return 0, err
		}
		off := int64(v & uint64(W-1))
		neg := v>>63 == 1
		b := int64(k) * W
		n := b + off
		x := float64(off) * float64(n+b) * t.inv2 // (n² − b²)/(2s²) ≥ 0
		r := t.rho[k]
		if n == 0 {
			r *= 0.5
		}
		w, err := g.src.uint64()
		if err != nil {
			return 0, err
		}
		// Accept with probability r·e^{−x}. Since 1 − x ≤ e^{−x} ≤ 1, most
		// draws are decided without computing the exponential (a squeeze:
		// the decision is the same as comparing with r·e^{−x} itself).
		uf := float64(w>>11) * 0x1p-53
		if uf < r*(1-x) || (uf < r && uf < r*math.Exp(-x)) {
			if neg {
				return -n, nil
			}
			return n, nil
		}
	}
}

// bitSource buffers an io.Reader and hands out 64-bit words.
type bitSource struct {
	r   io.Reader
	buf [8192]byte
	pos int
}

func (b *bitSource) uint64() (uint64, error) {
	if b.pos+8 > len(b.buf) {
		if _, err := io.ReadFull(b.r, b.buf[:]); err != nil {
			return 0, fmt.Errorf("reading randomness: %w", err)
		}
		b.pos = 0
	}
	v := binary.LittleEndian.Uint64(b.buf[b.pos:])
	b.pos += 8
	return v, nil
}
