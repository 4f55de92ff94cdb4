package mesh

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/strata-fl/strata/identity"
)

// leafMesh is a real hub with a leafnode listener and the secrets of a
// small consortium: sites a and b (regions a and b, with their clients),
// each with leaf-node credentials.
type leafMesh struct {
	secrets string
	hub     *server.Server
	hubURL  string // the hub's leafnode listener
	op      Dialer // the operator, on the hub
}

func startLeafMesh(t *testing.T) *leafMesh {
	t.Helper()
	dir := t.TempDir()
	secrets := filepath.Join(dir, "secrets")
	spec := identity.MeshSpec{Operators: []string{"admin"}, Globals: []string{"g1"}, Regions: []string{"a", "b"},
		Clients: map[string][]string{"a": {"a-c1", "a-c2"}, "b": {"b-c1"}}}
	if err := identity.GenerateMesh(secrets, spec); err != nil {
		t.Fatal(err)
	}
	for _, r := range spec.Regions {
		if err := identity.AddLeaf(secrets, r, nil); err != nil {
			t.Fatal(err)
		}
	}
	cfg, op, err := Secured(ServerConfig{StoreDir: filepath.Join(dir, "hub"), LeafListen: "127.0.0.1:0"}, secrets, "j")
	if err != nil {
		t.Fatal(err)
	}
	hub, err := StartServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hub.Shutdown)
	url, err := LeafURL(hub)
	if err != nil {
		t.Fatal(err)
	}
	op.URL = hub.ClientURL()
	return &leafMesh{secrets: secrets, hub: hub, hubURL: url, op: op}
}

// startLeaf starts site region's leaf node with the site's leaf key and
// certificate. open leaves its local side without TLS or authorization, as
// a site that admits anything on its own network would: what crosses to
// the hub is then bounded by the hub alone.
func (m *leafMesh) startLeaf(t *testing.T, region string, open bool) (*server.Server, Dialer) {
	t.Helper()
	cfg, d, err := SecuredLeaf(ServerConfig{}, m.secrets, "j", region, m.hubURL)
	if err != nil {
		t.Fatal(err)
	}
	if open {
		cfg.Users, cfg.TLS, d = nil, nil, Dialer{}
	}
	before := m.hub.NumLeafNodes()
	s, err := StartServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	waitFor(t, "the leaf node connects to the hub", func() bool { return m.hub.NumLeafNodes() > before && s.NumLeafNodes() == 1 })
	d.URL = s.ClientURL()
	return s, d
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
	}
}

