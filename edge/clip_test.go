package edge

import (
	"errors"
	"math"
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
