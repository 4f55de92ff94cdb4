package secagg

import (
	"errors"
	"math"
	"strings"
	"testing"
)

func TestQuantizerHeadroom(t *testing.T) {
	tests := []struct {
		name         string
		bits         int
		clip, scale  float64
		n            int
		wantHeadroom bool
	}{
		{"fits exactly", 16, 1, 327, 100, false}, // 100·327 = 32700 <= 32767
		{"one step over", 16, 1, 328, 100, true}, // 100·328 = 32800
		{"32 bits, 1000 clients", 32, 1, 1 << 20, 1000, false},
		{"32 bits, 10^4 clients", 32, 1, 1 << 20, 10000, true},
		// clip·scale·n = 125 fits, but a coordinate can round up to ⌈2.5⌉ = 3
		// steps and 50·3 = 150 > 127.
		{"fractional steps round up", 8, 0.5, 5, 50, true},
	}
	for _, tc := range tests {
		_, err := NewQuantizer(tc.bits, tc.clip, tc.scale, tc.n)
		if got := errors.Is(err, ErrHeadroom); got != tc.wantHeadroom {
			t.Errorf("%s: err = %v, want headroom error %v", tc.name, err, tc.wantHeadroom)
			continue
		}
		if tc.wantHeadroom {
			for _, word := range []string{"n = ", "clip", "scale", "bits"} {
				if !strings.Contains(err.Error(), word) {
					t.Errorf("%s: error %q does not name %q", tc.name, err, word)
				}
			}
		}
	}
	for _, bad := range []struct {
		bits        int
		clip, scale float64
		n           int
	}{{1, 1, 1, 1}, {33, 1, 1, 1}, {16, math.NaN(), 1, 1}, {16, 1, math.Inf(1), 1}, {16, 1, 1, 0}, {16, -1, 1, 1}} {
		if _, err := NewQuantizer(bad.bits, bad.clip, bad.scale, bad.n); !errors.Is(err, ErrParams) {
			t.Errorf("NewQuantizer(%v): err = %v, want ErrParams", bad, err)
		}
	}
}

// TestQuantizeUnbiased: the mean of N stochastic roundings of v = x·scale
// is v. One rounding is ⌊v⌋ + Bernoulli(f), f = v - ⌊v⌋, with standard
// deviation at most 1/2, so the mean of N has standard deviation at most
// 1/(2√N); we allow 6 of them, a two-sided false-reject rate below 2e-9
// (normal approximation) for a random seed.
func TestQuantizeUnbiased(t *testing.T) {
	const N = 200000
	q, err := NewQuantizer(16, 1, 100, 10)
	if err != nil {
		t.Fatal(err)
	}
	r := seeded(9)
	for _, x := range []float64{0.123456, -0.987654, 0.005, 1, -1} {
		xs := make([]float64, N)
		for i := range xs {
			xs[i] = x
		}
		z := make([]uint32, N)
		if _, err := q.Quantize(z, xs, r); err != nil {
			t.Fatal(err)
		}
		f := make([]float64, N)
		if err := q.Dequantize(f, z); err != nil {
			t.Fatal(err)
		}
		mean := 0.0
		for _, v := range f {
			mean += v * 100
		}
		mean /= N
		if tol := 6 / (2 * math.Sqrt(N)); math.Abs(mean-x*100) > tol {
			t.Errorf("x = %g: mean of quantized x·scale = %g, want %g ± %g", x, mean, x*100, tol)
		}
	}
}

func TestQuantizeClipsAndRejects(t *testing.T) {
	q, err := NewQuantizer(12, 2, 10, 4)
	if err != nil {
		t.Fatal(err)
	}
	x := []float64{5, -5, 1.5, -2}
	z := make([]uint32, len(x))
	clipped, err := q.Quantize(z, x, seeded(1))
	if err != nil || clipped != 2 {
		t.Fatalf("clipped = %d, err = %v; want 2, nil", clipped, err)
	}
	// Sum of 4 copies of the extreme values decodes without wrapping.
	sum := make([]uint32, len(x))
	for range 4 {
		for i := range z {
			sum[i] += z[i]
		}
	}
	for i := range sum {
		sum[i] &= 1<<12 - 1
	}
	f := make([]float64, len(x))
	q.Dequantize(f, sum)
	if f[0] != 8 || f[1] != -8 || f[2] != 6 || f[3] != -8 {
		t.Errorf("decoded sum = %v, want [8 -8 6 -8]", f)
	}
	for _, bad := range []float64{math.NaN(), math.Inf(-1)} {
		if _, err := q.Quantize(z[:1], []float64{bad}, seeded(1)); !errors.Is(err, ErrParams) {
			t.Errorf("Quantize(%g): err = %v, want ErrParams", bad, err)
		}
	}
}
