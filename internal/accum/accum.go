package accum

import (
	"encoding/binary"
	"fmt"
	"math"
	"unsafe"

	"golang.org/x/sys/cpu"
)

// BlockElems is the number of destination elements AddMany processes across
// all inputs before moving on: 65536 float64 (512 KiB) stay in a core's L2
// while each input streams 256 KiB runs, long enough for the hardware
// prefetchers (smaller blocks measured 0.55–0.70 of a memory read on d=1e7,
// this one 0.77–0.86: `strata bench kernel`).
const BlockElems = 65536

// Add adds the little-endian float32 vector src into dst:
// dst[i] += float64(src[i]). src must hold exactly 4·len(dst) bytes and may
// have any alignment.
func Add(dst []float64, src []byte) error {
	if len(src) != 4*len(dst) {
		return fmt.Errorf("accum: Add: %d source bytes for %d values", len(src), len(dst))
	}
	add(dst, src)
	return nil
}

// AddMany adds every vector of srcs into dst, blocked over dst so that the
// float64 sum stays in cache. The result is bit-for-bit that of calling Add
// for each source in order.
func AddMany(dst []float64, srcs [][]byte) error {
	for i, s := range srcs {
		if len(s) != 4*len(dst) {
			return fmt.Errorf("accum: AddMany: source %d has %d bytes for %d values", i, len(s), len(dst))
		}
	}
	for lo := 0; lo < len(dst); lo += BlockElems {
		hi := min(lo+BlockElems, len(dst))
		d, i := dst[lo:hi], 0
		for ; i+4 <= len(srcs); i += 4 {
			add4(d, srcs[i][4*lo:4*hi], srcs[i+1][4*lo:4*hi], srcs[i+2][4*lo:4*hi], srcs[i+3][4*lo:4*hi])
		}
		for _, s := range srcs[i:] {
			add(d, s[4*lo:4*hi])
		}
	}
	return nil
}

// SumSquares returns Σ float64(x)² over the little-endian float32 vector
// src. The result is NaN or +Inf when any element is NaN or ±Inf.
func SumSquares(src []byte) (float64, error) {
	if len(src)%4 != 0 {
		return 0, fmt.Errorf("accum: SumSquares: %d bytes is not a whole number of float32s", len(src))
	}
	return sumSquares(src), nil
}

// ReadBytes reads every byte of src as fast as the machine allows and
// returns a checksum of no meaning (so the read cannot be optimised away).
// It is the memory-read reference benchmarks report the kernels against.
func ReadBytes(src []byte) uint64 { return readBytes(src) }

// AddGeneric is the portable kernel of Add, exported so that benchmarks can
// compare it with the plain loop whatever kernel Add dispatches to.
func AddGeneric(dst []float64, src []byte) error {
	if len(src) != 4*len(dst) {
		return fmt.Errorf("accum: AddGeneric: %d source bytes for %d values", len(src), len(dst))
	}
	addGeneric(dst, src)
	return nil
}

// Kernel names the kernel Add dispatches to ("avx2" or "generic").
func Kernel() string { return kernelName }

// addGeneric is the portable kernel. Where the machine is little-endian and
// the bytes are aligned it reads them in place as float32s, four per
// iteration; elsewhere it decodes each value.
func addGeneric(dst []float64, src []byte) {
	src = src[:4*len(dst)]
	if v, ok := float32View(src); ok {
		// Four at a time on slices the compiler knows the length of: no
		// bounds check inside, four independent additions per iteration.
		dst = dst[:len(v)]
		i := 0
		for ; i+4 <= len(v); i += 4 {
			d, s := dst[i:i+4:i+4], v[i:i+4:i+4]
			d[0] += float64(s[0])
			d[1] += float64(s[1])
			d[2] += float64(s[2])
			d[3] += float64(s[3])
		}
		for ; i < len(v); i++ {
			dst[i] += float64(v[i])
		}
		return
	}
	i := 0
	for ; i+4 <= len(dst); i += 4 {
		s := src[4*i : 4*i+16]
		d := dst[i : i+4]
		d[0] += float64(math.Float32frombits(binary.LittleEndian.Uint32(s[0:])))
		d[1] += float64(math.Float32frombits(binary.LittleEndian.Uint32(s[4:])))
		d[2] += float64(math.Float32frombits(binary.LittleEndian.Uint32(s[8:])))
		d[3] += float64(math.Float32frombits(binary.LittleEndian.Uint32(s[12:])))
	}
	for ; i < len(dst); i++ {
		dst[i] += float64(math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:])))
	}
}

func sumSquaresGeneric(src []byte) float64 {
	var s0, s1, s2, s3 float64
	n := len(src) / 4
	i := 0
	for ; i+4 <= n; i += 4 {
		s := src[4*i : 4*i+16]
		x0 := float64(math.Float32frombits(binary.LittleEndian.Uint32(s[0:])))
		x1 := float64(math.Float32frombits(binary.LittleEndian.Uint32(s[4:])))
		x2 := float64(math.Float32frombits(binary.LittleEndian.Uint32(s[8:])))
		x3 := float64(math.Float32frombits(binary.LittleEndian.Uint32(s[12:])))
		s0 += x0 * x0
		s1 += x1 * x1
		s2 += x2 * x2
		s3 += x3 * x3
	}
	for ; i < n; i++ {
		x := float64(math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:])))
		s0 += x * x
	}
	return (s0 + s1) + (s2 + s3)
}

func readGeneric(src []byte) uint64 {
	var a, b, c, d uint64
	i := 0
	for ; i+32 <= len(src); i += 32 {
		s := src[i : i+32]
		a ^= binary.LittleEndian.Uint64(s[0:])
		b ^= binary.LittleEndian.Uint64(s[8:])
		c ^= binary.LittleEndian.Uint64(s[16:])
		d ^= binary.LittleEndian.Uint64(s[24:])
	}
	for ; i < len(src); i++ {
		a ^= uint64(src[i])
	}
	return a ^ b ^ c ^ d
}

// float32View views little-endian float32 bytes in place when the machine's
// byte order and the slice's alignment allow it.
func float32View(b []byte) ([]float32, bool) {
	if cpu.IsBigEndian || len(b) < 4 || uintptr(unsafe.Pointer(&b[0]))%4 != 0 {
		return nil, false
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), len(b)/4), true
}
