package privacy

import (
	"fmt"
	"math"
)

// Search limits for CalibrateSigma and MaxSteps.
const (
	// maxSigma is the largest noise multiplier CalibrateSigma considers.
	maxSigma = 1e6
	// sigmaTol is the width, relative to σ (absolute below σ = 1), of the
	// final bracket of CalibrateSigma: far below the 0.001 grid planners use.
	sigmaTol = 1e-7
	// maxStepsCap is the largest T MaxSteps considers.
	maxStepsCap = 1 << 40
)

// CalibrateSigma returns the smallest noise multiplier σ such that T = steps
// rounds at sampling rate q are (epsilon, delta)-DP under acc, to within a
// relative 1e-7 and always from the feasible side: ε(σ) ≤ epsilon holds for
// the σ returned. It assumes ε(σ) decreases in σ, as it does for both
// accountants. A regula falsi (Illinois) search keeps a bracket
// [σ_lo, σ_hi] with ε(σ_lo) > epsilon ≥ ε(σ_hi); for the PLD accountant the
// bracket starts from the (much cheaper) RDP answer, which is an upper bound.
func CalibrateSigma(acc Accountant, q float64, steps int, epsilon, delta float64) (float64, error) {
	if acc == nil {
		return 0, fmt.Errorf("calibrate: %w: nil accountant", ErrInvalidParameter)
	}
	for _, err := range []error{checkQ("q", q), checkSteps("steps", steps), CheckEpsilon(epsilon), CheckDelta(delta)} {
		if err != nil {
			return 0, fmt.Errorf("calibrate: %w", err)
		}
	}
	if q == 0 || steps == 0 {
		return 0, nil // nothing is released about anyone
	}
	f := func(sigma float64) (float64, error) {
		e, err := acc.Epsilon([]Part{{Q: q, Sigma: sigma, Steps: steps}}, delta)
		if err != nil {
			return 0, fmt.Errorf("calibrate: σ = %g: %w", sigma, err)
		}
		return e - epsilon, nil
	}
	// Initial upper guess: the RDP answer when acc is not RDP (PLD ≤ RDP).
	hi := 1.0
	if _, isRDP := acc.(rdpAccountant); !isRDP {
		if s, err := CalibrateSigma(NewRDP(), q, steps, epsilon, delta); err == nil && s > 0 {
			hi = s
		}
	}
	fhi, err := f(hi)
	if err != nil {
		return 0, err
	}
	lo, flo := hi, fhi
	switch {
	case fhi > 0: // hi infeasible: grow
		for fhi > 0 {
			lo, flo = hi, fhi
			hi *= 2
			if hi > maxSigma {
				return 0, fmt.Errorf("calibrate: %w: ε = %g at δ = %g needs σ > %g", ErrNoSolution, epsilon, delta, maxSigma)
			}
			if fhi, err = f(hi); err != nil {
				return 0, err
			}
		}
	default: // hi feasible: find an infeasible lo
		lo = hi * 0.8
		for {
			if flo, err = f(lo); err != nil {
				return 0, err
			}
			if flo > 0 {
				break
			}
			hi, fhi = lo, flo
			lo *= 0.5
			if lo < 1e-6 {
				return hi, nil
			}
		}
	}
	// Illinois: regula falsi with halving of the stale end's residual.
	side := 0
	for i := 0; i < 200 && hi-lo > sigmaTol*max(hi, 1); i++ {
		m := hi - fhi*(hi-lo)/(fhi-flo)
		if !(m > lo && m < hi) || math.IsInf(flo, 0) {
			m = (lo + hi) / 2
		}
		// Keep the new point strictly inside by a margin, so the bracket
		// shrinks from both sides.
		tol := sigmaTol * max(hi, 1) / 4
		m = min(max(m, lo+tol), hi-tol)
		fm, err := f(m)
		if err != nil {
			return 0, err
		}
		if fm > 0 {
			lo, flo = m, fm
			if side == -1 {
				fhi /= 2
			}
			side = -1
		} else {
			hi, fhi = m, fm
			if side == 1 && !math.IsInf(flo, 0) {
				flo /= 2
			}
			side = 1
		}
	}
	return hi, nil
}

// MaxSteps returns the largest number of rounds T such that T rounds at
// sampling rate q with noise multiplier sigma are (epsilon, delta)-DP under
// acc; 0 if even one round exceeds the budget. q = 0 returns math.MaxInt
// (nobody is ever sampled); a budget that holds beyond 2^40 rounds returns
// 2^40. For the RDP accountant the one-step curve is computed once.
func MaxSteps(acc Accountant, q, sigma, epsilon, delta float64) (int, error) {
	if acc == nil {
		return 0, fmt.Errorf("max steps: %w: nil accountant", ErrInvalidParameter)
	}
	for _, err := range []error{checkQ("q", q), checkSigma("sigma", sigma), CheckEpsilon(epsilon), CheckDelta(delta)} {
		if err != nil {
			return 0, fmt.Errorf("max steps: %w", err)
		}
	}
	if q == 0 {
		return math.MaxInt, nil
	}
	if sigma == 0 {
		return 0, nil
	}
	var eps func(T int) (float64, error)
	if _, isRDP := acc.(rdpAccountant); isRDP {
		one := RDPStep(q, sigma)
		curve := make([]float64, len(one))
		eps = func(T int) (float64, error) {
			for i, v := range one {
				curve[i] = float64(T) * v
			}
			e, _, err := EpsilonFromRDP(curve, delta)
			return e, err
		}
	} else {
		eps = func(T int) (float64, error) {
			return acc.Epsilon([]Part{{Q: q, Sigma: sigma, Steps: T}}, delta)
		}
	}
	ok := func(T int) (bool, error) {
		e, err := eps(T)
		if err != nil {
			return false, fmt.Errorf("max steps: T = %d: %w", T, err)
		}
		return e <= epsilon, nil
	}
	if good, err := ok(1); err != nil || !good {
		return 0, err
	}
	lo, hi := 1, 2 // ok(lo), and hi to be found with !ok(hi)
	for {
		good, err := ok(hi)
		if err != nil {
			return 0, err
		}
		if !good {
			break
		}
		lo = hi
		if hi >= maxStepsCap {
			return maxStepsCap, nil
		}
		hi *= 2
	}
	for hi-lo > 1 {
		m := lo + (hi-lo)/2
		good, err := ok(m)
		if err != nil {
			return 0, err
		}
		if good {
			lo = m
		} else {
			hi = m
		}
	}
	return lo, nil
}
