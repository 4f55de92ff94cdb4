package edge

import (
	"errors"
	"math"
	"math/big"
	"math/rand/v2"
	"testing"
)

func norm(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x * x
	}
	return math.Sqrt(s)
}

func TestClip(t *testing.T) {
	tests := []struct {
		name string
		v    []float64
		c    float64
		want float64
	}{
		{"long vector is scaled to C", []float64{3, 4}, 1, 1},
		{"short vector is untouched", []float64{0.3, 0.4}, 1, 0.5},
		{"zero vector", []float64{0, 0}, 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := Clip(tt.v, tt.c); err != nil {
				t.Fatal(err)
			}
			if got := norm(tt.v); math.Abs(got-tt.want) > 1e-12 {
				t.Fatalf("norm %v, want %v", got, tt.want)
			}
		})
	}
	if err := Clip([]float64{math.NaN()}, 1); !errors.Is(err, ErrNonFinite) {
		t.Fatalf("NaN: got %v, want ErrNonFinite", err)
	}
	if err := Clip([]float64{math.Inf(1)}, 1); !errors.Is(err, ErrNonFinite) {
		t.Fatalf("Inf: got %v, want ErrNonFinite", err)
	}
}

// TestClippedUpdateStaysWithinC checks the sensitivity the ledger charges:
// after ClipBit, the exact L2 norm of what a client sends — the float32
// narrowing of its clipped update, or the float64 values themselves — is at
// most C, computed in exact rational arithmetic. Clipping to exactly C, as
// the client once did, lets float32 rounding push the norm past C (up to a
// relative 2⁻²⁴), an uncharged widening: that fails here.
func TestClippedUpdateStaysWithinC(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	for _, d := range []int{1, 3, 17, 1000, 20000} {
		for trial := 0; trial < 20; trial++ {
			v := make([]float64, d)
			for i := range v {
				v[i] = r.NormFloat64() * math.Exp(4*r.Float64()-2)
			}
			c := 0.5 + r.Float64()
			if _, err := ClipBit(v, c, d); err != nil {
				t.Fatal(err)
			}
			n32, n64 := new(big.Float).SetPrec(0), new(big.Float).SetPrec(0)
			for _, x := range v {
				y := new(big.Float).SetFloat64(float64(float32(x)))
				n32.Add(n32, new(big.Float).Mul(y, y))
				z := new(big.Float).SetFloat64(x)
				n64.Add(n64, new(big.Float).Mul(z, z))
			}
			limit := new(big.Float).Mul(new(big.Float).SetFloat64(c), new(big.Float).SetFloat64(c))
			if n32.Cmp(limit) > 0 || n64.Cmp(limit) > 0 {
				f32, _ := n32.Float64()
				t.Fatalf("d=%d: clipped norm² %v (float32) exceeds C² = %v", d, f32, c*c)
			}
		}
	}
}
