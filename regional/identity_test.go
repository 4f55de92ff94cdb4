package regional

import (
	"testing"

	"github.com/strata-fl/strata/identity"
	"github.com/strata-fl/strata/mesh/wire"
)

// signedUpdate builds an update of client c signed by k over the given
// fields; mut changes the update after signing (tampering).
func signedUpdate(t *testing.T, k *identity.Key, client string, round, version uint64, mut func(*wire.Update)) []byte {
	t.Helper()
	u := wire.Update{Job: "j", Round: round, Region: "eu", Client: client, ModelVersion: version,
		Vec: wire.AppendFloat32s(nil, []float32{0.6, 0, 0.8})}
	d := wire.PayloadDigest(wire.EncodingF32, 3, identity.Digest(u.Vec), nil)
	u.Sig = k.Sign(identity.UpdateMessage("j", round, version, "eu", client, u.Unclipped, d))
	if mut != nil {
		mut(&u)
	}
	b, err := wire.Encode(wire.TypeUpdate, &u)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSignedRoundRejectsEachIdentityFailureByName(t *testing.T) {
	key := func(id string) *identity.Key {
		k, err := identity.New(identity.KindClient, id)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	c1, c2, gone, intruder := key("c1"), key("c2"), key("gone"), key("intruder")
	reg := identity.NewRegistry(7, []identity.Entry{
		{ID: "c1", Kind: identity.KindClient, Region: "eu", Public: c1.Public(), Status: identity.StatusActive},
		{ID: "c2", Kind: identity.KindClient, Region: "eu", Public: c2.Public(), Status: identity.StatusActive},
		{ID: "gone", Kind: identity.KindClient, Region: "eu", Public: gone.Public(), Status: identity.StatusWithdrawn},
	})
	tests := []struct {
		name string
		b    []byte
		want string
	}{
		{"valid", signedUpdate(t, c1, "c1", 2, 1, nil), ""},
		{"forged: c2's update signed by another key", signedUpdate(t, c1, "c2", 2, 1, nil), ReasonBadSignature},
		{"unsigned", signedUpdate(t, c2, "c2", 2, 1, func(u *wire.Update) { u.Sig = nil }), ReasonBadSignature},
		{"tampered values", signedUpdate(t, c2, "c2", 2, 1, func(u *wire.Update) { u.Vec[0] ^= 1 }), ReasonBadSignature},
		{"tampered clipping bit", signedUpdate(t, c2, "c2", 2, 1, func(u *wire.Update) { u.Unclipped = 1 }), ReasonBadSignature},
		{"unknown client", signedUpdate(t, intruder, "intruder", 2, 1, nil), ReasonUnknownClient},
		{"withdrawn client", signedUpdate(t, gone, "gone", 2, 1, nil), ReasonWithdrawn},
		{"replay of round 1", signedUpdate(t, c2, "c2", 1, 1, nil), ReasonStaleRound},
		{"replay relabelled as round 2", signedUpdate(t, c2, "c2", 1, 1, func(u *wire.Update) { u.Round = 2 }), ReasonBadSignature},
		{"wrong model version", signedUpdate(t, c2, "c2", 2, 0, nil), ReasonWrongVersion},
	}
	open := openRound()
	open.Signed, open.Registry = true, 7
	open.Sampled = []string{"c1", "c2", "gone", "intruder"}
	r, err := NewRound(open)
	if err != nil {
		t.Fatal(err)
	}
	r.UseRegistry(reg)
	for _, tc := range tests {
		if got := r.Add(tc.b); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
	if r.Count() != 1 {
		t.Fatalf("accepted %d updates, want only the valid one", r.Count())
	}
	if got := r.Add(signedUpdate(t, c2, "c2", 2, 1, nil)); got != "" {
		t.Fatalf("c2's genuine update after the rejected ones: %q", got)
	}
}

func TestSignedRoundWithoutRegistryAcceptsNothing(t *testing.T) {
	k, _ := identity.New(identity.KindClient, "c1")
	open := openRound()
	open.Signed = true
	r, _ := NewRound(open)
	if got := r.Add(signedUpdate(t, k, "c1", 2, 1, nil)); got != ReasonUnknownClient {
		t.Fatalf("got %q, want %q", got, ReasonUnknownClient)
	}
}
