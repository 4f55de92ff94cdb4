package lm

import (
	"math"
	"testing"
)

// TestExpfTanhf compares the float32 kernels with math.Exp and math.Tanh
// in float64 over their whole range: expf within 3e-7 relative error,
// tanhf within 2e-7 absolute.
func TestExpfTanhf(t *testing.T) {
	var worstExp, worstTanh float64
	for x := -87.0; x <= 88; x += 0.00137 {
		want := math.Exp(float64(float32(x)))
		got := float64(expf(float32(x)))
		worstExp = max(worstExp, math.Abs(got-want)/want)
	}
	for x := -12.0; x <= 12; x += 0.000731 {
		want := math.Tanh(float64(float32(x)))
		worstTanh = max(worstTanh, math.Abs(float64(tanhf(float32(x)))-want))
	}
	t.Logf("expf: worst relative error %.3g; tanhf: worst absolute error %.3g", worstExp, worstTanh)
	if worstExp > 3e-7 || worstTanh > 2e-7 {
		t.Fatalf("expf relative error %.3g (want ≤ 3e-7), tanhf absolute error %.3g (want ≤ 2e-7)", worstExp, worstTanh)
	}
	if expf(-100) != 0 || !math.IsInf(float64(expf(100)), 1) || expf(0) != 1 {
		t.Fatalf("expf(-100) = %v, expf(100) = %v, expf(0) = %v: want 0, +Inf, 1", expf(-100), expf(100), expf(0))
	}
}

// TestAccBGradMatchesGEMM checks the skinny kernel against the GEMM it
// replaces, with a strided dy.
func TestAccBGradMatchesGEMM(t *testing.T) {
	rows, out, r, ldy := 37, 24, 3, 29
	dy, z := make([]float32, rows*ldy), make([]float32, rows*r)
	for i := range dy {
		dy[i] = float32(math.Sin(float64(i)))
	}
	for i := range z {
		z[i] = float32(math.Cos(float64(3 * i)))
	}
	got, want := make([]float32, out*r), make([]float32, out*r)
	for i := range got {
		got[i], want[i] = float32(i), float32(i)
	}
	accBGrad(got, dy, ldy, z, rows, out, r, 0.7, make([]float32, r*out))
	gemm(true, false, out, r, rows, 0.7, dy, ldy, z, r, 1, want, r)
	for i := range got {
		if math.Abs(float64(got[i]-want[i])) > 1e-4 {
			t.Fatalf("value %d: %v, GEMM gives %v", i, got[i], want[i])
		}
	}
}
