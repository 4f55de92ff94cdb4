package e2e

import (
	"errors"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/strata-fl/strata/identity"
	"github.com/strata-fl/strata/mesh"
	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/roles"
)

// TestClientLearnsOnlyItsOwnSamplingDecision connects to a running mesh as
// one client, with that client's own key and the NATS permissions the mesh
// generates for it, and tries every way to learn who else is sampled: the
// region's announcement, every invitation of the region, another client's
// invitation, the region's updates, the partials, the whole job's subject
// space, and the subject rounds were once broadcast on. Each subscription
// must be refused by the server; what it does receive — its own
// invitations — must name no other client, and must come exactly in the
// rounds the ledger sampled it in. (Before invitations were per client,
// every client read its region's full sampled list on clients.<region>:
// that subscription was allowed and this test fails on it.)
func TestClientLearnsOnlyItsOwnSamplingDecision(t *testing.T) {
	top := smallTopology(t)
	top.Privacy.SamplingRate = 0.5 // sampled in about half the rounds
	m, ctx := startMesh(t, roles.UpConfig{Topology: top})
	defer m.Close()
	keys, err := identity.LoadClients(m.Secrets, "a")
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, 0, len(keys))
	for id := range keys {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	me, other := ids[0], ids[1]

	nc, err := m.Dialer().As(keys[me]).Connect("curious-" + me)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var mu sync.Mutex
	refused := map[string]bool{}
	// The server refuses a subscription with an asynchronous
	// "Permissions Violation for Subscription to <subject>".
	nc.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		msg := strings.ToLower(err.Error())
		if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(msg, "subscription to") {
			return
		}
		subj := strings.Trim(msg[strings.LastIndex(msg, " ")+1:], `"'`)
		mu.Lock()
		refused[subj] = true
		mu.Unlock()
	})
	leaked := map[string]int{}
	spyOn := func(subj string) {
		if _, err := nc.Subscribe(subj, func(msg *nats.Msg) {
			mu.Lock()
			leaked[subj]++
			mu.Unlock()
		}); err != nil {
			t.Fatal(err)
		}
	}
	round, _ := mesh.RoundSubject(top.Job, "a")
	invites, _ := mesh.InviteWildcard(top.Job, "a")
	otherInvite, _ := mesh.InviteSubject(top.Job, "a", other)
	updates, _ := mesh.UpdateWildcard(top.Job, "a")
	partials, _ := mesh.PartialWildcard(top.Job)
	forbidden := []string{round, invites, otherInvite, updates, partials,
		"strata." + top.Job + ".clients.a", "strata." + top.Job + ".>", ">"}
	for _, s := range forbidden {
		spyOn(s)
	}
	mine, _ := mesh.InviteSubject(top.Job, "a", me)
	var invited []uint64
	if _, err := nc.Subscribe(mine, func(msg *nats.Msg) {
		var open wire.RoundOpen
		if err := wire.Decode(msg.Data, wire.TypeRoundOpen, &open); err != nil {
			t.Errorf("own invitation does not decode: %v", err)
			return
		}
		if len(open.Sampled) != 0 || open.Registry != 0 {
			t.Errorf("round %d: own invitation carries %d client ids and registry %d: a client must learn only its own decision", open.Round, len(open.Sampled), open.Registry)
		}
		mu.Lock()
		invited = append(invited, open.Round)
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	if err := m.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	l, err := m.Ledger()
	if err != nil {
		t.Fatal(err)
	}
	c, _ := l.Client(me)
	mu.Lock()
	defer mu.Unlock()
	for _, s := range forbidden {
		if !refused[s] {
			t.Errorf("subscription to %q was not refused by the server", s)
		}
		if leaked[s] > 0 {
			t.Errorf("client %s read %d messages on %q", me, leaked[s], s)
		}
	}
	sort.Slice(invited, func(i, j int) bool { return invited[i] < invited[j] })
	if len(invited) != len(c.Sampled) {
		t.Fatalf("client %s was invited to rounds %v; the ledger sampled it in %v", me, invited, c.Sampled)
	}
	for i := range invited {
		if invited[i] != c.Sampled[i] {
			t.Fatalf("client %s was invited to rounds %v; the ledger sampled it in %v", me, invited, c.Sampled)
		}
	}
	t.Logf("client %s was invited to rounds %v, as the ledger sampled it; %d subscriptions refused", me, invited, len(refused))
}
