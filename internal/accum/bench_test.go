package accum

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"unsafe"
)

var sizes = []int{1e3, 1e4, 1e5, 1e6, 1e7}

func name(n int) string { return fmt.Sprintf("1e%d", len(fmt.Sprint(n))-1) }

func benchVec(n int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return encode(v)
}

// The Add, AddGeneric and PlainLoop benchmarks report bytes of float32 input
// per second; MemRead reads the same bytes, so their ratios are what counts.

func BenchmarkAdd(b *testing.B) {
	for _, n := range sizes {
		src, dst := benchVec(n), make([]float64, n)
		b.Run(name(n), func(b *testing.B) {
			b.SetBytes(int64(len(src)))
			for b.Loop() {
				Add(dst, src)
			}
		})
	}
}

func BenchmarkAddGeneric(b *testing.B) {
	for _, n := range sizes {
		src, dst := benchVec(n), make([]float64, n)
		b.Run(name(n), func(b *testing.B) {
			b.SetBytes(int64(len(src)))
			for b.Loop() {
				AddGeneric(dst, src)
			}
		})
	}
}

// BenchmarkPlainLoop is the loop a Go programmer would write over a
// []float32 already viewed in place: the reference for the fallback.
func BenchmarkPlainLoop(b *testing.B) {
	for _, n := range sizes {
		src, dst := benchVec(n), make([]float64, n)
		v := unsafe.Slice((*float32)(unsafe.Pointer(&src[0])), n)
		b.Run(name(n), func(b *testing.B) {
			b.SetBytes(int64(len(src)))
			for b.Loop() {
				for i, x := range v {
					dst[i] += float64(x)
				}
			}
		})
	}
}

func BenchmarkMemRead(b *testing.B) {
	for _, n := range sizes {
		src := benchVec(n)
		b.Run(name(n), func(b *testing.B) {
			b.SetBytes(int64(len(src)))
			for b.Loop() {
				ReadBytes(src)
			}
		})
	}
}

func BenchmarkSumSquares(b *testing.B) {
	for _, n := range sizes {
		src := benchVec(n)
		b.Run(name(n), func(b *testing.B) {
			b.SetBytes(int64(len(src)))
			for b.Loop() {
				SumSquares(src)
			}
		})
	}
}

// BenchmarkAddMany sums N = 100 vectors of d = 10⁶ (400 MB of input, far
// beyond cache) beside a read of the same 400 MB: the kernel bar.
func BenchmarkAddMany(b *testing.B) {
	const n, d = 100, 1_000_000
	one := benchVec(d)
	srcs := make([][]byte, n)
	for i := range srcs {
		srcs[i] = append([]byte(nil), one...)
	}
	dst := make([]float64, d)
	b.Run("N100_d1e6/add", func(b *testing.B) {
		b.SetBytes(int64(n * 4 * d))
		for b.Loop() {
			AddMany(dst, srcs)
		}
	})
	b.Run("N100_d1e6/memread", func(b *testing.B) {
		b.SetBytes(int64(n * 4 * d))
		for b.Loop() {
			for _, s := range srcs {
				ReadBytes(s)
			}
		}
	})
}
