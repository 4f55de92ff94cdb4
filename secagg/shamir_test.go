package secagg

import (
	"math/big"
	"math/rand/v2"
	"slices"
	"testing"
	"testing/quick"
)

func TestFieldMulMatchesBig(t *testing.T) {
	p := big.NewInt(prime)
	naive := func(a, b uint64) uint64 {
		a, b = a%prime, b%prime
		var x, y big.Int
		x.SetUint64(a)
		y.SetUint64(b)
		return x.Mod(x.Mul(&x, &y), p).Uint64()
	}
	fast := func(a, b uint64) uint64 { return fieldMul(a%prime, b%prime) }
	if err := quick.CheckEqual(fast, naive, &quick.Config{MaxCount: 20000}); err != nil {
		t.Fatal(err)
	}
	for _, a := range []uint64{1, 2, prime - 1, prime - 2, 1 << 60, 12345678901234567} {
		if got := fieldMul(a, fieldInv(a)); got != 1 {
			t.Errorf("%d · %d⁻¹ = %d, want 1", a, a, got)
		}
		if got := fieldAdd(fieldSub(5, a), a); got != 5 {
			t.Errorf("(5 - %d) + %d = %d, want 5", a, a, got)
		}
	}
}

func TestSecretFieldRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	for _, n := range []int{1, 7, 16, 32, 33} {
		s := make([]byte, n)
		for i := range s {
			s[i] = byte(rng.Uint32())
		}
		got, err := fieldToSecret(secretToField(s), n)
		if err != nil || !slices.Equal(got, s) {
			t.Errorf("n = %d: round trip = %x, %v; want %x", n, got, err, s)
		}
	}
	if _, err := fieldToSecret([]uint64{1 << 56}, 7); err == nil {
		t.Error("element above 2^56 accepted")
	}
}

// TestShamirAnyTSubset checks that every t-subset of the shares rebuilds
// the secret.
func TestShamirAnyTSubset(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 2))
	r := seeded(2)
	for _, tc := range []struct{ k, t int }{{1, 1}, {5, 1}, {5, 3}, {5, 5}, {20, 9}} {
		secret := secretToField([]byte("a 32-byte X25519 private key...."))
		xs := make([]ID, tc.k)
		for i, v := range rng.Perm(1000)[:tc.k] {
			xs[i] = ID(v + 1)
		}
		shares, err := shamirSplit(r, secret, tc.t, xs)
		if err != nil {
			t.Fatal(err)
		}
		for trial := 0; trial < 20; trial++ {
			idx := rng.Perm(tc.k)[:tc.t]
			sx, sy := make([]ID, tc.t), make([][]uint64, tc.t)
			for i, j := range idx {
				sx[i], sy[i] = xs[j], shares[j]
			}
			if got := shamirCombine(sx, sy); !slices.Equal(got, secret) {
				t.Fatalf("k = %d, t = %d: subset %v rebuilt %v, want %v", tc.k, tc.t, idx, got, secret)
			}
		}
	}
}

// TestShamirBelowThresholdRevealsNothing shows that t-1 shares are
// consistent with every secret: for the shares of secret A held by t-1
// parties and any other secret B there is a sharing of B (a polynomial of
// degree t-1) giving those same t-1 parties the very same shares. So their
// view is independent of the secret.
func TestShamirBelowThresholdRevealsNothing(t *testing.T) {
	const th, k = 5, 9
	r := seeded(3)
	xs := []ID{3, 8, 11, 20, 21, 40, 41, 77, 90}
	a := secretToField([]byte("secret A........"))
	b := secretToField([]byte("secret B, other."))
	shares, err := shamirSplit(r, a, th, xs)
	if err != nil {
		t.Fatal(err)
	}
	// The t-1 colluders' view, plus the point (0, B), fixes a polynomial of
	// degree t-1; evaluate it at the others by Lagrange interpolation.
	known := xs[:th-1]
	view := shares[:th-1]
	evalAt := func(x ID) []uint64 {
		out := make([]uint64, len(b))
		pts := append([]ID{0}, known...)
		vals := append([][]uint64{b}, view...)
		for j := range pts {
			num, den := uint64(1), uint64(1)
			for m := range pts {
				if m != j {
					num = fieldMul(num, fieldSub(uint64(x), uint64(pts[m])))
					den = fieldMul(den, fieldSub(uint64(pts[j]), uint64(pts[m])))
				}
			}
			l := fieldMul(num, fieldInv(den))
			for c := range out {
				out[c] = fieldAdd(out[c], fieldMul(l, vals[j][c]))
			}
		}
		return out
	}
	alt := make([][]uint64, k)
	copy(alt, view)
	for i := th - 1; i < k; i++ {
		alt[i] = evalAt(xs[i])
	}
	if got := shamirCombine(xs[:th], alt[:th]); !slices.Equal(got, b) {
		t.Fatalf("alternative sharing rebuilds %v, want B = %v", got, b)
	}
	if got := shamirCombine(xs[k-th:], alt[k-th:]); !slices.Equal(got, b) {
		t.Fatalf("alternative sharing, other subset, rebuilds %v, want B", got)
	}
}

// TestPRGAddSubtract checks the mask PRG: adding and then subtracting a
// stream restores the vector (at lengths that exercise the unrolled loop's
// tail and several key-stream blocks), and a stream is a pure function of
// its seed.
func TestPRGAddSubtract(t *testing.T) {
	for _, d := range []int{1, 3, 4, 5, 1023, 1024, 1025, 5000} {
		x := make([]uint32, d)
		for i := range x {
			x[i] = uint32(i * 2654435761)
		}
		y := slices.Clone(x)
		seed := &[SeedSize]byte{byte(d)}
		addPRG(y, seed, false)
		if d > 4 && slices.Equal(x, y) {
			t.Fatalf("d = %d: the mask changed nothing", d)
		}
		z := make([]uint32, d)
		addPRG(z, seed, false) // z = PRG(seed)
		for i := range z {
			if y[i]-x[i] != z[i] {
				t.Fatalf("d = %d: element %d: the stream depends on the vector", d, i)
			}
		}
		addPRG(y, seed, true)
		if !slices.Equal(x, y) {
			t.Fatalf("d = %d: add then subtract did not restore the vector", d)
		}
	}
}

// TestPRGWindows checks that expanding disjoint windows of a stream with
// addPRGAt, as Finish's workers do, gives the whole stream.
func TestPRGWindows(t *testing.T) {
	const d = 5000
	seed := &[SeedSize]byte{7}
	whole := make([]uint32, d)
	addPRG(whole, seed, false)
	for _, cut := range []int{0, 4, 1024, 1028, 4096, 4996} {
		parts := make([]uint32, d)
		addPRGAt(parts[:cut], seed, false, 0)
		addPRGAt(parts[cut:], seed, false, cut)
		if !slices.Equal(parts, whole) {
			t.Fatalf("cut at %d: windows differ from the whole stream", cut)
		}
	}
}
