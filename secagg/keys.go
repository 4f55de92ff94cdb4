package secagg

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
)

// Key derivation. Every derived key binds the session and the ordered pair
// of IDs, so a pair's keys differ across sessions and between the share key
// and the mask seed.

const (
	labelShareKey = "strata/secagg/v1 share key"
	labelMaskSeed = "strata/secagg/v1 mask seed"
	labelCommit   = "strata/secagg/v1 seed commitment"
)

// newPrivateKey draws an X25519 private key from r. It reads the 32 bytes
// itself so that a seeded r gives reproducible keys (ecdh.GenerateKey may
// ignore its reader).
func newPrivateKey(r io.Reader) (*ecdh.PrivateKey, error) {
	var b [32]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return nil, fmt.Errorf("secagg: reading randomness: %w", err)
	}
	return ecdh.X25519().NewPrivateKey(b[:])
}

func pairInfo(label string, a, b ID) string {
	lo, hi := min(a, b), max(a, b)
	var buf [8]byte
	binary.LittleEndian.PutUint32(buf[:4], uint32(lo))
	binary.LittleEndian.PutUint32(buf[4:], uint32(hi))
	return label + string(buf[:])
}

// agree runs X25519 between priv and the peer's public key bytes and
// derives n bytes for the pair (self, peer) under label.
func agree(priv *ecdh.PrivateKey, peer []byte, session SessionID, label string, self, other ID, n int) ([]byte, error) {
	pub, err := ecdh.X25519().NewPublicKey(peer)
	if err != nil {
		return nil, fmt.Errorf("%w: public key of client %d: %v", ErrProtocol, other, err)
	}
	shared, err := priv.ECDH(pub)
	if err != nil { // a low-order point
		return nil, fmt.Errorf("%w: key agreement with client %d: %v", ErrProtocol, other, err)
	}
	return hkdf.Key(sha256.New, shared, session[:], pairInfo(label, self, other), n)
}

// maskSeed derives the pairwise mask seed of (self, other).
func maskSeed(priv *ecdh.PrivateKey, peer []byte, session SessionID, self, other ID) (*[SeedSize]byte, error) {
	k, err := agree(priv, peer, session, labelMaskSeed, self, other, SeedSize)
	if err != nil {
		return nil, err
	}
	return (*[SeedSize]byte)(k), nil
}

// shareAEAD returns AES-256-GCM keyed for the pair (self, other).
func shareAEAD(priv *ecdh.PrivateKey, peer []byte, session SessionID, self, other ID) (cipher.AEAD, error) {
	k, err := agree(priv, peer, session, labelShareKey, self, other, 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// The pair's one key encrypts one message in each direction; the nonce is
// (from, to), so the two never collide. The additional data binds the
// version, session and direction.
func shareNonce(from, to ID) []byte {
	n := make([]byte, 12)
	binary.LittleEndian.PutUint32(n, uint32(from))
	binary.LittleEndian.PutUint32(n[4:], uint32(to))
	return n
}

func shareAD(session SessionID, from, to ID) []byte {
	ad := append([]byte{'S', 'A', Version}, session[:]...)
	ad = binary.LittleEndian.AppendUint32(ad, uint32(from))
	return binary.LittleEndian.AppendUint32(ad, uint32(to))
}

// sharePlainSize is a share pair's plaintext: the mask-key share then the
// seed share, field elements as uint64s.
const (
	keyElems       = (KeySize + chunkBytes - 1) / chunkBytes
	seedElems      = (SeedSize + chunkBytes - 1) / chunkBytes
	sharePlainSize = 8 * (keyElems + seedElems)
)

func sealShare(aead cipher.AEAD, session SessionID, from, to ID, keyShare, seedShare []uint64) []byte {
	pt := make([]byte, 0, sharePlainSize)
	for _, e := range keyShare {
		pt = binary.LittleEndian.AppendUint64(pt, e)
	}
	for _, e := range seedShare {
		pt = binary.LittleEndian.AppendUint64(pt, e)
	}
	return aead.Seal(nil, shareNonce(from, to), pt, shareAD(session, from, to))
}

func openShare(aead cipher.AEAD, session SessionID, from, to ID, ct []byte) (keyShare, seedShare []uint64, err error) {
	pt, err := aead.Open(nil, shareNonce(from, to), ct, shareAD(session, from, to))
	if err != nil || len(pt) != sharePlainSize {
		return nil, nil, fmt.Errorf("%w: share from client %d does not decrypt", ErrProtocol, from)
	}
	elems := make([]uint64, keyElems+seedElems)
	for i := range elems {
		elems[i] = binary.LittleEndian.Uint64(pt[8*i:])
		if elems[i] >= prime {
			return nil, nil, fmt.Errorf("%w: share from client %d out of the field", ErrProtocol, from)
		}
	}
	return elems[:keyElems], elems[keyElems:], nil
}

// seedCommit binds a client's self-mask seed.
func seedCommit(session SessionID, id ID, seed []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte(labelCommit))
	h.Write(session[:])
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], uint32(id))
	h.Write(b[:])
	h.Write(seed)
	var out [32]byte
	h.Sum(out[:0])
	return out
}
