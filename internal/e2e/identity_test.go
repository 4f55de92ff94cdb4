package e2e

import (
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/identity"
	"github.com/strata-fl/strata/mesh"
	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/regional"
	"github.com/strata-fl/strata/roles"
	"github.com/strata-fl/strata/task"
)

// TestSignedUpdatesRejectImpostorsByReason injects, in round 2 of a real
// mesh (TLS, per-identity NATS authorization, signed updates), a forged
// update, one from an unknown client, one from a withdrawn client, a replay
// of a round-1 update and one for the wrong model version. Each must be
// rejected under its own reason, and the round must complete without them.
func TestSignedUpdatesRejectImpostorsByReason(t *testing.T) {
	top := smallTopology(t)
	// Round 2's clients train only once the impostors' updates are on the
	// wire, so they reach region a while the round is open.
	injected := make(chan struct{})
	m, ctx := startMesh(t, roles.UpConfig{Topology: top,
		WrapTrainer: func(tr task.Trainer) task.Trainer { return gateRound{tr, 2, injected} }})
	defer m.Close()
	keys, err := identity.LoadClients(m.Secrets, "a")
	if err != nil {
		t.Fatal(err)
	}
	// Withdraw one client before the job starts: its key stays valid, its
	// consent does not.
	var withdrawn string
	for id := range keys {
		withdrawn = id
		break
	}
	spy, err := m.Dialer().Connect("spy")
	if err != nil {
		t.Fatal(err)
	}
	defer spy.Close()

	var mu sync.Mutex
	var round1 []byte // a genuine update of round 1, to replay
	usubs, _ := mesh.UpdateWildcard(top.Job, "a")
	if _, err := spy.Subscribe(usubs, func(msg *nats.Msg) {
		var u wire.Update
		if wire.Decode(msg.Data, wire.TypeUpdate, &u) == nil && u.Round == 1 && u.Client != withdrawn {
			mu.Lock()
			if round1 == nil {
				round1 = append([]byte(nil), msg.Data...)
			}
			mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	stranger, _ := identity.New(identity.KindClient, "a-stranger")
	onFirstInvite(t, spy, top.Job, "a", 2, func(open wire.RoundOpen, victim string) {
		make1 := func(client string, k *identity.Key, version uint64) []byte {
			u := wire.Update{Job: top.Job, Round: 2, Region: "a", Client: client, ModelVersion: version,
				Vec: wire.AppendFloat32s(nil, make([]float32, open.Dim))}
			d := wire.PayloadDigest(wire.EncodingF32, open.Dim, identity.Digest(u.Vec), nil)
			u.Sig = k.Sign(identity.UpdateMessage(top.Job, 2, version, "a", client, 0, d))
			b, _ := wire.Encode(wire.TypeUpdate, &u)
			return b
		}
		send := func(client string, b []byte) {
			subj, _ := mesh.UpdateSubject(top.Job, "a", client)
			spy.Publish(subj, b)
		}
		send(victim, make1(victim, stranger, open.ModelVersion))              // forged: signed by another key
		send("a-stranger", make1("a-stranger", stranger, open.ModelVersion))  // unknown client
		send(withdrawn, make1(withdrawn, keys[withdrawn], open.ModelVersion)) // withdrawn client
		send(victim, make1(victim, keys[victim], open.ModelVersion+1))        // wrong model version
		mu.Lock()
		if round1 != nil {
			var u wire.Update
			wire.Decode(round1, wire.TypeUpdate, &u)
			send(u.Client, round1) // replay of round 1
		}
		mu.Unlock()
		spy.Flush()
		close(injected)
	})
	spy.Flush()
	// Withdraw it once the job enrolled it (round 1 is open): round 2
	// announces the new registry version, and region a refreshes its copy.
	withdrew := make(chan error, 1)
	onFirstInvite(t, spy, top.Job, "a", 1, func(wire.RoundOpen, string) {
		go func() {
			res, err := m.Node().Apply(ctx, &ledger.Withdraw{Client: withdrawn, Reason: "test", UnixMs: time.Now().UnixMilli()})
			if err == nil {
				err = res.Err
			}
			withdrew <- err
		}()
	})
	spy.Flush()

	if err := m.Run(ctx); err != nil {
		t.Fatalf("job failed: %v", err)
	}
	if err := <-withdrew; err != nil {
		t.Fatalf("withdraw: %v", err)
	}
	select {
	case <-injected:
	default:
		t.Fatal("round 2 was never announced to region a's clients")
	}
	st := m.Regions["a"].Runner().Stats()
	for _, reason := range []string{regional.ReasonBadSignature, regional.ReasonUnknownClient, regional.ReasonWithdrawn,
		regional.ReasonStaleRound, regional.ReasonWrongVersion} {
		if st.Rejected[reason] < 1 {
			t.Errorf("region a rejected %v; want at least one %q", st.Rejected, reason)
		}
	}
	l, err := m.Ledger()
	if err != nil {
		t.Fatal(err)
	}
	if l.Rounds[1].Status != "committed" || l.Rounds[1].Participants == 0 {
		t.Fatalf("round 2 is %s with %d participants; want committed with its genuine updates", l.Rounds[1].Status, l.Rounds[1].Participants)
	}
	// Provenance: every model version names the partials merged into it.
	for _, mv := range l.Models {
		if len(mv.Partials) == 0 || len(mv.Partials[0].Digest) != 64 {
			t.Fatalf("model v%d has no provenance: %+v", mv.Version, mv.Partials)
		}
	}
	if c, _ := l.Client(withdrawn); c.Status != ledger.ClientWithdrawn || c.PubKey == "" {
		t.Fatalf("withdrawn client's record: %+v", c)
	}
}
