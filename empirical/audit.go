package empirical

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
)

// ErrBelowLowerBound reports a ledger ε below the empirical lower bound: the
// accounting or the implementation has a bug, since no mechanism can leak
// more than its true ε allows.
var ErrBelowLowerBound = errors.New("empirical: the ledger's ε is below the empirical lower bound")

// Estimate is a one-shot ε estimate: the ε at δ between the statistic's
// distribution for canaries never inserted (Null) and its Gaussian fit for
// inserted ones (Observed). It is an estimate of what this run leaked to
// this attack, never a guarantee.
type Estimate struct {
	Epsilon  Float    `json:"epsilon"`
	Null     Gaussian `json:"null"`
	Observed Gaussian `json:"observed"`
	// Unseen is the fit of the unseen canaries' statistics: for the final
	// model it checks the N(0, 1/d) null.
	Unseen Gaussian `json:"unseen"`
}

// Report is the whole empirical privacy audit of one job.
type Report struct {
	Canaries int     `json:"canaries"` // inserted; as many unseen
	Dim      int     `json:"dim"`
	Delta    float64 `json:"delta"`
	Seed     uint64  `json:"seed"`
	// Final is the estimate for an observer of the final model only;
	// AllIterates for one who sees every released version (the ledger's
	// public observer).
	Final       Estimate `json:"final_model"`
	AllIterates Estimate `json:"all_iterates"`
	// EmpiricalEpsilon is AllIterates.Epsilon: the estimate for the
	// threat model the ledger's public ε covers.
	EmpiricalEpsilon Float `json:"empirical_epsilon"`
	// LowerBound is the better of the two statistics' threshold tests,
	// each at half the error probability.
	LowerBound LowerBound `json:"lower_bound"`
	// LowerBoundStatistic names the statistic of LowerBound.
	LowerBoundStatistic string `json:"lower_bound_statistic"`
	// MIA is the membership inference attack, when run.
	MIA *MIA `json:"mia,omitempty"`
}

// Audit computes the canary statistics of a release with canaries
// 0..canaries−1 inserted and canaries..2·canaries−1 unseen, the ε
// estimates at delta and the lower bound at the given confidence.
func Audit(r Release, seed uint64, canaries int, delta, confidence float64) (Report, error) {
	if canaries < 2 {
		return Report{}, fmt.Errorf("%w: %d canaries: need at least 2 inserted to fit a Gaussian", ErrInvalid, canaries)
	}
	if !(delta > 0 && delta < 1) {
		return Report{}, fmt.Errorf("%w: delta = %v: must be in (0, 1)", ErrInvalid, delta)
	}
	st, err := r.Statistics(seed, 2*canaries)
	if err != nil {
		return Report{}, err
	}
	d := len(r.Initial)
	rep := Report{Canaries: canaries, Dim: d, Delta: delta, Seed: seed}
	// Final model: the unseen canary's cosine with a fixed vector has mean 0
	// and variance exactly 1/d (Andrew et al.'s null).
	if rep.Final, err = EstimateFrom(st.Final[:canaries], st.Final[canaries:], &Gaussian{0, 1 / math.Sqrt(float64(d))}, delta); err != nil {
		return Report{}, fmt.Errorf("final-model estimate: %w", err)
	}
	// All iterates: the max over correlated rounds has no closed-form null;
	// the unseen canaries give it.
	if rep.AllIterates, err = EstimateFrom(st.AllIterates[:canaries], st.AllIterates[canaries:], nil, delta); err != nil {
		return Report{}, fmt.Errorf("all-iterates estimate: %w", err)
	}
	rep.EmpiricalEpsilon = rep.AllIterates.Epsilon
	half := 1 - (1-confidence)/2
	lf, err := ThresholdLowerBound(st.Final[:canaries], st.Final[canaries:], delta, half)
	if err != nil {
		return Report{}, err
	}
	la, err := ThresholdLowerBound(st.AllIterates[:canaries], st.AllIterates[canaries:], delta, half)
	if err != nil {
		return Report{}, err
	}
	rep.LowerBound, rep.LowerBoundStatistic = la, "all_iterates"
	if lf.Epsilon > la.Epsilon {
		rep.LowerBound, rep.LowerBoundStatistic = lf, "final_model"
	}
	rep.LowerBound.Confidence = confidence
	return rep, nil
}

// EstimateFrom fits the inserted and unseen canaries' statistics and
// returns the ε at delta between the null (the unseen fit, or null when
// given) and the inserted fit. Statistics that are all equal (no version
// moved the model) estimate 0.
func EstimateFrom(inserted, unseen []float64, null *Gaussian, delta float64) (Estimate, error) {
	var e Estimate
	var err error
	e.Observed, err = Fit(inserted)
	if err != nil && e.Observed.Sigma != 0 {
		return e, err
	}
	if e.Unseen, err = Fit(unseen); err != nil && e.Unseen.Sigma != 0 {
		return e, err
	}
	e.Null = e.Unseen
	if null != nil {
		e.Null = *null
	}
	if e.Observed.Sigma == 0 && e.Unseen.Sigma == 0 {
		// No released version moved the model: every canary's statistic
		// is the same, and nothing tells inserted from unseen.
		return e, nil
	}
	eps, err := Epsilon(e.Null, e.Observed, delta)
	e.Epsilon = Float(eps)
	return e, err
}

// CheckLedger returns ErrBelowLowerBound when the ledger's ε is below the
// rigorous lower bound.
func (r Report) CheckLedger(ledgerEpsilon float64) error {
	if math.IsNaN(ledgerEpsilon) || ledgerEpsilon < float64(r.LowerBound.Epsilon) {
		return fmt.Errorf("%w: ledger ε %.4g < %.4g (%s statistic, %.0f%% confidence; %d of %d inserted and %d of %d unseen canaries flagged)",
			ErrBelowLowerBound, ledgerEpsilon, r.LowerBound.Epsilon, r.LowerBoundStatistic, 100*r.LowerBound.Confidence,
			r.LowerBound.Hits, r.LowerBound.Inserted, r.LowerBound.False, r.LowerBound.Unseen)
	}
	return nil
}

// Float is a float64 whose JSON form writes ±Inf as "inf"/"-inf" (JSON
// has no infinity; an unprotected observer's ε is +Inf).
type Float float64

// MarshalJSON implements json.Marshaler.
func (f Float) MarshalJSON() ([]byte, error) {
	switch v := float64(f); {
	case math.IsInf(v, 1):
		return []byte(`"inf"`), nil
	case math.IsInf(v, -1):
		return []byte(`"-inf"`), nil
	case math.IsNaN(v):
		return []byte(`"nan"`), nil
	}
	return json.Marshal(float64(f))
}

// UnmarshalJSON implements json.Unmarshaler.
func (f *Float) UnmarshalJSON(b []byte) error {
	switch string(b) {
	case `"inf"`:
		*f = Float(math.Inf(1))
		return nil
	case `"-inf"`:
		*f = Float(math.Inf(-1))
		return nil
	case `"nan"`:
		*f = Float(math.NaN())
		return nil
	}
	var v float64
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*f = Float(v)
	return nil
}
