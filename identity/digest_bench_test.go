package identity

import (
	"crypto/sha256"
	"fmt"
	"testing"
)

// BenchmarkDigest is the payload digest beside SHA-256 of the same bytes in
// the same run: a region computes it over every byte of every signed update
// it ingests, so its speed is part of the region's ingest rate.
func BenchmarkDigest(b *testing.B) {
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	b.Run("blake3", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			Digest(data)
		}
	})
	b.Run("sha256", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			sha256.Sum256(data)
		}
	})
	// A stream's chunks arrive in pieces of the client's chunk size.
	for _, piece := range []int{16 << 10, 64 << 10, 256 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("blake3-in-%dKiB-pieces", piece>>10), func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				h := NewDigest()
				for lo := 0; lo < len(data); lo += piece {
					h.Write(data[lo : lo+piece])
				}
				h.Sum(nil)
			}
		})
	}
}

// TestNewDigestMatchesDigest: the incremental digest of data fed in pieces
// of any size equals the one-shot digest.
func TestNewDigestMatchesDigest(t *testing.T) {
	data := make([]byte, 5000)
	for i := range data {
		data[i] = byte(i*31 + 7)
	}
	want := Digest(data)
	for _, step := range []int{1, 7, 64, 1000, 1024, 4999, 5000} {
		h := NewDigest()
		for lo := 0; lo < len(data); lo += step {
			h.Write(data[lo:min(lo+step, len(data))])
		}
		if got := h.Sum(nil); string(got) != string(want[:]) {
			t.Fatalf("step %d: incremental %x, one-shot %x", step, got, want)
		}
	}
}
