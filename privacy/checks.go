package privacy

import (
	"errors"
	"fmt"
	"math"
	"strconv"
)

// Sentinel errors. Callers test for them with errors.Is; the messages of the
// errors returned carry the parameter name and value.
var (
	// ErrInvalidParameter is wrapped by every error that rejects an input:
	// NaN, ±Inf, or a value outside the parameter's range.
	ErrInvalidParameter = errors.New("privacy: invalid parameter")
	// ErrNoSolution is returned by CalibrateSigma and MaxSteps when no value
	// in the searched range meets the target (for example ε so small that
	// no σ below the search ceiling reaches it).
	ErrNoSolution = errors.New("privacy: no solution")
	// ErrNotConverged is returned when a numerical procedure does not reach
	// its stopping rule; the caller gets an error rather than a bound that
	// might be too small.
	ErrNotConverged = errors.New("privacy: did not converge")
)

// ParamError describes a rejected parameter. It matches ErrInvalidParameter
// under errors.Is, so callers need not know the type.
type ParamError struct {
	Name  string // the parameter, e.g. "delta" or "parts[2].q"
	Value string // the rejected value, formatted
	Want  string // the accepted range, e.g. "(0, 1)"
}

func (e *ParamError) Error() string {
	return fmt.Sprintf("privacy: %s = %s: must be in %s", e.Name, e.Value, e.Want)
}

// Unwrap makes errors.Is(err, ErrInvalidParameter) true.
func (e *ParamError) Unwrap() error { return ErrInvalidParameter }

func paramErr(name string, v float64, want string) error {
	return &ParamError{Name: name, Value: strconv.FormatFloat(v, 'g', -1, 64), Want: want}
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

// CheckEpsilon accepts a finite ε > 0 (a budget or a calibration target).
func CheckEpsilon(epsilon float64) error { return checkEpsilon("epsilon", epsilon) }

func checkEpsilon(name string, epsilon float64) error {
	if !finite(epsilon) || epsilon <= 0 {
		return paramErr(name, epsilon, "(0, +Inf)")
	}
	return nil
}

// CheckDelta accepts δ in the open interval (0, 1): δ = 0 has no finite ε
// under the Gaussian mechanism and δ ≥ 1 promises nothing.
func CheckDelta(delta float64) error { return checkDelta("delta", delta) }

func checkDelta(name string, delta float64) error {
	if !finite(delta) || delta <= 0 || delta >= 1 {
		return paramErr(name, delta, "(0, 1)")
	}
	return nil
}

// CheckQ accepts a sampling rate q in [0, 1]; q = 0 means the client is
// never sampled and costs nothing, q = 1 means no subsampling.
func CheckQ(q float64) error { return checkQ("q", q) }

func checkQ(name string, q float64) error {
	if !finite(q) || q < 0 || q > 1 {
		return paramErr(name, q, "[0, 1]")
	}
	return nil
}

// CheckSigma accepts a noise multiplier σ in [0, +Inf). σ = 0 is allowed: it
// is an unprotected mechanism, which the accountants report as ε = +Inf
// rather than reject, so that the ledger can say so.
func CheckSigma(sigma float64) error { return checkSigma("sigma", sigma) }

func checkSigma(name string, sigma float64) error {
	if !finite(sigma) || sigma < 0 {
		return paramErr(name, sigma, "[0, +Inf)")
	}
	return nil
}

// CheckSteps accepts a number of rounds T ≥ 0.
func CheckSteps(steps int) error { return checkSteps("steps", steps) }

func checkSteps(name string, steps int) error {
	if steps < 0 {
		return &ParamError{Name: name, Value: strconv.Itoa(steps), Want: "[0, +Inf)"}
	}
	return nil
}

// checkParts validates a schedule, naming the offending part.
func checkParts(parts []Part) error {
	for i, p := range parts {
		pre := "parts[" + strconv.Itoa(i) + "]."
		if err := checkQ(pre+"q", p.Q); err != nil {
			return err
		}
		if err := checkSigma(pre+"sigma", p.Sigma); err != nil {
			return err
		}
		if err := checkSteps(pre+"steps", p.Steps); err != nil {
			return err
		}
	}
	return nil
}

// unprotected reports whether the schedule contains a part that releases
// data without noise (σ = 0, q > 0, T > 0): its ε is +Inf.
func unprotected(parts []Part) bool {
	for _, p := range parts {
		if p.Sigma == 0 && p.Q > 0 && p.Steps > 0 {
			return true
		}
	}
	return false
}
