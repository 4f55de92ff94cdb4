package privacy

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

func seeded(seed byte) *rand.ChaCha8 {
	var s [32]byte
	s[0] = seed
	return rand.NewChaCha8(s)
}

// TestGaussianMoments draws N = 400 000 samples and checks mean, variance and
// two tail probabilities. Each check is a z-test at |z| ≤ 5: under a correct
// sampler each rejects with probability 5.7e-7, so the four together
// false-reject with probability below 2.3e-6 (per σ tested; the seed is fixed,
// so a pass is reproducible).
func TestGaussianMoments(t *testing.T) {
	const N = 400000
	for _, sigma := range []float64{1e-3, 0.8, 1, 3.7, 1000} {
		g := NewGaussian(seeded(1))
		xs := make([]float64, N)
		if err := g.AddTo64(xs, sigma); err != nil {
			t.Fatal(err)
		}
		var sum, sum2 float64
		var over1, over3 int
		for _, x := range xs {
			z := x / sigma
			sum += z
			sum2 += z * z
			if math.Abs(z) > 1 {
				over1++
			}
			if math.Abs(z) > 3 {
				over3++
			}
		}
		mean := sum / N
		// mean ~ N(0, 1/N)
		if z := mean * math.Sqrt(N); math.Abs(z) > 5 {
			t.Errorf("σ=%v: mean/σ = %.5f, z = %.2f", sigma, mean, z)
		}
		// the sample second moment has variance 2/N
		if z := (sum2/N - 1) / math.Sqrt(2.0/N); math.Abs(z) > 5 {
			t.Errorf("σ=%v: variance/σ² = %.5f, z = %.2f", sigma, sum2/N, z)
		}
		for _, c := range []struct {
			k    float64
			got  int
			name string
		}{{1, over1, "P(|Z|>1)"}, {3, over3, "P(|Z|>3)"}} {
			p := math.Erfc(c.k / math.Sqrt2)
			if z := (float64(c.got) - N*p) / math.Sqrt(N*p*(1-p)); math.Abs(z) > 5 {
				t.Errorf("σ=%v: %s = %.5f, want %.5f (z = %.2f)", sigma, c.name, float64(c.got)/N, p, z)
			}
		}
	}
}

// TestGaussianOnLattice checks that every output — noise alone and x + noise
// — is an exact multiple of the granularity, whatever the low bits of x.
func TestGaussianOnLattice(t *testing.T) {
	g := NewGaussian(seeded(2))
	for _, sigma := range []float64{0.5, 1, 1.3, 1024, 3e-5} {
		gran := Granularity(sigma)
		if r := sigma / gran; !(r > 0x1p39 && r <= 0x1p40) {
			t.Errorf("σ=%v: σ/g = %v, want in (2^39, 2^40]", sigma, r)
		}
		if f, _ := math.Frexp(gran); f != 0.5 {
			t.Errorf("σ=%v: granularity %v is not a power of two", sigma, gran)
		}
		for i := 0; i < 2000; i++ {
			x, err := g.Sample(sigma)
			if err != nil {
				t.Fatal(err)
			}
			if q := x / gran; q != math.Trunc(q) {
				t.Fatalf("σ=%v: sample %v is not a multiple of %v", sigma, x, gran)
			}
		}
		xs := []float64{0.1, math.Pi, -1e-7, 123456.789, math.Nextafter(1, 2)}
		if err := g.AddTo64(xs, sigma); err != nil {
			t.Fatal(err)
		}
		for _, x := range xs {
			if q := x / gran; q != math.Trunc(q) {
				t.Errorf("σ=%v: x+noise %v is not a multiple of %v", sigma, x, gran)
			}
		}
	}
}

func TestGaussianRejectsBadInput(t *testing.T) {
	g := NewGaussian(seeded(3))
	for _, sigma := range []float64{-1, math.NaN(), math.Inf(1)} {
		if _, err := g.Sample(sigma); !errors.Is(err, ErrInvalidParameter) {
			t.Errorf("Sample(%v): got %v, want ErrInvalidParameter", sigma, err)
		}
	}
	for _, x := range []float64{math.NaN(), math.Inf(-1), math.MaxFloat64} {
		if err := g.AddTo64([]float64{0, x}, 1); !errors.Is(err, ErrInvalidParameter) {
			t.Errorf("AddTo64 with %v: got %v, want ErrInvalidParameter", x, err)
		}
	}
	if err := g.AddTo([]float32{1, 2}, 0); err != nil {
		t.Errorf("AddTo with σ=0: %v", err)
	}
	short := NewGaussian(&shortReader{})
	if _, err := short.Sample(1); err == nil {
		t.Errorf("Sample with a failing reader: want an error")
	}
}

type shortReader struct{}

func (*shortReader) Read(p []byte) (int, error) { return 0, errors.New("entropy exhausted") }

// TestGaussianDeterministic checks that a seeded reader gives reproducible
// noise and that float32 and float64 paths agree.
func TestGaussianDeterministic(t *testing.T) {
	a := make([]float32, 100)
	b := make([]float64, 100)
	if err := NewGaussian(seeded(4)).AddTo(a, 2); err != nil {
		t.Fatal(err)
	}
	if err := NewGaussian(seeded(4)).AddTo64(b, 2); err != nil {
		t.Fatal(err)
	}
	for i := range a {
		if a[i] != float32(b[i]) {
			t.Fatalf("element %d: float32 path %v, float64 path %v", i, a[i], b[i])
		}
	}
}

