// Package privacy is Strata's differential-privacy engine: accountants that
// turn a schedule of Poisson-subsampled Gaussian rounds into (ε, δ), and
// noise samplers that are safe against floating-point attacks. It imports
// nothing else of Strata.
//
// # Accountants
//
// A schedule is a list of Parts, each Steps rounds with sampling rate Q and
// noise multiplier Sigma. Strata's adjacency is zero-out (a client's
// contribution replaced by nothing, its participation unchanged; see Part),
// which for the subsampled Gaussian gives the same pair of distributions as
// add-or-remove-one. Where a client's participation may be visible, the
// revealed-sampling curve applies instead (RevealedRDPStep).
//
// The RDP accountant (NewRDP) follows Mironov, Talwar and Zhang (2019). For
// integer orders α the Rényi divergence comes from the binomial sum; Strata
// sums A_α − 1 (all terms non-negative) rather than A_α, so tiny per-step
// losses keep full relative precision. For fractional orders Opacus and
// dp_accounting use the two-sided erfc series: Opacus sums it with signs
// (correct but, at q ≥ 0.05 and large σ, the alternating tail converges so
// slowly that 10⁵ terms are not enough), dp_accounting sums absolute values
// (an upper bound, up to 4× too high at α = 1.5). Strata instead integrates
// E[(1+y)^α − 1 − αy], a non-negative integrand, by Gauss–Legendre
// quadrature, which agrees with 50-digit references to 1e-12 and with the
// binomial sum at integer α to 1e-13. Curves of heterogeneous parts add; the
// conversion to (ε, δ) is the improved bound of Balle et al. (2020) with
// dp_accounting's guards (EpsilonFromRDP). Orders() is a superset of both
// libraries' orders, denser near α = 1 and extended to 2048.
//
// The PLD accountant (NewPLD, NewPLDWithConfig) follows dp_accounting: each
// part's privacy loss distribution, for the "remove" and the "add" pair
// separately, is discretised pessimistically with connect-the-dots
// (Doroshenko et al. 2022) at a configurable interval (default 1e-4);
// parts are composed by one real FFT over a window chosen by Chernoff
// bounds, the truncated tail mass (1e-15) goes to the mass at +∞, and ε is
// the larger of the two directions. It is tighter than RDP (about 13% in the
// FL band, far more at small q or T). Strata differs from dp_accounting in
// two ways: ε(δ) and δ(ε) are computed relative to the current loss, never
// through e^{−loss} or e^ε, so ε in the thousands is as accurate as ε = 1
// (dp_accounting returns +Inf or loses accuracy past ε ≈ 709); and parts
// with q = 1 are merged into one Gaussian (μ² = Σ T/σ²), solved in closed
// form (Balle and Wang 2018) when the schedule has nothing else.
//
// # Parameter checks
//
// Every entry point rejects NaN, ±Inf and out-of-range values with an error
// naming the parameter (CheckEpsilon, CheckDelta, CheckQ, CheckSigma,
// CheckSteps); all such errors match ErrInvalidParameter under errors.Is.
// σ = 0 is not an error: it is an unprotected mechanism and costs ε = +Inf.
//
// # Noise
//
// Gaussian draws noise from an injected io.Reader (crypto/rand by default)
// on a power-of-two lattice, so that the output's low bits never depend on
// the input (Mironov 2012). Its doc comment states the (tiny) extra privacy
// cost and how it is accounted.
package privacy
