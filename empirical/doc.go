// Package empirical measures the privacy a released model actually leaks,
// beside the ledger's guarantee. It is pure computation over model
// versions and scores, and imports nothing of Strata.
//
// # Canaries (Andrew et al. 2024)
//
// A job with audit.canaries = K inserts K canary clients; each, when
// sampled, sends Direction(seed, i, d) scaled to the clip norm. Directions
// K..2K−1 are drawn the same way and never inserted. Release.Statistics
// computes, per canary, the cosine of its direction with the final model
// delta and the maximum over releases of the cosine with each release's
// delta. Audit turns them into:
//
//   - ε estimates: Epsilon(null, fit of the inserted canaries, δ), the ε
//     at which two Gaussians are (ε, δ)-indistinguishable, computed in
//     closed form from the hockey-stick divergence (HockeyStick). The null
//     is N(0, 1/d) for the final model (a fixed vector's cosine with a
//     uniformly random unit vector has mean 0 and variance exactly 1/d) and
//     the unseen canaries' fit for the maximum over releases, which has no
//     closed-form null. An estimate is what this attack saw in this run,
//     never a guarantee.
//   - a lower bound: ThresholdLowerBound, the best threshold test between
//     inserted and unseen canaries with Clopper–Pearson bounds, Bonferroni-
//     corrected over every threshold tried. Report.CheckLedger fails with
//     ErrBelowLowerBound if a ledger's ε is below it.
//
// # Membership inference
//
// Attack scores members against non-members (for the loss-threshold
// attack, the negated loss under the released model) and reports the AUC
// and the TPR at a fixed FPR.
package empirical
