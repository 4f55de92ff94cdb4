package regional

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/privacy"
)

// exactOpen is a round whose updates are edge-noised float64 lattice
// values, with a top-up cap.
func exactOpen(dim, clients, topUp int, edge, regional float64) (wire.RoundOpen, float64) {
	g, _ := privacy.Lattice([]float64{edge, regional, math.Sqrt(regional*regional + float64(topUp)*edge*edge)}, 1e3)
	o := wire.RoundOpen{Job: "j", Round: 2, Region: "eu", ModelVersion: 1, Dim: dim, ClipNorm: 1, EdgeNoise: edge, RegionalNoise: regional,
		Lattice: g, Encoding: wire.EncodingF64, TopUpCap: topUp}
	for i := range clients {
		o.Sampled = append(o.Sampled, fmt.Sprint("c", i))
	}
	return o, g
}

// edgeUpdate is what an honest client sends: its clipped update x snapped
// to the lattice and its edge noise on the lattice, as float64.
func edgeUpdate(t *testing.T, g *privacy.Gaussian, o wire.RoundOpen, client string, x []float64) []byte {
	t.Helper()
	v := append([]float64(nil), x...)
	if err := g.AddTo64On(v, o.EdgeNoise*o.ClipNorm, o.Lattice); err != nil {
		t.Fatal(err)
	}
	b, err := wire.Encode(wire.TypeUpdate, &wire.Update{Job: o.Job, Round: o.Round, Region: o.Region, Client: client, ModelVersion: o.ModelVersion,
		Encoding: wire.EncodingF64, Vec: wire.AppendFloat64s(nil, v)})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestTopUpVarianceDoesNotRevealParticipation: under privacy.top_up a
// region's partial has noise variance (σ_r² + K·σ_e²)·C² per coordinate
// whether 1 or K of its clients took part — the property the public's
// credit rests on (docs/privacy-model.md). Without the top-up the variance
// would differ by (K−1)·σ_e²·C², 9× here. Each case estimates the variance
// from d = 40 000 coordinates of zero updates (only noise): the estimate's
// relative standard error is √(2/d) = 0.7%, and the test allows 5 standard
// errors (false-reject probability below 6e-7 per case).
func TestTopUpVarianceDoesNotRevealParticipation(t *testing.T) {
	const d, K, se, sr = 40000, 10, 0.5, 0.6
	want := sr*sr + K*se*se
	for _, took := range []int{1, 4, K} {
		o, _ := exactOpen(d, K+2, K, se, sr)
		r, err := NewRound(o)
		if err != nil {
			t.Fatal(err)
		}
		src := privacy.NewGaussian(rand.NewChaCha8([32]byte{byte(took)}))
		zero := make([]float64, d)
		for i := 0; i < took; i++ {
			if reason := r.Add(edgeUpdate(t, src, o, fmt.Sprint("c", i), zero)); reason != "" {
				t.Fatalf("honest update rejected: %s", reason)
			}
		}
		p, err := r.Finalize(src)
		if err != nil {
			t.Fatal(err)
		}
		sum, _ := wire.Float64s(p.Sum)
		var s2 float64
		for i, x := range sum {
			if q := x / o.Lattice; q != math.Trunc(q) {
				t.Fatalf("partial coordinate %d = %v is off the lattice %v", i, x, o.Lattice)
			}
			s2 += x * x
		}
		got := s2 / d
		if z := (got/want - 1) / math.Sqrt(2.0/d); math.Abs(z) > 5 {
			t.Errorf("%d of %d took part: partial variance %.4f, want %.4f (z = %.1f)", took, K, got, want, z)
		}
	}
}

// TestTopUpCapAndLattice: a round with a top-up cap accepts at most K
// updates; one that needs exact lattice values refuses float32 updates and
// float64 values off the lattice, each with its own reason.
func TestTopUpCapAndLattice(t *testing.T) {
	const d, K = 8, 2
	o, g := exactOpen(d, 4, K, 0.5, 0.6)
	r, _ := NewRound(o)
	src := privacy.NewGaussian(rand.NewChaCha8([32]byte{1}))
	x := make([]float64, d)
	off := func(client string) []byte {
		v := make([]float64, d)
		v[0] = g / 3
		b, _ := wire.Encode(wire.TypeUpdate, &wire.Update{Job: "j", Round: 2, Region: "eu", Client: client, ModelVersion: 1, Encoding: wire.EncodingF64, Vec: wire.AppendFloat64s(nil, v)})
		return b
	}
	f32, _ := wire.Encode(wire.TypeUpdate, &wire.Update{Job: "j", Round: 2, Region: "eu", Client: "c3", ModelVersion: 1, Vec: wire.AppendFloat32s(nil, make([]float32, d))})
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"off the lattice", off("c0"), ReasonOffLattice},
		{"float32 in an exact round", f32, ReasonEncoding},
		{"first", edgeUpdate(t, src, o, "c0", x), ""},
		{"second", edgeUpdate(t, src, o, "c1", x), ""},
		{"over the cap", edgeUpdate(t, src, o, "c2", x), ReasonOverCap},
	} {
		if got := r.Add(tc.b); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
	if r.Count() != K {
		t.Fatalf("accepted %d, want the cap %d", r.Count(), K)
	}
}

// FuzzAddExact feeds arbitrary bytes to a round that needs exact lattice
// values under a top-up cap: it never panics, never accepts more than the
// cap, and the partial stays finite and on the lattice.
func FuzzAddExact(f *testing.F) {
	o, _ := exactOpen(4, 3, 2, 0.5, 0.6)
	v := []float64{o.Lattice, -3 * o.Lattice, 0, 7 * o.Lattice}
	good, _ := wire.Encode(wire.TypeUpdate, &wire.Update{Job: "j", Round: 2, Region: "eu", Client: "c0", ModelVersion: 1, Encoding: wire.EncodingF64, Vec: wire.AppendFloat64s(nil, v)})
	f.Add(good)
	f.Add([]byte{2, 1, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := NewRound(o)
		if err != nil {
			t.Fatal(err)
		}
		for range 4 {
			r.Add(b)
		}
		if r.Count() > o.TopUpCap {
			t.Fatalf("accepted %d over the cap %d", r.Count(), o.TopUpCap)
		}
		p, err := r.Finalize(privacy.NewGaussian(rand.NewChaCha8([32]byte{})))
		if err != nil {
			t.Fatal(err)
		}
		sum, _ := wire.Float64s(p.Sum)
		for _, x := range sum {
			if math.IsNaN(x) || math.IsInf(x, 0) || x/o.Lattice != math.Trunc(x/o.Lattice) {
				t.Fatalf("partial value %v: non-finite or off the lattice", x)
			}
		}
	})
}
