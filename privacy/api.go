package privacy

// This file is the contract between the privacy engine and the rest of
// Strata. The signatures here are relied on by the ledger, the tiers and
// cmd/strata; the implementation behind them may change freely.

// Part is one homogeneous stretch of a schedule: Steps rounds of the
// Poisson-subsampled Gaussian mechanism with sampling rate Q and noise
// multiplier Sigma (noise standard deviation divided by the L2 sensitivity),
// under add-or-remove-one adjacency. Q = 1 means no subsampling.
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