// crossing subscribes on one side to every subject, publishes each on the
// other side and then a sentinel subject that must cross; once the
// sentinel has arrived, everything that would cross has (one connection
// each side, one link: order is kept). It returns the subjects received.
func crossing(t *testing.T, from, to *nats.Conn, subjects []string, sentinel string) map[string]bool {
	t.Helper()
	ch := make(chan *nats.Msg, 64)
	for _, s := range append(subjects, sentinel) {
		sub, err := to.ChanSubscribe(s, ch)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
	}
	if err := to.Flush(); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	// Interest crosses the link asynchronously: publish the round again
	// until the sentinel comes through.
	for deadline := time.Now().Add(20 * time.Second); ; {
		for _, s := range subjects {
			from.Publish(s, []byte("x"))
		}
		from.Publish(sentinel, []byte("sentinel"))
		from.Flush()
		timeout := time.After(200 * time.Millisecond)
	drain:
		for {
			select {
			case m := <-ch:
				if m.Subject == sentinel {
					// Everything published before it has arrived.
					for len(ch) > 0 {
						got[(<-ch).Subject] = true
					}
					return got
				}
				got[m.Subject] = true
			case <-timeout:
				break drain
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sentinel %s never crossed", sentinel)
		}
	}
}

// TestLeafPermissions: a site's leaf node, even one that admits anything
// on its own side, carries across its link only its own region's subjects:
// its rounds, pings, invitations and the end of the job come in, its
// partial goes out; no subject of another region crosses either way, and
// its own clients' updates do not leave the site.
func TestLeafPermissions(t *testing.T) {
	m := startLeafMesh(t)
	_, leafD := m.startLeaf(t, "a", true)
	hubc, err := m.op.Connect("hub-operator")
	if err != nil {
		t.Fatal(err)
	}
	defer hubc.Close()
	sitec, err := leafD.Connect("anyone-at-site-a")
	if err != nil {
		t.Fatal(err)
	}
	defer sitec.Close()

	sub := func(kind, region string) string { s, _ := joinRegion("j", kind, region); return s }
	done, _ := DoneSubject("j")

	t.Run("hub to site", func(t *testing.T) {
		allowed := []string{sub("ping", "a"), sub("invite", "a") + ".a-c1", done, "_INBOX_client_a-c2.x", "_INBOX_region_a.y"}
		denied := []string{
			sub("round", "b"), sub("ping", "b"), sub("invite", "b") + ".b-c1", sub("partial", "b"), sub("partial", "a"),
			sub("update", "b") + ".b-c1", sub("update", "a") + ".a-c1", sub("secagg_to", "a") + ".a-c1", sub("registry", "a"),
			"_INBOX_client_b-c1.x", "_INBOX_region_b.y", "_INBOX_global_g1.z", "$JS.API.STREAM.LIST",
		}
		got := crossing(t, hubc, sitec, append(allowed, denied...), sub("round", "a"))
		for _, s := range allowed {
			if !got[s] {
				t.Errorf("%s did not reach site a", s)
			}
		}
		for _, s := range denied {
			if got[s] {
				t.Errorf("%s reached site a's leaf", s)
			}
		}
	})
	t.Run("site to hub", func(t *testing.T) {
		allowed := []string{sub("registry", "a"), "_INBOX_global_g1.z", "_INBOX_operator_admin.z"}
		denied := []string{
			sub("partial", "b"), sub("registry", "b"), sub("round", "a"), sub("round", "b"), sub("ping", "b"),
			sub("update", "a") + ".a-c1", sub("update", "b") + ".b-c1", sub("secagg", "a") + ".a-c1", sub("invite", "b") + ".b-c1",
			done, "_INBOX_region_b.y", "_INBOX_client_b-c1.y", "$JS.hub.API.STREAM.DELETE.OBJ_" + ModelBucket("j"), "$JS.hub.API.STREAM.LIST",
		}
		got := crossing(t, sitec, hubc, append(allowed, denied...), sub("partial", "a"))
		for _, s := range allowed {
			if !got[s] {
				t.Errorf("%s did not reach the hub", s)
			}
		}
		for _, s := range denied {
			if got[s] {
				t.Errorf("%s from site a reached the hub", s)
			}
		}
	})
}

// TestLeafSite runs a secured site: the leaf admits only the site's own
// identities over TLS; the hub's global tier pings the site's region and
// gets its answer back across the link (a response, allowed once); the
// site's client reads a model version from the hub's object store through
// the leaf; the link is cut (the hub drops its leaf connections) and the
// leaf comes back by itself.
func TestLeafSite(t *testing.T) {
	m := startLeafMesh(t)
	_, leafD := m.startLeaf(t, "a", false)
	// Another site at the same time: each leaf server has its own name, or
	// the hub would take the second for a reconnect of the first and
	// drop that.
	m.startLeaf(t, "b", false)
	if n := m.hub.NumLeafNodes(); n != 2 {
		t.Fatalf("the hub has %d leaf nodes, want 2", n)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	hubc, err := m.op.Connect("global")
	if err != nil {
		t.Fatal(err)
	}
	defer hubc.Close()
	store, err := OpenModelStore(ctx, hubc, "j", 1)
	if err != nil {
		t.Fatal(err)
	}
	blob := bytes.Repeat([]byte("model"), 300_000) // several chunks
	hash, err := store.Put(ctx, "model", 1, blob)
	if err != nil {
		t.Fatal(err)
	}

	key := func(kind, id string) *identity.Key {
		t.Helper()
		if kind == identity.KindClient {
			ks, err := identity.LoadClients(m.secrets, id[:1])
			if err != nil || ks[id] == nil {
				t.Fatalf("client %s: %v", id, err)
			}
			return ks[id]
		}
		k, err := identity.LoadKey(m.secrets, kind, id)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	region, err := leafD.As(key(identity.KindRegion, "a")).Connect("region-a")
	if err != nil {
		t.Fatal(err)
	}
	defer region.Close()
	ping, _ := PingSubject("j", "a")
	if _, err := region.Subscribe(ping, func(msg *nats.Msg) { msg.Respond([]byte("pong")) }); err != nil {
		t.Fatal(err)
	}
	region.Flush()
	request := func() error {
		var err error
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			var reply *nats.Msg
			if reply, err = hubc.Request(ping, nil, 2*time.Second); err == nil {
				if string(reply.Data) != "pong" {
					t.Fatalf("ping answered %q", reply.Data)
				}
				return nil
			}
		}
		return err
	}
	if err := request(); err != nil {
		t.Fatalf("the hub's request to region a's ping got no answer across the link: %v", err)
	}

	client, err := leafD.As(key(identity.KindClient, "a-c1")).Connect("a-c1")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	rs, err := ReadModelStoreDomain(ctx, client, HubDomain, "j")
	if err != nil {
		t.Fatalf("client a-c1 opens the model store through the leaf: %v", err)
	}
	if got, err := rs.Get(ctx, "model", 1, hash); err != nil || !bytes.Equal(got, blob) {
		t.Fatalf("client a-c1 reads model 1 through the leaf: %d bytes, %v", len(got), err)
	}

	// Only the site's identities get in at the leaf.
	for _, id := range []struct{ kind, id string }{{identity.KindClient, "b-c1"}, {identity.KindRegion, "b"}, {identity.KindGlobal, "g1"}} {
		if nc, err := leafD.As(key(id.kind, id.id)).Connect("stranger"); err == nil {
			nc.Close()
			t.Errorf("%s %s connected to site a's leaf", id.kind, id.id)
		} else if !strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
			t.Errorf("%s %s at site a's leaf: %v, want an authorization violation", id.kind, id.id, err)
		}
	}

	// Cut site a's link from the hub's side; the leaf dials again by itself.
	siteA := func() *server.LeafInfo {
		l, err := m.hub.Leafz(nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, li := range l.Leafs {
			if li.Name == "strata-leaf-a" {
				return li
			}
		}
		return nil
	}
	cut := siteA()
	if cut == nil {
		t.Fatal("the hub has no leaf connection from strata-leaf-a")
	}
	m.hub.DisconnectClientByID(cut.ID)
	waitFor(t, "site a's leaf node reconnects after its link was cut", func() bool {
		l := siteA()
		return l != nil && l.ID != cut.ID
	})
	if err := request(); err != nil {
		t.Fatalf("after the link came back, region a does not answer: %v", err)
	}
}

// TestLeafCredentials: a leaf node without the site's certificate, or
// with another identity's key, is refused by the hub.
func TestLeafCredentials(t *testing.T) {
	m := startLeafMesh(t)
	good, _, err := SecuredLeaf(ServerConfig{}, m.secrets, "j", "a", m.hubURL)
	if err != nil {
		t.Fatal(err)
	}
	client, err := identity.LoadClients(m.secrets, "a")
	if err != nil {
		t.Fatal(err)
	}
	ctls, _ := identity.ClientTLS(m.secrets)
	for name, remote := range map[string]*LeafRemote{
		"no client certificate": {URL: m.hubURL, TLS: ctls, Key: good.LeafOf.Key},
		"a client's key":        {URL: m.hubURL, TLS: good.LeafOf.TLS, Key: client["a-c1"]},
		"no key":                {URL: m.hubURL, TLS: good.LeafOf.TLS},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := good
			cfg.Users, cfg.TLS, cfg.LeafOf = nil, nil, remote
			errs := &errLog{ch: make(chan string, 16)}
			m.hub.SetLoggerV2(errs, false, false, false)
			defer m.hub.SetLoggerV2(nil, false, false, false)
			s, err := StartServer(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Shutdown()
			select {
			case e := <-errs.ch:
				t.Logf("the hub refused the leaf: %s", e)
			case <-time.After(30 * time.Second):
				t.Fatal("the hub logged no refusal of the leaf in 30 s")
			}
			if n := m.hub.NumLeafNodes(); n != 0 {
				t.Errorf("the hub has %d leaf nodes, want 0", n)
			}
		})
	}
}

// errLog passes on the errors a server logs.
type errLog struct{ ch chan string }

func (l *errLog) Noticef(string, ...any) {}
func (l *errLog) Warnf(string, ...any)   {}
func (l *errLog) Fatalf(string, ...any)  {}
func (l *errLog) Debugf(string, ...any)  {}
func (l *errLog) Tracef(string, ...any)  {}
func (l *errLog) Errorf(format string, v ...any) {
	select {
	case l.ch <- fmt.Sprintf(format, v...):
	default:
	}
}
