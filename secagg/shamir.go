package secagg

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/bits"
)

// Shamir secret sharing over the prime field F_p with p = 2^61 - 1 (a
// Mersenne prime, so reduction is two shifts and an add). A secret of any
// length is cut into 7-byte chunks, each below 2^56 < p, and every chunk is
// shared with its own random polynomial of degree t-1. A share is the vector
// of the polynomials' values at the holder's ID.

const prime = 1<<61 - 1

// chunkBytes is how many secret bytes one field element carries.
const chunkBytes = 7

func fieldReduce(x uint64) uint64 {
	x = (x & prime) + (x >> 61)
	if x >= prime {
		x -= prime
	}
	return x
}

func fieldAdd(a, b uint64) uint64 { return fieldReduce(a + b) }

func fieldSub(a, b uint64) uint64 {
	if a >= b {
		return a - b
	}
	return a + prime - b
}

func fieldMul(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	// a·b = hi·2^64 + lo = (hi·2^3 + lo>>61)·2^61 + lo mod 2^61, and 2^61 ≡ 1.
	return fieldReduce((hi<<3 | lo>>61) + (lo & prime))
}

func fieldInv(a uint64) uint64 {
	// a^(p-2) by square and multiply.
	r, e := uint64(1), uint64(prime-2)
	for e > 0 {
		if e&1 == 1 {
			r = fieldMul(r, a)
		}
		a = fieldMul(a, a)
		e >>= 1
	}
	return r
}

// chunks is the number of field elements that carry n secret bytes.
func chunks(n int) int { return (n + chunkBytes - 1) / chunkBytes }

// secretToField cuts secret into 7-byte little-endian field elements.
func secretToField(secret []byte) []uint64 {
	out := make([]uint64, chunks(len(secret)))
	for i := range out {
		var b [8]byte
		copy(b[:], secret[i*chunkBytes:min(len(secret), (i+1)*chunkBytes)])
		out[i] = binary.LittleEndian.Uint64(b[:])
	}
	return out
}

// fieldToSecret is the inverse of secretToField for a secret of n bytes. It
// fails when an element cannot have come from secretToField, which is how a
// reconstruction from inconsistent shares usually shows.
func fieldToSecret(elems []uint64, n int) ([]byte, error) {
	if len(elems) != chunks(n) {
		return nil, fmt.Errorf("%w: %d field elements for a %d-byte secret", ErrProtocol, len(elems), n)
	}
	out := make([]byte, len(elems)*8)
	for i, e := range elems {
		last := n - i*chunkBytes
		if last > chunkBytes {
			last = chunkBytes
		}
		if e>>(8*last) != 0 {
			return nil, fmt.Errorf("%w: reconstructed secret is out of range", ErrProtocol)
		}
		binary.LittleEndian.PutUint64(out[i*chunkBytes:], e)
	}
	return out[:n], nil
}

// randField reads uniform field elements into dst from r, by rejection.
func randField(r io.Reader, dst []uint64) error {
	buf := make([]byte, 8*len(dst))
	for i := 0; i < len(dst); {
		if _, err := io.ReadFull(r, buf[8*i:]); err != nil {
			return fmt.Errorf("secagg: reading randomness: %w", err)
		}
		for ; i < len(dst); i++ {
			v := binary.LittleEndian.Uint64(buf[8*i:]) & prime
			if v == prime { // the one 61-bit value that is not below p
				break
			}
			dst[i] = v
		}
	}
	return nil
}

// shamirSplit shares the field elements secret with threshold t among the
// holders xs (distinct, non-zero). shares[j][c] is holder xs[j]'s value of
// chunk c.
func shamirSplit(r io.Reader, secret []uint64, t int, xs []ID) ([][]uint64, error) {
	coef := make([]uint64, len(secret)*(t-1))
	if err := randField(r, coef); err != nil {
		return nil, err
	}
	shares := make([][]uint64, len(xs))
	flat := make([]uint64, len(xs)*len(secret))
	for j, x := range xs {
		s := flat[j*len(secret) : (j+1)*len(secret)]
		xv := uint64(x)
		for c := range secret {
			// Horner: a0 + x(a1 + x(a2 + ...)).
			cs := coef[c*(t-1) : (c+1)*(t-1)]
			acc := uint64(0)
			for i := t - 2; i >= 0; i-- {
				acc = fieldAdd(fieldMul(acc, xv), cs[i])
			}
			s[c] = fieldAdd(fieldMul(acc, xv), secret[c])
		}
		shares[j] = s
	}
	return shares, nil
}

// shamirCombine rebuilds the secret from exactly the shares given: ys[j] at
// xs[j]. With t or more consistent shares of a threshold-t sharing it is
// exact; callers pass exactly t.
func shamirCombine(xs []ID, ys [][]uint64) []uint64 {
	// Lagrange basis at 0: λ_j = Π_{m≠j} x_m / (x_m - x_j).
	lam := make([]uint64, len(xs))
	for j := range xs {
		num, den := uint64(1), uint64(1)
		for m := range xs {
			if m == j {
				continue
			}
			num = fieldMul(num, uint64(xs[m]))
			den = fieldMul(den, fieldSub(uint64(xs[m]), uint64(xs[j])))
		}
		lam[j] = fieldMul(num, fieldInv(den))
	}
	out := make([]uint64, len(ys[0]))
	for j, y := range ys {
		for c := range out {
			out[c] = fieldAdd(out[c], fieldMul(lam[j], y[c]))
		}
	}
	return out
}