func BenchmarkAddTo(b *testing.B) {
	for _, n := range []int{1e3, 1e6} {
		dst := make([]float32, n)
		b.Run(map[int]string{1e3: "1e3", 1e6: "1e6"}[n], func(b *testing.B) {
			g := NewGaussian(seeded(5))
			b.SetBytes(int64(4 * n))
			for b.Loop() {
				if err := g.AddTo(dst, 1); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkAddToCryptoRand(b *testing.B) {
	dst := make([]float32, 1e6)
	g := NewGaussian(nil)
	b.SetBytes(int64(4 * len(dst)))
	for b.Loop() {
		if err := g.AddTo(dst, 1); err != nil {
			b.Fatal(err)
		}
	}
}

// TestTailMassBound checks what the ledger charges for the sampler's
// truncation: at scales across the range the lattice uses ((2^39, 2^40]),
// the discrete Gaussian's mass in the blocks a draw can never be proposed
// from (zero-width thresholds) and beyond the table stays below TailMass.
// The sampler once clamped its cumulative thresholds at 1 − 2^-53, which
// left every block past that point unreachable — about 6e-17 of mass per
// draw, a thousand times TailMass: that fails here.
func TestTailMassBound(t *testing.T) {
	// Scales of the lattices in use: a tier's own (2^39, 2^40], and finer or
	// coarser ones when a round puts every tier on one lattice.
	for _, s := range []float64{0x1p39 + 1, 0x1.4p39, 0x1.8p39, 0x1.cp39, 0x1p40, 0x1p30, 0x1.7p33, 0x1p45, 0x1.3p47} {
		tab := NewGaussian(nil).table(s)
		W := math.Ldexp(1, tab.bits)
		mass := func(a, b float64) float64 { // two-sided mass of a ≤ |n| < b
			return math.Erfc(a/(s*math.Sqrt2)) - math.Erfc(b/(s*math.Sqrt2))
		}
		K := len(tab.cum)
		tau := math.Erfc(float64(K) * W / (s * math.Sqrt2))
		for k := 0; k < K; k++ {
			hi := uint64(0)
			if k+1 < K {
				hi = tab.cum[k+1]
			}
			if hi-tab.cum[k] == 0 {
				tau += mass(float64(k)*W, float64(k+1)*W)
			}
		}
		if !(tau <= TailMass) {
			t.Errorf("scale %.4g: unreachable mass %.3g > TailMass %.3g", s, tau, TailMass)
		}
	}
}

// TestAddTo64OnOneLattice: noise drawn on a lattice finer or coarser than
// the sampler's own has the right moments (z-tests at |z| ≤ 5 on N = 200 000
// draws, false-reject probability below 1.2e-6 per case), and a value
// already on the lattice plus the noise stays on it — so two tiers' noised
// values on one lattice add up exactly.
func TestAddTo64OnOneLattice(t *testing.T) {
	const N = 200000
	for _, tc := range []struct{ sigma, gran float64 }{
		{0.6, 0x1p-44},         // the lattice of a smaller σ of the same round
		{0.6, 0x1p-30},         // coarsened for magnitude
		{25, Granularity(0.5)}, // a top-up on the edge noise's lattice
	} {
		g := NewGaussian(seeded(9))
		xs := make([]float64, N)
		for i := range xs {
			xs[i] = float64(i%1000) * tc.gran // on the lattice already
		}
		if err := g.AddTo64On(xs, tc.sigma, tc.gran); err != nil {
			t.Fatal(err)
		}
		var sum, sum2 float64
		for i, x := range xs {
			if q := x / tc.gran; q != math.Trunc(q) {
				t.Fatalf("σ %v on %v: %v left the lattice", tc.sigma, tc.gran, x)
			}
			z := (x - float64(i%1000)*tc.gran) / tc.sigma
			sum += z
			sum2 += z * z
		}
		if z := sum / N * math.Sqrt(N); math.Abs(z) > 5 {
			t.Errorf("σ %v on %v: mean z = %.2f", tc.sigma, tc.gran, z)
		}
		if z := (sum2/N - 1) / math.Sqrt(2.0/N); math.Abs(z) > 5 {
			t.Errorf("σ %v on %v: variance/σ² = %.5f, z = %.2f", tc.sigma, tc.gran, sum2/N, z)
		}
	}
	g := NewGaussian(seeded(9))
	for _, gran := range []float64{0.3e-9, 1, 0x1p-70} { // not a power of two; σ/g below 2^20; above 2^52
		if err := g.AddTo64On(make([]float64, 3), 0.6, gran); !errors.Is(err, ErrInvalidParameter) {
			t.Errorf("gran %v: err %v, want ErrInvalidParameter", gran, err)
		}
	}
}

// TestLatticeKeepsSumsExact: the round's lattice is the smallest σ's own
// granularity, coarsened until the largest value is below 2^52 lattice
// points, and refuses noise scales no lattice can serve.
func TestLatticeKeepsSumsExact(t *testing.T) {
	g, err := Lattice([]float64{0, 0.6, 0.5}, 10)
	if err != nil || g != Granularity(0.5) {
		t.Fatalf("Lattice = %v, %v; want the granularity of 0.5 (%v)", g, err, Granularity(0.5))
	}
	g, err = Lattice([]float64{0.6}, 5e6)
	if err != nil || !(5e6/g < 0x1p52) || !(5e6/(g/2) >= 0x1p52) {
		t.Fatalf("Lattice for magnitude 5e6 = %v, %v: want the finest with 5e6/g < 2^52", g, err)
	}
	if _, err := Lattice([]float64{1e-9, 1e9}, 1); !errors.Is(err, ErrInvalidParameter) {
		t.Fatalf("σ from 1e-9 to 1e9: err %v, want ErrInvalidParameter", err)
	}
	if g, err := Lattice(nil, 1); g != 0 || err != nil {
		t.Fatalf("no noise: %v, %v", g, err)
	}
}
