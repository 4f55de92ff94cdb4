// Package seal encrypts what Strata keeps at rest — model blobs and ledger
// snapshots — with AES-256-GCM under one key, so that a wrong key or an
// edited file fails with a clear error instead of yielding garbage.
package seal

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
)

// magic marks sealed data (and its format version).
var magic = []byte("STRATA-SEAL1\n")

// Errors callers test for.
var (
	ErrWrongKey  = errors.New("seal: wrong key or corrupted data (authentication failed)")
	ErrNeedKey   = errors.New("seal: data is encrypted: give the key (--key-file or STRATA_KEY)")
	ErrNotSealed = errors.New("seal: data is not encrypted but a key is configured")
	ErrBadKey    = errors.New("seal: bad key")
)

// Key is an AES-256-GCM key. A nil *Key means "no encryption".
type Key struct {
	aead cipher.AEAD
	// source says where Load found the key, for error messages.
	source string
}

// Source says where the key came from ("key file PATH" or "STRATA_KEY"),
// so an error about data the key cannot open can name it; it is "no key"
// for a nil key and "the given key" for one made from bytes.
func (k *Key) Source() string {
	switch {
	case k == nil:
		return "no key (no --key-file, STRATA_KEY_FILE or STRATA_KEY)"
	case k.source == "":
		return "the given key"
	}
	return k.source
}

// NewKey makes a key from 32 raw bytes.
func NewKey(raw []byte) (*Key, error) {
	if len(raw) != 32 {
		return nil, fmt.Errorf("%w: %d bytes, want 32 (64 hex characters or 44 base64)", ErrBadKey, len(raw))
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	return &Key{aead: aead}, nil
}

// ParseKey reads a key written as 64 hex characters or standard base64.
func ParseKey(text string) (*Key, error) {
	text = strings.TrimSpace(text)
	if raw, err := hex.DecodeString(text); err == nil && len(raw) == 32 {
		return NewKey(raw)
	}
	if raw, err := base64.StdEncoding.DecodeString(text); err == nil {
		return NewKey(raw)
	}
	return nil, fmt.Errorf("%w: not 64 hex characters or base64 of 32 bytes", ErrBadKey)
}

// Load returns the key from a file if path is set, else from the
// environment variable STRATA_KEY, else nil (no encryption).
func Load(path string) (*Key, error) {
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("seal: key file: %w", err)
		}
		k, err := ParseKey(string(b))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		k.source = "key file " + path
		return k, nil
	}
	if v := os.Getenv("STRATA_KEY"); v != "" {
		k, err := ParseKey(v)
		if err != nil {
			return nil, fmt.Errorf("STRATA_KEY: %w", err)
		}
		k.source = "STRATA_KEY"
		return k, nil
	}
	return nil, nil
}

// Generate returns a fresh random key in hex, for `strata keygen`.
func Generate() (string, error) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	return hex.EncodeToString(raw), nil
}

// IsSealed reports whether b carries the sealed-data header.
func IsSealed(b []byte) bool { return bytes.HasPrefix(b, magic) }

// Seal encrypts b; with a nil key it returns b unchanged.
func (k *Key) Seal(b []byte) ([]byte, error) {
	if k == nil {
		return b, nil
	}
	nonce := make([]byte, k.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("seal: nonce: %w", err)
	}
	out := append(append([]byte(nil), magic...), nonce...)
	return k.aead.Seal(out, nonce, b, magic), nil
}

// Open decrypts what Seal produced. With a nil key, sealed input is an
// error (ErrNeedKey) and plain input is returned as is; with a key, plain
// input is ErrNotSealed and a wrong key or edited data is ErrWrongKey.
func (k *Key) Open(b []byte) ([]byte, error) {
	sealed := IsSealed(b)
	switch {
	case k == nil && sealed:
		return nil, ErrNeedKey
	case k == nil:
		return b, nil
	case !sealed:
		return nil, ErrNotSealed
	}
	rest := b[len(magic):]
	ns := k.aead.NonceSize()
	if len(rest) < ns+k.aead.Overhead() {
		return nil, ErrWrongKey
	}
	out, err := k.aead.Open(nil, rest[:ns], rest[ns:], magic)
	if err != nil {
		return nil, ErrWrongKey
	}
	return out, nil
}
