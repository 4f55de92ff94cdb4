package topology

import (
	"math"
)

// SecAgg turns on secure aggregation at the regional tier (package secagg,
// SecAgg+ of Bell et al. 2020): each region learns only the sum of its
// surviving clients' quantized updates, never one update, and the sum
// survives clients dropping out. Clients clip, add their edge noise, then
// quantize (stochastic rounding) into Z_{2^bits} and mask; the region
// unmasks the survivors' sum, dequantizes it and adds its regional noise as
// in a plain round. The zero value is off.
//
// It changes what the regional operator sees, not how much noise protects a
// client from it: without edge noise the regional operator's ε stays ∞
// (secagg/doc.go, "What the ledger may claim").
type SecAgg struct {
	// On runs every round of the job with secure aggregation.
	On bool `yaml:"on,omitempty"`
	// Bits is b, the ring Z_{2^b} of inputs, masks and sums, in 8..32;
	// default 32.
	Bits int `yaml:"bits,omitempty"`
	// Dropout is δ, the largest fraction of a region's sampled clients that
	// may drop out of a session while it still succeeds; default 0.3. The
	// session's graph degree and threshold are chosen from it
	// (secagg.ChooseParams) each round, for that round's sample.
	Dropout float64 `yaml:"dropout,omitempty"`
	// Corrupt is γ, the largest fraction of a region's sampled clients
	// that may collude with the regional operator; default 0.
	Corrupt float64 `yaml:"corrupt,omitempty"`
	// Scale is the quantization steps per clip norm: a client's update
	// divided by the round's clip norm C is scaled by it and rounded, so a
	// coordinate's rounding error is below C/scale. Default: the largest
	// power of two with which the sum of every client of the largest
	// region cannot wrap the ring.
	Scale float64 `yaml:"scale,omitempty"`
}

// Range is the coordinate bound, in clip norms, of the quantized vectors:
// a clipped update's coordinates are within ±1, and edge noise of
// multiplier edge adds a Gaussian that exceeds 8 standard deviations with
// probability about 1e-15 per coordinate. Coordinates beyond it are clipped
// to it before quantizing (post-processing of the noised update, so it
// never weakens the edge noise's guarantee).
func (s SecAgg) Range(edge float64) float64 { return 1 + 8*edge }

// Room is 2^(bits-1) - 1, the largest magnitude a sum may reach.
func (s SecAgg) Room() float64 { return float64(int64(1)<<(s.Bits-1) - 1) }

// fits reports whether n clients' quantized coordinates, each at most
// ⌈rng·scale⌉ in magnitude, sum within the ring (the check of
// secagg.NewQuantizer).
func (s SecAgg) fits(n int, rng, scale float64) bool {
	return float64(n)*math.Ceil(rng*scale) <= s.Room()
}

// regionSizes is how many clients each region can sample at most: its
// clients and its audit canaries.
func (t *Topology) regionSizes() map[string]int {
	out := map[string]int{}
	for _, r := range t.Regions {
		out[r.ID] += r.Clients
	}
	for _, c := range t.CanaryClients() {
		out[c.Region]++
	}
	return out
}

func (t *Topology) applySecAggDefaults() {
	s := &t.SecAgg
	if !s.On {
		return
	}
	setI(&s.Bits, 32)
	setF(&s.Dropout, 0.3)
	if s.Scale != 0 || s.Bits < 8 || s.Bits > 32 {
		return
	}
	n := 0
	for _, m := range t.regionSizes() {
		n = max(n, m)
	}
	rng := s.Range(t.Privacy.Noise.Edge)
	if n == 0 || !(rng > 0) || math.IsInf(rng, 0) {
		return
	}
	// Largest power of two that fits; Validate reports it when none does.
	sc := math.Exp2(math.Floor(math.Log2(s.Room() / float64(n) / rng)))
	for sc >= 1 && !s.fits(n, rng, sc) {
		sc /= 2
	}
	if sc >= 1 {
		s.Scale = sc
	}
}

// validateSecAgg names the secagg field that is wrong, and refuses what
// secure aggregation cannot do.
func (t *Topology) validateSecAgg(bad func(field, format string, args ...any)) {
	s := t.SecAgg
	if !s.On {
		return
	}
	if s.Bits < 8 || s.Bits > 32 {
		bad("secagg.bits", "%d: must be in 8..32 (32 leaves the most headroom)", s.Bits)
		return
	}
	if !(s.Dropout > 0 && s.Dropout < 1) {
		bad("secagg.dropout", "%v: must be a fraction in (0, 1), e.g. 0.3", s.Dropout)
	}
	if !(s.Corrupt >= 0 && s.Corrupt+s.Dropout < 1) {
		bad("secagg.corrupt", "%v: must be ≥ 0 with corrupt + dropout (%v) < 1", s.Corrupt, s.Dropout)
	}
	if c := t.DataPath.Compression; c != "" && c != "none" {
		bad("data_path.compression", "%q cannot be combined with secagg.on: secure aggregation sums the ring elements of its own quantizer; set data_path.compression: none", c)
	}
	rng := s.Range(t.Privacy.Noise.Edge)
	if s.Scale == 0 {
		n := 0
		for _, m := range t.regionSizes() {
			n = max(n, m)
		}
		bad("secagg.scale", "no quantization scale ≥ 1 fits: n = %d clients × coordinate range %g clip norms exceeds 2^(bits-1)-1 = %g for bits = %d; raise secagg.bits, lower privacy.noise.edge or split the region", n, rng, s.Room(), s.Bits)
		return
	}
	if !(s.Scale > 0) || math.IsInf(s.Scale, 0) {
		bad("secagg.scale", "%v: must be a positive finite number of steps per clip norm (0 picks the largest that fits)", s.Scale)
		return
	}
	for _, r := range t.Regions {
		n := t.regionSizes()[r.ID]
		if !s.fits(n, rng, s.Scale) {
			bad("secagg.scale", "region %s: n = %d clients × ⌈coordinate range %g × scale %g⌉ = %g exceeds 2^(bits-1)-1 = %g for bits = %d: lower secagg.scale to at most %g, or raise secagg.bits",
				r.ID, n, rng, s.Scale, float64(n)*math.Ceil(rng*s.Scale), s.Room(), s.Bits, math.Floor(s.Room()/float64(n))/rng)
		}
	}
}
