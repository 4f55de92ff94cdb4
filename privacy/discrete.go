package privacy

import (
	"fmt"
	"math"
	"math/big"
	"math/bits"
)

// DiscreteSample returns one exact draw from the discrete Gaussian
// N_ℤ(0, σ²), P[X = x] ∝ e^{−x²/(2σ²)} for integer x, by Algorithm 3 of
// Canonne, Kamath and Steinke (2020): rejection from a discrete Laplace,
// with every Bernoulli(e^{−γ}) decided by exact rational arithmetic on the
// float64 sigma2 (an exact dyadic rational) and uniform integers drawn from
// the injected reader. No floating-point value enters a decision, so the
// output distribution is exactly the discrete Gaussian: integer-valued
// pipelines (secure aggregation over ℤ_m) can add it and account it with the
// discrete Gaussian's guarantees (ρ = Δ²/(2σ²) zCDP for integer shifts Δ).
//
// sigma2 must be finite and in (0, 2^60]; it is slower than Sample (it does
// exact arithmetic with math/big), about 10 µs per draw at σ² = 100.
func (g *Gaussian) DiscreteSample(sigma2 float64) (int64, error) {
	if !finite(sigma2) || sigma2 <= 0 || sigma2 > 0x1p60 {
		return 0, fmt.Errorf("discrete gaussian: %w", paramErr("sigma2", sigma2, "(0, 2^60]"))
	}
	x, err := g.discrete(new(big.Rat).SetFloat64(sigma2))
	if err != nil {
		return 0, fmt.Errorf("discrete gaussian: %w", err)
	}
	return x, nil
}

// AddDiscrete adds an independent exact discrete Gaussian N_ℤ(0, sigma2) to
// every element of dst. On error dst may be partly noised and must be
// discarded.
func (g *Gaussian) AddDiscrete(dst []int64, sigma2 float64) error {
	if !finite(sigma2) || sigma2 <= 0 || sigma2 > 0x1p60 {
		return fmt.Errorf("discrete gaussian: %w", paramErr("sigma2", sigma2, "(0, 2^60]"))
	}
	s2 := new(big.Rat).SetFloat64(sigma2)
	for i := range dst {
		x, err := g.discrete(s2)
		if err != nil {
			return fmt.Errorf("discrete gaussian: %w", err)
		}
		dst[i] += x
	}
	return nil
}

func (g *Gaussian) discrete(s2 *big.Rat) (int64, error) {
	sf, _ := s2.Float64()
	// t = ⌊σ⌋ + 1, computed exactly: the largest integer t−1 with (t−1)² ≤ σ².
	t := int64(math.Sqrt(sf))
	for t > 0 && new(big.Rat).SetInt64(t*t).Cmp(s2) > 0 {
		t--
	}
	for new(big.Rat).SetInt64((t+1)*(t+1)).Cmp(s2) <= 0 {
		t++
	}
	t++
	tRat := new(big.Rat).SetInt64(t)
	s2OverT := new(big.Rat).Quo(s2, tRat)
	twoS2 := new(big.Rat).Add(s2, s2)
	gamma := new(big.Rat)
	for {
		u, err := g.uniformInt64(t)
		if err != nil {
			return 0, err
		}
		// D ~ Bernoulli(exp(−U/t))
		d, err := g.bernoulliExp(gamma.SetFrac64(u, t))
		if err != nil {
			return 0, err
		}
		if !d {
			continue
		}
		// V ~ Geometric(1 − e^{−1}): count successes of Bernoulli(e^{−1}).
		var v int64
		for {
			a, err := g.bernoulliExp(gamma.SetInt64(1))
			if err != nil {
				return 0, err
			}
			if !a {
				break
			}
			v++
		}
		x := u + t*v
		sign, err := g.src.uint64()
		if err != nil {
			return 0, err
		}
		neg := sign&1 == 1
		if neg && x == 0 {
			continue
		}
		// C ~ Bernoulli(exp(−(|Y| − σ²/t)² / (2σ²)))
		gamma.SetInt64(x)
		gamma.Sub(gamma, s2OverT)
		gamma.Mul(gamma, gamma)
		gamma.Quo(gamma, twoS2)
		c, err := g.bernoulliExp(gamma)
		if err != nil {
			return 0, err
		}
		if c {
			if neg {
				return -x, nil
			}
			return x, nil
		}
	}
}

