package mesh

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/strata-fl/strata/identity"
)

// TestPartialLogKeepsPartialsForTheGlobalTierOnly: what regions publish on
// their partial subjects, as they always have, is kept in the log in the
// order it arrived; a global node loads it, follows what comes after, and
// purges it; neither a region nor a client can read or purge it.
func TestPartialLogKeepsPartialsForTheGlobalTierOnly(t *testing.T) {
	_, dial := secureMesh(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	g, _ := conn(t, dial(identity.KindGlobal, "g1"), "g1")
	plog, err := OpenPartialLog(ctx, g, "j", 1)
	if err != nil {
		t.Fatal(err)
	}
	eu, _ := conn(t, dial(identity.KindRegion, "eu"), "eu")
	us, _ := conn(t, dial(identity.KindRegion, "us"), "us")
	before := time.Now().Add(-time.Second)
	for i, p := range []struct {
		nc     interface{ Publish(string, []byte) error }
		region string
	}{{eu, "eu"}, {us, "us"}, {eu, "eu"}} {
		subj, err := PartialSubject("j", p.region)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.nc.Publish(subj, []byte(fmt.Sprintf("%s-%d", p.region, i))); err != nil {
			t.Fatal(err)
		}
	}
	eu.Flush()
	us.Flush()
	var got []LoggedPartial
	var last uint64
	for deadline := time.Now().Add(30 * time.Second); len(got) < 3; {
		if time.Now().After(deadline) {
			t.Fatalf("the log holds %d of 3 partials", len(got))
		}
		if got, last, err = plog.Load(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// eu's two are in their order (us's may have reached the server first).
	var euData []string
	for _, p := range got {
		if p.At.Before(before) || p.Seq == 0 {
			t.Errorf("message %d: arrival %v, sequence %d", p.Seq, p.At, p.Seq)
		}
		if s := string(p.Data); s[:2] == "eu" {
			euData = append(euData, s)
		}
	}
	if len(euData) != 2 || euData[0] != "eu-0" || euData[1] != "eu-2" {
		t.Errorf("eu's partials in the log: %v, want [eu-0 eu-2]", euData)
	}
	if last != got[2].Seq {
		t.Errorf("Load's last sequence %d, the last message's %d", last, got[2].Seq)
	}

	follow := make(chan LoggedPartial, 4)
	stop, err := plog.Follow(ctx, last, func(p LoggedPartial) { follow <- p })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	subj, _ := PartialSubject("j", "us")
	if err := us.Publish(subj, []byte("us-3")); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-follow:
		if string(p.Data) != "us-3" || p.Seq != last+1 {
			t.Errorf("followed %q at %d, want us-3 at %d (nothing loaded is delivered again)", p.Data, p.Seq, last+1)
		}
	case <-ctx.Done():
		t.Fatal("Follow delivered nothing")
	}

	// Regions and clients hold no JetStream call on the log.
	for _, who := range []struct{ kind, id string }{{identity.KindRegion, "eu"}, {identity.KindClient, "eu-c1"}} {
		nc, _ := conn(t, dial(who.kind, who.id), who.id)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		rctx, rcancel := context.WithTimeout(ctx, 3*time.Second)
		if _, err := js.Stream(rctx, PartialLogStream("j")); err == nil {
			t.Errorf("%s %s opened the partial log", who.kind, who.id)
		}
		if err := js.DeleteStream(rctx, PartialLogStream("j")); err == nil {
			t.Errorf("%s %s deleted the partial log", who.kind, who.id)
		}
		rcancel()
	}

	if err := plog.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	left, after, err := plog.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 || after < last+1 {
		t.Errorf("after a purge the log holds %d messages, last sequence %d (want 0, ≥ %d)", len(left), after, last+1)
	}
}

// TestNoRoleButGlobalReachesThePartialLog checks every generated
// permission of a region, a client and a site's leaf node against the
// JetStream calls on the partial log (local and through the hub's domain)
// and the subject of its merge records: none may read, purge or delete the
// log, nor forge a record a next leader would trust.
func TestNoRoleButGlobalReachesThePartialLog(t *testing.T) {
	stream := PartialLogStream("j")
	merged, err := MergedSubject("j")
	if err != nil {
		t.Fatal(err)
	}
	forbidden := []string{merged}
	for _, api := range []string{"$JS.API", "$JS." + HubDomain + ".API"} {
		for _, call := range []string{"STREAM.INFO.", "STREAM.MSG.GET.", "STREAM.PURGE.", "STREAM.DELETE.", "STREAM.UPDATE.", "CONSUMER.CREATE.", "CONSUMER.INFO."} {
			forbidden = append(forbidden, api+"."+call+stream)
		}
		forbidden = append(forbidden, api+".DIRECT.GET."+stream+".strata.j.partial.eu", api+".CONSUMER.CREATE."+stream+".c.strata.j.partial.eu")
	}
	roles := map[string]*server.Permissions{}
	for _, e := range []identity.Entry{{Kind: identity.KindRegion, ID: "eu"}, {Kind: identity.KindClient, ID: "eu-c1", Region: "eu"}} {
		p, err := Permissions("j", e)
		if err != nil {
			t.Fatal(err)
		}
		roles[e.Kind+" "+e.ID] = p
	}
	leaf, err := LeafPermissions("j", "eu", []string{"eu-c1"}, []string{InboxPrefix(identity.KindGlobal, "g1")})
	if err != nil {
		t.Fatal(err)
	}
	roles["leaf eu"] = leaf
	for name, p := range roles {
		var allow []string
		if p.Publish != nil {
			allow = append(allow, p.Publish.Allow...)
		}
		if p.Subscribe != nil {
			allow = append(allow, p.Subscribe.Allow...)
		}
		for _, pat := range allow {
			for _, s := range forbidden {
				if subjectMatches(pat, s) {
					t.Errorf("%s may use %s (allowed by %q)", name, s, pat)
				}
			}
		}
	}
	// The matcher itself: what a global node's ">" allows, it allows.
	if !subjectMatches(">", forbidden[1]) || !subjectMatches("$JS.API.STREAM.INFO.*", "$JS.API.STREAM.INFO."+stream) || subjectMatches("$JS.API.STREAM.INFO.*", forbidden[0]) {
		t.Fatal("subjectMatches is wrong")
	}
}

// subjectMatches reports whether the NATS subject pattern pat (with * and
// >) matches subject s.
func subjectMatches(pat, s string) bool {
	p, t := strings.Split(pat, "."), strings.Split(s, ".")
	for i, tok := range p {
		switch {
		case tok == ">":
			return len(t) > i
		case i >= len(t):
			return false
		case tok != "*" && tok != t[i]:
			return false
		}
	}
	return len(p) == len(t)
}
