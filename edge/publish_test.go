package edge

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/strata-fl/strata/mesh/wire"
)

func dequantize(p Payload, d int) []float64 {
	out := make([]float64, d)
	switch p.Encoding {
	case wire.EncodingQ8:
		for i, b := range p.Data {
			out[i] = float64(p.Scales[i/p.ChunkElems]) * float64(int8(b))
		}
	case wire.EncodingTopK:
		for j := 0; j < len(p.Data); j += 8 {
			out[binary.LittleEndian.Uint32(p.Data[j:])] = float64(math.Float32frombits(binary.LittleEndian.Uint32(p.Data[j+4:])))
		}
	}
	return out
}

func l2(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x * x
	}
	return math.Sqrt(s)
}

// TestCompressionNeverRaisesTheNorm is what keeps the sensitivity at C: for
// spread, spiky and tiny vectors, in one chunk or many, the decoded q8 and
// top-k vectors are never longer than the clipped input (up to float32
// rounding of the scale, 1e-6 relative).
func TestCompressionNeverRaisesTheNorm(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	for trial := range 300 {
		d := 1 + r.IntN(3000)
		x := make([]float64, d)
		for i := range x {
			switch trial % 3 {
			case 0:
				x[i] = r.NormFloat64()
			case 1:
				if r.IntN(50) == 0 {
					x[i] = r.NormFloat64() * 100
				}
			case 2:
				x[i] = r.NormFloat64() * 1e-30
			}
		}
		Clip(x, 1)
		for _, c := range []StreamConfig{{Encoding: wire.EncodingQ8}, {Encoding: wire.EncodingQ8, ChunkBytes: 64}, {Encoding: wire.EncodingTopK, TopK: 0.05}} {
			p := c.Encode(x, r.Float64)
			if got, want := l2(dequantize(p, d)), l2(x); got > want*(1+1e-6) {
				t.Fatalf("trial %d, %s (chunk %d): decoded norm %v > input norm %v", trial, c.Encoding, c.ChunkBytes, got, want)
			}
		}
	}
}

// TestQ8IsUnbiasedAfterShrink: averaged over many roundings, the decoded
// vector is the shrunk input. With 4000 draws each coordinate's mean has
// standard deviation ≤ s/(2·√4000) ≈ 0.008·s (s the step); we allow 6 of
// them (false-reject probability per coordinate < 2e-9, 64 coordinates).
func TestQ8IsUnbiasedAfterShrink(t *testing.T) {
	r := rand.New(rand.NewPCG(6, 6))
	x := make([]float64, 64)
	for i := range x {
		x[i] = r.NormFloat64()
	}
	Clip(x, 1)
	const draws = 4000
	mean := make([]float64, len(x))
	var p Payload
	for range draws {
		p = StreamConfig{Encoding: wire.EncodingQ8}.Encode(x, r.Float64)
		for i, v := range dequantize(p, len(x)) {
			mean[i] += v / draws
		}
	}
	step := float64(p.Scales[0])
	// The shrink factor is the ratio of the scale to max|x|/127.
	maxAbs := 0.0
	for _, v := range x {
		maxAbs = math.Max(maxAbs, math.Abs(v))
	}
	alpha := step / (maxAbs / 127)
	for i := range x {
		if d := math.Abs(mean[i] - alpha*x[i]); d > 6*step/(2*math.Sqrt(draws)) {
			t.Errorf("coordinate %d: mean %v, shrunk input %v (diff %v, step %v)", i, mean[i], alpha*x[i], d, step)
		}
	}
}
