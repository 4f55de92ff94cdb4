//go:build amd64 && !purego

package accum

import "golang.org/x/sys/cpu"

var useAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA

var kernelName = map[bool]string{true: "avx2", false: "generic"}[useAVX2]

// The assembly kernels handle n a multiple of 16 elements (64 bytes).

//go:noescape
func addAVX2(dst *float64, src *byte, n int)

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
