package accum

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"
	"testing/quick"
)

// naiveAdd is the reference: the plain loop the kernel must equal bit for bit.
func naiveAdd(dst []float64, src []byte) []float64 {
	out := append([]float64(nil), dst...)
	for i := range out {
		out[i] += float64(math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:])))
	}
	return out
}

func encode(v []float32) []byte {
	b := make([]byte, 0, 4*len(v))
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return b
}

func bits(v []float64) []uint64 {
	out := make([]uint64, len(v))
	for i, x := range v {
		out[i] = math.Float64bits(x)
	}
	return out
}

// input draws a destination and a source of equal length, with an offset
// into the source bytes so unaligned views are exercised too.
type input struct {
	dst []float64
	src []byte
}

func randInput(r *rand.Rand) input {
	n := r.IntN(200)
	if r.IntN(4) == 0 {
		n = r.IntN(5000)
	}
	off := r.IntN(4)
	raw := make([]byte, off+4*n)
	dst := make([]float64, n)
	for i := range n {
		var x float32
		switch r.IntN(20) {
		case 0:
			x = math.Float32frombits(r.Uint32()) // any bit pattern: NaN, Inf, subnormals
		default:
			x = float32(r.NormFloat64() * math.Pow(10, float64(r.IntN(12)-6)))
		}
		binary.LittleEndian.PutUint32(raw[off+4*i:], math.Float32bits(x))
		dst[i] = r.NormFloat64() * math.Pow(10, float64(r.IntN(12)-6))
	}
	return input{dst: dst, src: raw[off:]}
}

func TestAddEqualsNaiveLoop(t *testing.T) {
	for _, kernel := range []struct {
		name string
		add  func([]float64, []byte) error
	}{{"Add/" + Kernel(), Add}, {"AddGeneric", AddGeneric}} {
		t.Run(kernel.name, func(t *testing.T) {
			fast := func(seed uint64) []uint64 {
				in := randInput(rand.New(rand.NewPCG(seed, 1)))
				dst := append([]float64(nil), in.dst...)
				if err := kernel.add(dst, in.src); err != nil {
					t.Fatal(err)
				}
				return bits(dst)
			}
			slow := func(seed uint64) []uint64 {
				in := randInput(rand.New(rand.NewPCG(seed, 1)))
				return bits(naiveAdd(in.dst, in.src))
			}
			if err := quick.CheckEqual(fast, slow, &quick.Config{MaxCount: 500, Rand: nil}); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestAddManyEqualsAddInOrder(t *testing.T) {
	r := rand.New(rand.NewChaCha8([32]byte{2}))
	for c, n := range []int{0, 1, 15, 16, 17, BlockElems - 1, BlockElems + 17, 3*BlockElems + 5} {
		// 1…8 sources: groups of four and the singles after them; odd
		// cases start one byte into their buffer (a NATS payload may).
		srcs := make([][]byte, 1+c%9)
		for k := range srcs {
			v := make([]float32, n)
			for i := range v {
				v[i] = float32(r.NormFloat64())
			}
			srcs[k] = encode(v)
			if k%2 == 1 {
				srcs[k] = append([]byte{0}, srcs[k]...)[1:]
			}
		}
		want := make([]float64, n)
		for _, s := range srcs {
			want = naiveAdd(want, s)
		}
		got := make([]float64, n)
		if err := AddMany(got, srcs); err != nil {
			t.Fatal(err)
		}
		for i := range got {
			if math.Float64bits(got[i]) != math.Float64bits(want[i]) {
				t.Fatalf("n=%d: element %d: got %v, want %v", n, i, got[i], want[i])
			}
		}
	}
}

func TestLengthMismatch(t *testing.T) {
	if err := Add(make([]float64, 3), make([]byte, 8)); err == nil {
		t.Error("Add accepted 8 bytes for 3 values")
	}
	if err := AddMany(make([]float64, 3), [][]byte{make([]byte, 12), make([]byte, 13)}); err == nil {
		t.Error("AddMany accepted a 13-byte source for 3 values")
	}
	if _, err := SumSquares(make([]byte, 7)); err == nil {
		t.Error("SumSquares accepted 7 bytes")
	}
}

// TestSumSquares checks the blocked sum of squares against a naive float64
// loop. Both sum n non-negative terms; each has error ≤ n·2⁻⁵³ relative to the
// exact sum, so they differ by at most 2n·2⁻⁵³ relative (we allow 4n·2⁻⁵³).
func TestSumSquares(t *testing.T) {
	r := rand.New(rand.NewChaCha8([32]byte{3}))
	for _, n := range []int{0, 1, 15, 16, 33, 1000, 100003} {
		v := make([]float32, n)
		want := 0.0
		for i := range v {
			v[i] = float32(r.NormFloat64() * 1e3)
			want += float64(v[i]) * float64(v[i])
		}
		got, err := SumSquares(encode(v))
		if err != nil {
			t.Fatal(err)
		}
		if d := math.Abs(got - want); d > 4*float64(n)*0x1p-53*want {
			t.Errorf("n=%d: got %v, want %v (diff %g)", n, got, want, d)
		}
	}
	for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))} {
		v := make([]float32, 100)
		v[77] = bad
		got, _ := SumSquares(encode(v))
		if !math.IsNaN(got) && !math.IsInf(got, 0) {
			t.Errorf("a %v element: got finite %v", bad, got)
		}
	}
	// The largest float32s cannot overflow the float64 sum.
	v := make([]float32, 4096)
	for i := range v {
		v[i] = math.MaxFloat32
	}
	if got, _ := SumSquares(encode(v)); math.IsInf(got, 0) {
		t.Errorf("max float32s overflowed: %v", got)
	}
}

func TestReadBytes(t *testing.T) {
	b := make([]byte, 1000)
	b[999] = 1
	b[500] = 2
	if ReadBytes(b) == 0 {
		t.Error("ReadBytes of non-zero bytes is 0: not every byte was read")
	}
	if ReadBytes(make([]byte, 1000)) != 0 {
		t.Error("ReadBytes of zeros is not 0")
	}
}
