//go:build amd64 && !purego

package accum

import "golang.org/x/sys/cpu"

var useAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA

var kernelName = map[bool]string{true: "avx2", false: "generic"}[useAVX2]

// The assembly kernels handle n a multiple of 16 elements (64 bytes).

//go:noescape
func addAVX2(dst *float64, src *byte, n int)

//go:noescape
func add4AVX2(dst *float64, s0, s1, s2, s3 *byte, n int)

//go:noescape
func sumSquaresAVX2(src *byte, n int) float64

//go:noescape
func readAVX2(src *byte, n int) uint64

func add(dst []float64, src []byte) {
	n := len(dst) &^ 15
	if useAVX2 && n > 0 {
		addAVX2(&dst[0], &src[0], n)
	}
	addGeneric(dst[n:], src[4*n:])
}

// add4 adds four sources into dst, element by element in source order, so
// the result is bit-for-bit that of four calls of add.
func add4(dst []float64, s0, s1, s2, s3 []byte) {
	n := len(dst) &^ 7
	if useAVX2 && n > 0 {
		add4AVX2(&dst[0], &s0[0], &s1[0], &s2[0], &s3[0], n)
	}
	for _, s := range [][]byte{s0, s1, s2, s3} {
		addGeneric(dst[n:], s[4*n:])
	}
}

func sumSquares(src []byte) float64 {
	n := (len(src) / 4) &^ 15
	if !useAVX2 || n == 0 {
		return sumSquaresGeneric(src)
	}
	return sumSquaresAVX2(&src[0], n) + sumSquaresGeneric(src[4*n:])
}

func readBytes(src []byte) uint64 {
	n := len(src) &^ 127
	if !useAVX2 || n == 0 {
		return readGeneric(src)
	}
	return readAVX2(&src[0], n) ^ readGeneric(src[n:])
}
