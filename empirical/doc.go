// Package empirical measures the privacy a released model actually leaks,
// beside the ledger's guarantee: canary statistics and the one-shot ε
// estimate of Andrew et al. (2024), a lower bound from the best threshold
// test with Clopper–Pearson bounds, and a loss-threshold membership
// inference attack. It is pure computation and imports nothing of Strata.
package empirical
