//go:build !amd64 || purego

package accum

const kernelName = "generic"

func add(dst []float64, src []byte) { addGeneric(dst, src) }
func add4(dst []float64, s0, s1, s2, s3 []byte) {
	for _, s := range [][]byte{s0, s1, s2, s3} {
		addGeneric(dst, s)
	}
}
func sumSquares(src []byte) float64 { return sumSquaresGeneric(src) }
func readBytes(src []byte) uint64   { return readGeneric(src) }
