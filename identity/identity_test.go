package identity

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestSignatureBindsEveryField(t *testing.T) {
	k, err := New(KindClient, "c1")
	if err != nil {
		t.Fatal(err)
	}
	d := Digest([]byte("values"))
	msg := UpdateMessage("j", 3, 2, "eu", "c1", 1, d)
	sig := k.Sign(msg)
	if err := Verify(k.Public(), msg, sig); err != nil {
		t.Fatalf("genuine signature: %v", err)
	}
	for name, other := range map[string][]byte{
		"job":     UpdateMessage("k", 3, 2, "eu", "c1", 1, d),
		"round":   UpdateMessage("j", 4, 2, "eu", "c1", 1, d),
		"version": UpdateMessage("j", 3, 1, "eu", "c1", 1, d),
		"region":  UpdateMessage("j", 3, 2, "us", "c1", 1, d),
		"client":  UpdateMessage("j", 3, 2, "eu", "c2", 1, d),
		"bit":     UpdateMessage("j", 3, 2, "eu", "c1", 0, d),
		"payload": UpdateMessage("j", 3, 2, "eu", "c1", 1, Digest([]byte("valueS"))),
		// Length prefixes: moving a byte between fields changes the message.
		"boundary": UpdateMessage("j", 3, 2, "e", "uc1", 1, d),
		"partial":  PartialMessage("j", 3, "eu", 10, 1, d),
	} {
		if err := Verify(k.Public(), other, sig); !errors.Is(err, ErrBadSignature) {
			t.Errorf("signature verified over a message with another %s: %v", name, err)
		}
	}
}

func TestRegistryCheckNamesTheFailure(t *testing.T) {
	a, _ := New(KindClient, "a")
	b, _ := New(KindClient, "b")
	r := NewRegistry(1, []Entry{
		{ID: "a", Kind: KindClient, Public: a.Public(), Status: StatusActive},
		{ID: "b", Kind: KindClient, Public: b.Public(), Status: StatusWithdrawn},
	})
	msg := []byte("m")
	for _, tc := range []struct {
		id   string
		sig  []byte
		want error
	}{
		{"a", a.Sign(msg), nil},
		{"a", b.Sign(msg), ErrBadSignature},
		{"b", b.Sign(msg), ErrWithdrawn},
		{"c", a.Sign(msg), ErrUnknown},
	} {
		err := r.Check(KindClient, tc.id, msg, tc.sig)
		if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("client %s: got %v, want %v", tc.id, err, tc.want)
		}
	}
	enc, err := EncodeRegistry(r)
	if err != nil {
		t.Fatal(err)
	}
	back, err := DecodeRegistry(enc)
	if err != nil {
		t.Fatal(err)
	}
	if back.Version != 1 || back.Len() != 2 || back.Check(KindClient, "a", msg, a.Sign(msg)) != nil {
		t.Fatalf("registry did not survive the wire: %+v", back)
	}
}

func TestKeyFilesAreOwnerOnly(t *testing.T) {
	dir := t.TempDir()
	k, _ := New(KindClient, "c1")
	p := filepath.Join(dir, "keys", "c1.nk")
	if err := WriteSeed(p, k); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(p)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", st.Mode().Perm())
	}
	back, err := ReadSeed(KindClient, "c1", p)
	if err != nil || back.Public() != k.Public() {
		t.Fatalf("read back: %v", err)
	}
	os.Chmod(p, 0o644)
	if _, err := ReadSeed(KindClient, "c1", p); !errors.Is(err, ErrKeyFile) {
		t.Fatalf("world-readable key accepted: %v", err)
	}
}

func TestGenerateMeshAndEnrolOneMore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "s")
	spec := MeshSpec{Operators: []string{"admin"}, Globals: []string{"g1"}, Regions: []string{"eu"}, Clients: map[string][]string{"eu": {"eu-1", "eu-2"}}}
	if err := GenerateMesh(dir, spec); err != nil {
		t.Fatal(err)
	}
	if err := GenerateMesh(dir, spec); err == nil {
		t.Fatal("a second CA overwrote the first")
	}
	if _, err := AddClient(dir, "eu-3", "eu"); err != nil {
		t.Fatal(err)
	}
	if _, err := AddClient(dir, "eu-3", "eu"); err == nil {
		t.Fatal("the same client id enrolled twice")
	}
	ks, err := LoadClients(dir, "eu")
	if err != nil || len(ks) != 3 {
		t.Fatalf("loaded %d client keys (%v), want 3", len(ks), err)
	}
	pub, err := LoadPublic(dir)
	if err != nil || len(pub) != 6 {
		t.Fatalf("public records: %d (%v), want 6", len(pub), err)
	}
	if _, err := ServerTLS(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := ClientTLS(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadPublic(t.TempDir()); !errors.Is(err, ErrNoSecrets) {
		t.Fatalf("empty dir: %v", err)
	}
}

func FuzzDecodeRegistry(f *testing.F) {
	a, _ := New(KindClient, "a")
	enc, _ := EncodeRegistry(NewRegistry(3, []Entry{{ID: "a", Kind: KindClient, Public: a.Public(), Status: StatusActive}}))
	f.Add(enc)
	f.Add([]byte{0x82, 0xa7, 'v', 'e', 'r', 's', 'i', 'o', 'n', 0x01})
	f.Add([]byte{0xdd, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRegistry(b)
		if err != nil {
			return
		}
		for _, e := range r.Entries {
			if _, ok := r.Lookup(e.Kind, e.ID); !ok {
				t.Fatalf("entry %q not found after decoding", e.ID)
			}
			r.Check(e.Kind, e.ID, []byte("m"), nil)
		}
	})
}
