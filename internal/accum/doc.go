// Package accum holds the accumulation kernels of the data path: adding
// little-endian float32 vectors, read in place from the bytes NATS delivered,
// into float64 running sums, and the sum of squares used to verify a norm.
//
// # Why float64 accumulators
//
// A region sums N clipped updates of norm ≤ C. In float32 the running sum of
// N values carries a rounding error up to about N·2⁻²⁴ relative to the sum of
// magnitudes: for N = 1000 that is 6·10⁻⁵, the same order as the signal of a
// single client (C/N per coordinate on average), so small contributions
// would be rounded away. Converting each float32 to float64 is exact, and a
// float64 running sum of N values has error ≤ (N−1)·2⁻⁵³·Σ|xᵢ| — below
// 1.2·10⁻¹³ relative for N = 1000 and 1.1·10⁻⁹ for N = 10⁷, eight orders
// below the float32 resolution the partial is finally sent at. So no
// compensated (Kahan) scheme is needed, and the kernel is exact in a stronger
// sense: every element undergoes exactly the operation dst[i] += float64(x[i])
// in the same order as the naive loop, so the result is bit-for-bit the
// naive loop's (the tests check this with quick.CheckEqual).
//
// SumSquares uses several accumulators, so its result differs from the
// naive loop's by at most about len·2⁻⁵³ relative (a test checks a stated
// bound). A NaN or ±Inf input makes the result NaN or +Inf, so one pass
// both measures the norm and detects non-finite values: a float32 squares
// to at most 1.2·10⁷⁷, and 2³¹ of them cannot overflow a float64.
//
// # Kernels
//
// On amd64 with AVX2 the kernels are Go assembly (VCVTPS2PD, VADDPD,
// VFMADD231PD, 16 elements per iteration); elsewhere, or built with the
// purego tag, a portable loop. AddMany adds many vectors into one sum in
// cache-sized blocks of the destination, so the float64 sum is read and
// written once per block rather than once per vector: the kernel is then
// bound by reading the inputs, as a plain memory read is.
package accum