// bernoulliExp returns true with probability exactly e^{−γ} for rational
// γ ≥ 0 (Canonne, Kamath, Steinke 2020, Algorithms 1 and 2). gamma is not
// modified.
func (g *Gaussian) bernoulliExp(gamma *big.Rat) (bool, error) {
	if gamma.Sign() < 0 {
		return false, fmt.Errorf("%w: bernoulliExp of negative γ", ErrInvalidParameter)
	}
	one := big.NewRat(1, 1)
	if gamma.Cmp(one) <= 0 {
		return g.bernoulliExpSmall(gamma)
	}
	// e^{−γ} = (e^{−1})^{⌊γ⌋} · e^{−(γ−⌊γ⌋)}
	fl := new(big.Int).Quo(gamma.Num(), gamma.Denom())
	for k := new(big.Int); k.Cmp(fl) < 0; k.Add(k, big.NewInt(1)) {
		b, err := g.bernoulliExpSmall(one)
		if err != nil || !b {
			return false, err
		}
	}
	frac := new(big.Rat).Sub(gamma, new(big.Rat).SetInt(fl))
	return g.bernoulliExpSmall(frac)
}

// bernoulliExpSmall is bernoulliExp for γ in [0, 1]: it draws Bernoulli(γ/k)
// for k = 1, 2, … until the first failure and returns true iff that k is
// odd, an event of probability Σ_k (−γ)^k/k! = e^{−γ}.
func (g *Gaussian) bernoulliExpSmall(gamma *big.Rat) (bool, error) {
	k := int64(1)
	p := new(big.Rat)
	for {
		p.Quo(gamma, new(big.Rat).SetInt64(k))
		a, err := g.bernoulliRat(p)
		if err != nil {
			return false, err
		}
		if !a {
			return k%2 == 1, nil
		}
		k++
	}
}

// bernoulliRat returns true with probability exactly p = n/d in [0, 1].
func (g *Gaussian) bernoulliRat(p *big.Rat) (bool, error) {
	n, d := p.Num(), p.Denom()
	if d.IsUint64() && d.Uint64() <= 1<<62 {
		u, err := g.uniformInt64(int64(d.Uint64()))
		if err != nil {
			return false, err
		}
		return big.NewInt(u).Cmp(n) < 0, nil
	}
	u, err := g.uniformBig(d)
	if err != nil {
		return false, err
	}
	return u.Cmp(n) < 0, nil
}

// uniformInt64 returns a uniform integer in [0, n) for 0 < n ≤ 2^62, by
// masking and rejection (exact).
func (g *Gaussian) uniformInt64(n int64) (int64, error) {
	if n == 1 {
		return 0, nil
	}
	mask := uint64(1)<<uint(64-bits.LeadingZeros64(uint64(n-1))) - 1
	for {
		w, err := g.src.uint64()
		if err != nil {
			return 0, err
		}
		if v := w & mask; v < uint64(n) {
			return int64(v), nil
		}
	}
}

// uniformBig returns a uniform integer in [0, n) by masking and rejection.
func (g *Gaussian) uniformBig(n *big.Int) (*big.Int, error) {
	bitsN := new(big.Int).Sub(n, big.NewInt(1)).BitLen()
	words := (bitsN + 63) / 64
	buf := make([]byte, 8*words)
	for {
		for i := 0; i < words; i++ {
			w, err := g.src.uint64()
			if err != nil {
				return nil, err
			}
			for b := 0; b < 8; b++ {
				buf[8*i+b] = byte(w >> (8 * b))
			}
		}
		u := new(big.Int).SetBytes(buf)
		if extra := 8*len(buf) - bitsN; extra > 0 {
			u.Rsh(u, uint(extra))
		}
		if u.Cmp(n) < 0 {
			return u, nil
		}
	}
}
