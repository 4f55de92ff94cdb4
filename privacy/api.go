package privacy

// This file is the contract between the privacy engine and the rest of
// Strata. The signatures here are relied on by the ledger, the tiers and
// cmd/strata; the implementation behind them may change freely.

// Part is one homogeneous stretch of a schedule: Steps rounds of the
// Poisson-subsampled Gaussian mechanism with sampling rate Q and noise
// multiplier Sigma (noise standard deviation divided by the L2 sensitivity).
// Q = 1 means no subsampling.
//
// Adjacency. Strata's guarantees are under zero-out adjacency: two
// datasets differ in one client's contribution, replaced by nothing (its
// update and clipping bit count as zero), while who is enrolled, eligible
// and sampled stays the same. The ledger publishes the eligible count (the
// fixed denominator q·N), so add-or-remove claims, which would change it,
// are not available. For the Poisson-subsampled Gaussian the pair of
// output distributions is the same under both definitions — a zeroed-out
// client adds 0 to the sum, as an absent one does — so the curves here,
// and the reference values quoted for add-or-remove, apply unchanged.
type Part struct {
	Q     float64
	Sigma float64
	Steps int
}

// Accountant turns a schedule into (ε, δ). Parts compose in order.
// Implementations must be conservative: the ε returned is never below the
// true ε of the schedule. An unprotected mechanism (Sigma = 0 with Steps > 0)
// has ε = +Inf, returned as math.Inf(1) with a nil error.
type Accountant interface {
	// Name is the short name used in reports and flags ("rdp", "pld").
	Name() string
	// Epsilon returns ε at the given δ for the composed schedule.
	Epsilon(parts []Part, delta float64) (float64, error)
}
