package empirical

import (
	"fmt"
	"math"
	"slices"

	"gonum.org/v1/gonum/mathext"
)

// ClopperPearson returns one-sided Clopper–Pearson bounds on a binomial
// proportion after k successes in n trials: P[p < lo] ≤ alpha and
// P[p > hi] ≤ alpha, each exactly (the bounds invert the binomial tail
// through the regularized incomplete beta function).
func ClopperPearson(k, n int, alpha float64) (lo, hi float64, err error) {
	if n <= 0 || k < 0 || k > n {
		return 0, 0, fmt.Errorf("%w: %d successes in %d trials", ErrInvalid, k, n)
	}
	if !(alpha > 0 && alpha < 1) {
		return 0, 0, fmt.Errorf("%w: alpha = %v: must be in (0, 1)", ErrInvalid, alpha)
	}
	lo, hi = 0, 1
	if k > 0 {
		lo = mathext.InvRegIncBeta(float64(k), float64(n-k+1), alpha)
	}
	if k < n {
		hi = mathext.InvRegIncBeta(float64(k+1), float64(n-k), 1-alpha)
	}
	return lo, hi, nil
}

// LowerBound is an ε that the mechanism cannot have below, at the stated
// confidence, given the threshold test that achieves it.
type LowerBound struct {
	Epsilon Float `json:"epsilon"`
	// Confidence is the probability, over the canaries' draws, that the
	// true ε is at least Epsilon (simultaneously over every threshold tried).
	Confidence float64 `json:"confidence"`
	// Threshold and Above describe the best test: "inserted" when the
	// statistic is ≥ Threshold (Above) or < Threshold (!Above).
	Threshold float64 `json:"threshold"`
	Above     bool    `json:"above"`
	// Hits counts the inserted canaries the test flags, of Inserted; False
	// the unseen ones it flags, of Unseen.
	Hits     int `json:"hits"`
	Inserted int `json:"inserted"`
	False    int `json:"false"`
	Unseen   int `json:"unseen"`
	// TPRLower and FPRUpper are the Clopper–Pearson bounds used.
	TPRLower float64 `json:"tpr_lower"`
	FPRUpper float64 `json:"fpr_upper"`
}

// ThresholdLowerBound returns the best ε lower bound of a threshold test
// separating inserted canaries' statistics from unseen ones'. For an
// (ε, δ)-DP mechanism every test has TPR ≤ e^ε·FPR + δ, so
// ε ≥ log((TPR − δ)/FPR); the bound uses a Clopper–Pearson lower bound on
// TPR and upper bound on FPR. Every threshold between observed values is
// tried in both directions, and the error probability 1 − confidence is
// split evenly over all of them and the two proportions (Bonferroni), so
// choosing the best test after looking costs confidence, not validity.
// The thresholds tried are the inserted canaries' values: the optimal
// "≥ τ" test always sits at one, and at an order statistic the
// Clopper–Pearson bound on the TPR is exact even though τ is random.
//
// The canaries are treated as independent trials, as in the standard
// analysis of auditing by canaries: their directions are independent and
// which of the 2K are inserted is fixed before training, so the inserted
// and unseen sets are exchangeable. It is a lower bound on the ε of the
// mechanism the canaries pass through (every round's sampling and noise).
func ThresholdLowerBound(inserted, unseen []float64, delta, confidence float64) (LowerBound, error) {
	if len(inserted) == 0 || len(unseen) == 0 {
		return LowerBound{}, fmt.Errorf("%w: %d inserted and %d unseen canaries: need both", ErrInvalid, len(inserted), len(unseen))
	}
	if !(delta >= 0 && delta < 1) || !(confidence > 0 && confidence < 1) {
		return LowerBound{}, fmt.Errorf("%w: delta %v must be in [0, 1), confidence %v in (0, 1)", ErrInvalid, delta, confidence)
	}
	for _, v := range slices.Concat(inserted, unseen) {
		if math.IsNaN(v) {
			return LowerBound{}, fmt.Errorf("%w: a canary statistic is NaN", ErrInvalid)
		}
	}
	ins := slices.Sorted(slices.Values(inserted))
	uns := slices.Sorted(slices.Values(unseen))
	// Thresholds sit at the inserted canaries' values: the true TPR at an
	// order statistic x₍ₖ₎ has an exact Beta law whatever the distribution
	// (so its Clopper–Pearson bound holds at that random threshold), and
	// the unseen canaries, independent of it, give a binomial FPR there.
	// Each τ defines "≥ τ" and "< τ"; two proportions each.
	cands := slices.Compact(slices.Clone(ins))
	alpha := (1 - confidence) / float64(4*len(cands))
	best := LowerBound{Confidence: confidence, Inserted: len(ins), Unseen: len(uns)}
	countGE := func(s []float64, t float64) int {
		i, _ := slices.BinarySearch(s, t)
		return len(s) - i
	}
	for _, t := range cands {
		ai, au := countGE(ins, t), countGE(uns, t)
		for _, above := range []bool{true, false} {
			hits, falses := ai, au
			if !above {
				hits, falses = len(ins)-ai, len(uns)-au
			}
			tprLo, _, err := ClopperPearson(hits, len(ins), alpha)
			if err != nil {
				return LowerBound{}, err
			}
			_, fprHi, err := ClopperPearson(falses, len(uns), alpha)
			if err != nil {
				return LowerBound{}, err
			}
			if tprLo <= delta {
				continue
			}
			e := math.Log((tprLo - delta) / fprHi)
			if e > float64(best.Epsilon) {
				best.Epsilon, best.Threshold, best.Above = Float(e), t, above
				best.Hits, best.False, best.TPRLower, best.FPRUpper = hits, falses, tprLo, fprHi
			}
		}
	}
	return best, nil
}
