package secagg

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"math"
)

// Quantizer maps real vectors into the ring Z_{2^b} and sums back out. A
// coordinate x is clipped to [-Clip, Clip], scaled to v = x·Scale and rounded
// stochastically to ⌊v⌋ or ⌊v⌋+1 with P[⌊v⌋+1] = v - ⌊v⌋, so the integer is
// an unbiased estimate of v; it is stored in b-bit two's complement. The sum
// of n such integers lies in [-n·M, n·M] with M = ⌈Clip·Scale⌉, and decodes
// without wrapping when n·M <= 2^(b-1) - 1: NewQuantizer checks exactly this.
type Quantizer struct {
	bits  int
	clip  float64
	scale float64
	max   int64 // M
	n     int
}

// NewQuantizer returns a quantizer for sums of up to n vectors in Z_{2^bits}
// whose coordinates are clipped to [-clip, clip] and scaled by scale (steps
// per unit; the rounding error of one coordinate is below 1/scale). It fails
// with ErrHeadroom, naming every parameter, when n·⌈clip·scale⌉ could wrap
// the ring.
func NewQuantizer(bits int, clip, scale float64, n int) (*Quantizer, error) {
	switch {
	case bits < 2 || bits > 32:
		return nil, fmt.Errorf("%w: quantizer bits = %d, want 2..32", ErrParams, bits)
	case !(clip > 0) || math.IsInf(clip, 0):
		return nil, fmt.Errorf("%w: quantizer clip = %g, want finite > 0", ErrParams, clip)
	case !(scale > 0) || math.IsInf(scale, 0):
		return nil, fmt.Errorf("%w: quantizer scale = %g, want finite > 0", ErrParams, scale)
	case n < 1:
		return nil, fmt.Errorf("%w: quantizer n = %d, want >= 1", ErrParams, n)
	}
	m := math.Ceil(clip * scale)
	room := float64(int64(1)<<(bits-1) - 1)
	if float64(n)*m > room {
		need := bits
		for need <= 64 && float64(n)*m > float64(uint64(1)<<(need-1)-1) {
			need++
		}
		return nil, fmt.Errorf("%w: n = %d clients × max|x| = clip %g × scale %g (⌈%g⌉ steps) = %g exceeds 2^(bits-1)-1 = %g for bits = %d; use bits >= %d or a smaller clip or scale",
			ErrHeadroom, n, clip, scale, clip*scale, float64(n)*m, room, bits, need)
	}
	return &Quantizer{bits: bits, clip: clip, scale: scale, max: int64(m), n: n}, nil
}

// Bits returns b.
func (q *Quantizer) Bits() int { return q.bits }

// Quantize writes the quantized x into dst (len(dst) == len(x)), drawing the
// rounding coins from r (nil means crypto/rand). It returns how many
// coordinates were clipped. NaN or ±Inf in x is an error naming the index.
func (q *Quantizer) Quantize(dst []uint32, x []float64, r io.Reader) (clipped int, err error) {
	if len(dst) != len(x) {
		return 0, fmt.Errorf("%w: Quantize: len(dst) = %d, len(x) = %d", ErrParams, len(dst), len(x))
	}
	if r == nil {
		r = rand.Reader
	}
	mask := uint32(1<<q.bits - 1)
	var buf [8 * 512]byte
	for off := 0; off < len(x); off += 512 {
		blk := x[off:min(len(x), off+512)]
		if _, err := io.ReadFull(r, buf[:8*len(blk)]); err != nil {
			return clipped, fmt.Errorf("secagg: reading randomness: %w", err)
		}
		for i, v := range blk {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return clipped, fmt.Errorf("%w: Quantize: x[%d] = %g", ErrParams, off+i, v)
			}
			if v > q.clip {
				v, clipped = q.clip, clipped+1
			} else if v < -q.clip {
				v, clipped = -q.clip, clipped+1
			}
			v *= q.scale
			f := math.Floor(v)
			z := int64(f)
			// u is uniform on {0, 2^-53, ..., 1-2^-53}; P[u < v-f] = v-f up
			// to 2^-53 (v-f is exact: f <= v < f+1).
			u := float64(binary.LittleEndian.Uint64(buf[8*i:])>>11) * 0x1p-53
			if u < v-f {
				z++
			}
			dst[off+i] = uint32(z) & mask
		}
	}
	return clipped, nil
}

// Dequantize writes sum, read as b-bit two's complement and divided by the
// scale, into dst.
func (q *Quantizer) Dequantize(dst []float64, sum []uint32) error {
	if len(dst) != len(sum) {
		return fmt.Errorf("%w: Dequantize: len(dst) = %d, len(sum) = %d", ErrParams, len(dst), len(sum))
	}
	half, full := int64(1)<<(q.bits-1), int64(1)<<q.bits
	for i, v := range sum {
		s := int64(v) & (full - 1)
		if s >= half {
			s -= full
		}
		dst[i] = float64(s) / q.scale
	}
	return nil
}
