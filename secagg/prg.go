package secagg

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"unsafe"
)

// The PRG expands a 16-byte seed into ring elements: AES-128 in counter mode
// from a zero IV, its key stream read as little-endian uint32s. Each seed is
// used for one stream only (seeds are fresh per session and per pair), so the
// zero IV is safe. Elements are drawn mod 2^32 and reduced mod 2^b with
// everything else, which keeps them uniform in Z_{2^b}.

// SeedSize is the size of a mask seed: an AES-128 key.
const SeedSize = 16

// prgBlock is how many bytes of key stream are made per pass: large enough
// to amortise the call, small enough to stay in L1 (4 KiB measured best on
// the benchmark machine, between 1 and 32 KiB).
const prgBlock = 4096

// littleEndian reports whether the key stream can be read as uint32s in
// place (a reinterpretation, DESIGN.md §6) rather than decoded one by one.
var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// zeros is the all-zero source the key stream is XORed onto. It is never
// written.
var zeros [prgBlock]byte

// addPRG adds (or, with neg, subtracts) PRG(seed) to dst, element-wise mod
// 2^32.
func addPRG(dst []uint32, seed *[SeedSize]byte, neg bool) { addPRGAt(dst, seed, neg, 0) }

// addPRGAt is addPRG on the window of the stream that starts at element
// off, a multiple of 4 (one AES block holds 4 elements): dst[i] gets
// element off+i. Workers use it to expand disjoint windows of one stream.
func addPRGAt(dst []uint32, seed *[SeedSize]byte, neg bool, off int) {
	if off%4 != 0 {
		panic("secagg: addPRGAt offset not a multiple of 4") // a bug in this package, never input
	}
	block, err := aes.NewCipher(seed[:])
	if err != nil {
		panic(err) // unreachable: the key length is fixed
	}
	// The counter block is a 128-bit big-endian integer, starting at 0.
	var iv [aes.BlockSize]byte
	binary.BigEndian.PutUint64(iv[8:], uint64(off/4))
	ctr := cipher.NewCTR(block, iv[:])
	// The key stream lands in uint32 words so that, on little-endian
	// machines, it is read in place with no alignment question.
	var words [prgBlock / 4]uint32
	buf := unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), prgBlock)
	for len(dst) > 0 {
		n := min(len(dst), prgBlock/4)
		ks := buf[:4*n]
		ctr.XORKeyStream(ks, zeros[:4*n])
		d := dst[:n]
		if littleEndian {
			if neg {
				subWords(d, words[:n])
			} else {
				addWords(d, words[:n])
			}
		} else if neg {
			for i := range d {
				d[i] -= binary.LittleEndian.Uint32(ks[4*i:])
			}
		} else {
			for i := range d {
				d[i] += binary.LittleEndian.Uint32(ks[4*i:])
			}
		}
		dst = dst[n:]
	}
}

// addWords sets d[i] += w[i]; len(d) == len(w). Unrolled by four: the
// loop is load-add-store bound, and unrolling measured ~15% faster.
func addWords(d, w []uint32) {
	d = d[:len(w)]
	i := 0
	for ; i+4 <= len(w); i += 4 {
		d[i] += w[i]
		d[i+1] += w[i+1]
		d[i+2] += w[i+2]
		d[i+3] += w[i+3]
	}
	for ; i < len(w); i++ {
		d[i] += w[i]
	}
}

// subWords sets d[i] -= w[i]; len(d) == len(w).
func subWords(d, w []uint32) {
	d = d[:len(w)]
	i := 0
	for ; i+4 <= len(w); i += 4 {
		d[i] -= w[i]
		d[i+1] -= w[i+1]
		d[i+2] -= w[i+2]
		d[i+3] -= w[i+3]
	}
	for ; i < len(w); i++ {
		d[i] -= w[i]
	}
}

// AddMask adds PRG(seed) to dst element-wise mod 2^32: the expansion of
// one mask, exported so that benchmarks outside the package (strata bench
// secagg) can time it beside the machine's raw AES-CTR.
func AddMask(dst []uint32, seed *[SeedSize]byte) { addPRG(dst, seed, false) }
