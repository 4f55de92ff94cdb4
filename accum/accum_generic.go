//go:build !amd64 || purego

package accum

const kernelName = "generic"

func add(dst []float64, src []byte) { addGeneric(dst, src) }
func sumSquares(src []byte) float64 { return sumSquaresGeneric(src) }
func readBytes(src []byte) uint64   { return readGeneric(src) }
