package wire

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"unsafe"
)

// littleEndian is true on the machines Strata runs on (amd64, arm64); the
// in-place view below relies on it and falls back to a decode otherwise.
var littleEndian = func() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}()

// Float32s views b as little-endian float32s. When b is suitably aligned on a
// little-endian machine the result shares b's memory (no copy); otherwise it
// is decoded into a new slice.
func Float32s(b []byte) ([]float32, error) {
	if len(b)%4 != 0 {
		return nil, fmt.Errorf("%w: vector of %d bytes is not a whole number of float32s", ErrMalformed, len(b))
	}
	n := len(b) / 4
	if n == 0 {
		return nil, nil
	}
	if littleEndian && uintptr(unsafe.Pointer(&b[0]))%4 == 0 {
		return unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), n), nil
	}
	out := make([]float32, n)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out, nil
}

// AppendFloat32s appends v to dst as little-endian float32s.
func AppendFloat32s(dst []byte, v []float32) []byte {
	for _, x := range v {
		dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(x))
	}
	return dst
}

// AppendFloat64sAs32 appends v, narrowed to float32, to dst.
func AppendFloat64sAs32(dst []byte, v []float64) []byte {
	for _, x := range v {
		dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(float32(x)))
	}
	return dst
}

// AddFloat32sTo adds the little-endian float32 vector b into dst
// (float64 accumulators, so that sums of many updates do not lose the small
// ones). It returns an error on a length mismatch.
func AddFloat32sTo(dst []float64, b []byte) error {
	if len(b) != 4*len(dst) {
		return fmt.Errorf("%w: vector of %d bytes, want %d values", ErrMalformed, len(b), len(dst))
	}
	v, err := Float32s(b)
	if err != nil {
		return err
	}
	for i, x := range v {
		dst[i] += float64(x)
	}
	return nil
}

// Float64s views b as little-endian float64s, sharing b's memory when it
// is suitably aligned on a little-endian machine and decoding otherwise.
func Float64s(b []byte) ([]float64, error) {
	if len(b)%8 != 0 {
		return nil, fmt.Errorf("%w: vector of %d bytes is not a whole number of float64s", ErrMalformed, len(b))
	}
	n := len(b) / 8
	if n == 0 {
		return nil, nil
	}
	if littleEndian && uintptr(unsafe.Pointer(&b[0]))%8 == 0 {
		return unsafe.Slice((*float64)(unsafe.Pointer(&b[0])), n), nil
	}
	out := make([]float64, n)
	for i := range out {
		out[i] = math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:]))
	}
	return out, nil
}

// AppendFloat64s appends v to dst as little-endian float64s.
func AppendFloat64s(dst []byte, v []float64) []byte {
	for _, x := range v {
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(x))
	}
	return dst
}

// Float64Bytes returns v's own memory as little-endian float64 bytes
// (encoded in place on a big-endian machine): a region's partial is its
// float64 sum, sent without a copy; v must not be used afterwards.
func Float64Bytes(v []float64) []byte {
	if len(v) == 0 {
		return []byte{}
	}
	b := unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 8*len(v))
	if !littleEndian {
		for i, x := range v {
			binary.LittleEndian.PutUint64(b[8*i:], math.Float64bits(x))
		}
	}
	return b
}

// AddFloat64sTo adds the little-endian float64 vector b into dst.
func AddFloat64sTo(dst []float64, b []byte) error {
	if len(b) != 8*len(dst) {
		return fmt.Errorf("%w: vector of %d bytes, want %d float64 values", ErrMalformed, len(b), len(dst))
	}
	v, err := Float64s(b)
	if err != nil {
		return err
	}
	for i, x := range v {
		dst[i] += x
	}
	return nil
}

// PayloadDigest is what signatures cover of an update's values: the
// encoding, the element count, the digest of the data bytes
// (identity.Digest, BLAKE3-256) and, for q8, every chunk's scale, under
// SHA-256. Streams hash their data incrementally and keep
// the scales, so the digest never needs the payload in one piece.
func PayloadDigest(encoding string, total int, data [32]byte, scales []float32) [32]byte {
	h := sha256.New()
	h.Write([]byte(encoding))
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(total))
	h.Write(b[:])
	h.Write(data[:])
	for _, s := range scales {
		binary.LittleEndian.PutUint32(b[:4], math.Float32bits(s))
		h.Write(b[:4])
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}
