package empirical

import (
	"encoding/binary"
	"math"
	"testing"
)

// FuzzEpsilon: any parameters give an error or a ε ≥ 0 (never NaN), and
// the divergence it solves lies in [0, 1].
func FuzzEpsilon(f *testing.F) {
	f.Add(0.0, 1.0, 1.0, 1.0, 1e-5)
	f.Add(0.0, 0.0187, 0.02, 0.0196, 1e-5)
	f.Add(0.0, 1.0, 0.0, 1.0000001, 1e-9)
	f.Add(-1e300, 1e-300, 1e300, 1e300, 0.5)
	f.Fuzz(func(t *testing.T, m0, s0, m1, s1, delta float64) {
		p, q := Gaussian{m0, s0}, Gaussian{m1, s1}
		e, err := Epsilon(p, q, delta)
		if err != nil {
			return
		}
		if math.IsNaN(e) || e < 0 {
			t.Fatalf("Epsilon(%v, %v, %v) = %v", p, q, delta, e)
		}
		if h, err := HockeyStick(p, q, math.Min(e, 50)); err != nil || math.IsNaN(h) || h < 0 || h > 1 {
			t.Fatalf("HockeyStick(%v, %v, %v) = %v, %v", p, q, e, h, err)
		}
	})
}

// FuzzThresholdLowerBound: any statistics give an error or a finite bound
// ≥ 0 whose test counts are consistent.
func FuzzThresholdLowerBound(f *testing.F) {
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, uint8(1))
	f.Fuzz(func(t *testing.T, b []byte, split uint8) {
		var v []float64
		for len(b) >= 8 {
			v = append(v, math.Float64frombits(binary.LittleEndian.Uint64(b)))
			b = b[8:]
		}
		k := int(split)
		if k > len(v) {
			k = len(v)
		}
		lb, err := ThresholdLowerBound(v[:k], v[k:], 1e-5, 0.95)
		if err != nil {
			return
		}
		if e := float64(lb.Epsilon); math.IsNaN(e) || math.IsInf(e, 0) || e < 0 || lb.Hits > lb.Inserted || lb.False > lb.Unseen {
			t.Fatalf("%+v", lb)
		}
		if _, err := Attack(v[:k], v[k:], 0.01); err != nil {
			t.Fatalf("Attack on inputs ThresholdLowerBound accepted: %v", err)
		}
	})
}
