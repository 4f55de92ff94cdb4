package seal

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func key(t *testing.T, b byte) *Key {
	t.Helper()
	raw := bytes.Repeat([]byte{b}, 32)
	k, err := NewKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSealOpen(t *testing.T) {
	k, other := key(t, 1), key(t, 2)
	msg := []byte("ledger snapshot")
	sealed, err := k.Seal(msg)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, msg) {
		t.Fatal("plaintext visible in sealed data")
	}
	got, err := k.Open(sealed)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("open: %q, %v", got, err)
	}
	tests := []struct {
		name string
		k    *Key
		b    []byte
		want error
	}{
		{"wrong key", other, sealed, ErrWrongKey},
		{"edited byte", k, append(append([]byte(nil), sealed[:len(sealed)-1]...), sealed[len(sealed)-1]^1), ErrWrongKey},
		{"truncated", k, sealed[:len(magic)+3], ErrWrongKey},
		{"no key for sealed data", nil, sealed, ErrNeedKey},
		{"key for plain data", k, msg, ErrNotSealed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := tt.k.Open(tt.b); !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
	var none *Key
	if b, err := none.Open(msg); err != nil || !bytes.Equal(b, msg) {
		t.Fatal("nil key must pass plain data through")
	}
}

func TestParseKey(t *testing.T) {
	hexKey, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseKey(hexKey); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "abcd", "zz" + hexKey[2:]} {
		if _, err := ParseKey(bad); !errors.Is(err, ErrBadKey) {
			t.Errorf("ParseKey(%q): got %v, want ErrBadKey", bad, err)
		}
	}
}

// TestSource: a key says where it was loaded from, so errors about data it
// cannot open can name the key file.
func TestSource(t *testing.T) {
	hexKey, _ := Generate()
	path := filepath.Join(t.TempDir(), "k")
	if err := os.WriteFile(path, []byte(hexKey), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("STRATA_KEY", hexKey)
	fromFile, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	fromEnv, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := ParseKey(hexKey)
	tests := []struct {
		name string
		k    *Key
		want string
	}{
		{"file", fromFile, "key file " + path},
		{"environment", fromEnv, "STRATA_KEY"},
		{"bytes", raw, "the given key"},
		{"nil", nil, "no key (no --key-file, STRATA_KEY_FILE or STRATA_KEY)"},
	}
	for _, tt := range tests {
		if got := tt.k.Source(); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
}

func FuzzOpen(f *testing.F) {
	k, _ := NewKey(bytes.Repeat([]byte{7}, 32))
	s, _ := k.Seal([]byte("x"))
	f.Add(s)
	f.Add([]byte("STRATA-SEAL1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		k.Open(b)
	})
}
