package mesh

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/strata-fl/strata/identity"
)

// secureMesh starts a real server with TLS and the generated permissions
// for a small mesh: regions eu and us, clients eu-c1, eu-c2 and us-c1.
func secureMesh(t *testing.T) (url string, dial func(kind, id string) Dialer) {
	t.Helper()
	dir := t.TempDir()
	secrets := filepath.Join(dir, "secrets")
	spec := identity.MeshSpec{Operators: []string{"admin"}, Globals: []string{"g1"}, Regions: []string{"eu", "us"},
		Clients: map[string][]string{"eu": {"eu-c1", "eu-c2"}, "us": {"us-c1"}}}
	if err := identity.GenerateMesh(secrets, spec); err != nil {
		t.Fatal(err)
	}
	pub, err := identity.LoadPublic(secrets)
	if err != nil {
		t.Fatal(err)
	}
	users, err := Authorization("j", pub)
	if err != nil {
		t.Fatal(err)
	}
	stls, err := identity.ServerTLS(secrets)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := StartServer(ServerConfig{StoreDir: filepath.Join(dir, "nats"), TLS: stls, Users: users})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	return srv.ClientURL(), meshDialer(t, secrets, spec.Regions, func(string) string { return srv.ClientURL() })
}

// meshDialer returns how each identity of the mesh generated in secrets
// dials: with the mesh's TLS and its own key, at the URL urlOf gives for
// its kind.
func meshDialer(t *testing.T, secrets string, regions []string, urlOf func(kind string) string) func(kind, id string) Dialer {
	t.Helper()
	ctls, err := identity.ClientTLS(secrets)
	if err != nil {
		t.Fatal(err)
	}
	clients := map[string]*identity.Key{}
	for _, r := range regions {
		ks, err := identity.LoadClients(secrets, r)
		if err != nil {
			t.Fatal(err)
		}
		for id, k := range ks {
			clients[id] = k
		}
	}
	return func(kind, id string) Dialer {
		d := Dialer{URL: urlOf(kind), TLS: ctls}
		if kind == identity.KindClient {
			d.Key = clients[id]
		} else if k, err := identity.LoadKey(secrets, kind, id); err == nil {
			d.Key = k
		} else {
			t.Fatal(err)
		}
		return d
	}
}

// conn connects and collects the server's asynchronous errors.
func conn(t *testing.T, d Dialer, name string) (*nats.Conn, chan error) {
	t.Helper()
	errs := make(chan error, 16)
	nc, err := d.connect(name, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc, errs
}

// refused waits for the server to report a permissions violation.
func refused(t *testing.T, errs chan error, what string) {
	t.Helper()
	select {
	case err := <-errs:
		if !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
			t.Errorf("%s: got error %v, want a permissions violation", what, err)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("%s: allowed, want refused by the server", what)
	}
}

func TestGeneratedPermissionsAllowOnlyEachRolesOperations(t *testing.T) {
	_, dial := secureMesh(t)
	checkRolePermissions(t, dial)
}

// checkRolePermissions tries what each role may and may not do on the
// subjects of job "j". The global node watches what arrives; on a cluster
// it may sit on another server than the others, so messages cross a route
// and allowed subscriptions are published to until their interest has
// reached the publisher's server.
func checkRolePermissions(t *testing.T, dial func(kind, id string) Dialer) {
	g, _ := conn(t, dial(identity.KindGlobal, "g1"), "g1")
	got := make(chan string, 64)
	if _, err := g.Subscribe("strata.j.>", func(m *nats.Msg) { got <- m.Subject }); err != nil {
		t.Fatal(err)
	}
	g.Flush()
	// A probe published where the other roles connect arrives once g's
	// interest is known there.
	probe, _ := conn(t, dial(identity.KindOperator, "admin"), "probe")
	for deadline := time.Now().Add(10 * time.Second); ; {
		probe.Publish("strata.j.probe", nil)
		probe.Flush()
		select {
		case <-got:
		case <-time.After(100 * time.Millisecond):
			if time.Now().After(deadline) {
				t.Fatal("the global node's subscription never reached the other roles' server")
			}
			continue
		}
		break
	}
	for len(got) > 0 { // drain the probes
		<-got
	}
	arrives := func(what, subj string) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case s := <-got:
				if s == subj {
					return
				}
			case <-deadline:
				t.Errorf("%s: %s never arrived", what, subj)
				return
			}
		}
	}

	type op struct {
		name  string
		kind  string
		id    string
		pub   string // publish here
		sub   string // or subscribe here
		allow bool
	}
	ops := []op{
		{"client publishes its own update", identity.KindClient, "eu-c1", "strata.j.update.eu.eu-c1", "", true},
		{"client publishes another client's update", identity.KindClient, "eu-c1", "strata.j.update.eu.eu-c2", "", false},
		{"client publishes to another region", identity.KindClient, "eu-c1", "strata.j.update.us.eu-c1", "", false},
		{"client subscribes to its region's updates", identity.KindClient, "eu-c1", "", "strata.j.update.eu.*", false},
		{"client subscribes to one other client's updates", identity.KindClient, "eu-c1", "", "strata.j.update.eu.eu-c2", false},
		{"client publishes a partial", identity.KindClient, "eu-c1", "strata.j.partial.eu", "", false},
		{"client publishes a round", identity.KindClient, "eu-c1", "strata.j.round.eu", "", false},
		{"client invites a client", identity.KindClient, "eu-c1", "strata.j.invite.eu.eu-c2", "", false},
		{"client reads its own invitations", identity.KindClient, "eu-c1", "", "strata.j.invite.eu.eu-c1", true},
		{"client reads another client's invitations", identity.KindClient, "eu-c1", "", "strata.j.invite.eu.eu-c2", false},
		{"client reads its region's invitations", identity.KindClient, "eu-c1", "", "strata.j.invite.eu.*", false},
		{"client reads its region's round announcement", identity.KindClient, "eu-c1", "", "strata.j.round.eu", false},
		{"client reads the old broadcast of sampled lists", identity.KindClient, "eu-c1", "", "strata.j.clients.eu", false},
		{"region reads its updates", identity.KindRegion, "eu", "", "strata.j.update.eu.*", true},
		{"region reads another region's updates", identity.KindRegion, "eu", "", "strata.j.update.us.*", false},
		{"region publishes its partial", identity.KindRegion, "eu", "strata.j.partial.eu", "", true},
		{"region publishes another region's partial", identity.KindRegion, "eu", "strata.j.partial.us", "", false},
		{"region publishes a round", identity.KindRegion, "eu", "strata.j.round.eu", "", false},
		{"region publishes an update", identity.KindRegion, "eu", "strata.j.update.eu.eu-c1", "", false},
		{"client sends its own secagg message", identity.KindClient, "eu-c1", "strata.j.secagg.eu.eu-c1", "", true},
		{"client sends a secagg message as another client", identity.KindClient, "eu-c1", "strata.j.secagg.eu.eu-c2", "", false},
		{"client sends a secagg message to another region", identity.KindClient, "eu-c1", "strata.j.secagg.us.eu-c1", "", false},
		{"client reads its region's secagg messages", identity.KindClient, "eu-c1", "", "strata.j.secagg.eu.*", false},
		{"client reads its own secagg replies", identity.KindClient, "eu-c1", "", "strata.j.secagg_to.eu.eu-c1", true},
		{"client reads another client's secagg replies", identity.KindClient, "eu-c1", "", "strata.j.secagg_to.eu.eu-c2", false},
		{"client sends a secagg reply", identity.KindClient, "eu-c1", "strata.j.secagg_to.eu.eu-c2", "", false},
		{"region reads its clients' secagg messages", identity.KindRegion, "eu", "", "strata.j.secagg.eu.*", true},
		{"region reads another region's secagg messages", identity.KindRegion, "eu", "", "strata.j.secagg.us.*", false},
		{"region reads secagg replies", identity.KindRegion, "eu", "", "strata.j.secagg_to.eu.*", false},
		{"region sends its client a secagg message", identity.KindRegion, "eu", "strata.j.secagg_to.eu.eu-c1", "", true},
		{"region sends another region's client a secagg message", identity.KindRegion, "eu", "strata.j.secagg_to.us.us-c1", "", false},
		{"region sends a secagg message as a client", identity.KindRegion, "eu", "strata.j.secagg.eu.eu-c1", "", false},
		{"global publishes a round", identity.KindGlobal, "g1", "strata.j.round.eu", "", true},
		{"global invites a client", identity.KindGlobal, "g1", "strata.j.invite.eu.eu-c1", "", true},
	}
	for _, o := range ops {
		nc, errs := conn(t, dial(o.kind, o.id), o.name)
		if o.pub != "" {
			if err := nc.Publish(o.pub, []byte("x")); err != nil {
				t.Fatal(err)
			}
			nc.Flush()
			if o.allow {
				arrives(o.name, o.pub)
			} else {
				refused(t, errs, o.name)
			}
			continue
		}
		sub, err := nc.SubscribeSync(o.sub)
		if err != nil {
			t.Fatal(err)
		}
		nc.Flush()
		if !o.allow {
			refused(t, errs, o.name)
			continue
		}
		subj := strings.Replace(o.sub, "*", "eu-c1", 1)
		for deadline := time.Now().Add(10 * time.Second); ; {
			if err := g.Publish(subj, []byte("y")); err != nil {
				t.Fatal(err)
			}
			g.Flush()
			if _, err := sub.NextMsg(100 * time.Millisecond); err == nil {
				break
			} else if time.Now().After(deadline) {
				t.Errorf("%s: nothing received on %s: %v", o.name, subj, err)
				break
			}
		}
	}
}

func TestClientsReadModelsButCannotWriteThem(t *testing.T) {
	_, dial := secureMesh(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	g, _ := conn(t, dial(identity.KindGlobal, "g1"), "g1")
	store, err := OpenModelStore(ctx, g, "j", 1)
	if err != nil {
		t.Fatal(err)
	}
	hash, err := store.Put(ctx, "model", 1, []byte("weights"))
	if err != nil {
		t.Fatal(err)
	}
	c, _ := conn(t, dial(identity.KindClient, "eu-c1"), "eu-c1")
	ro, err := ReadModelStore(ctx, c, "j")
	if err != nil {
		t.Fatalf("client opens the model bucket read-only: %v", err)
	}
	b, err := ro.Get(ctx, "model", 1, hash)
	if err != nil || string(b) != "weights" {
		t.Fatalf("client reads model v1: %q, %v", b, err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	if _, err := ro.Put(wctx, "model", 2, []byte("poison")); err == nil {
		t.Fatal("a client wrote a model version")
	}
	if _, err := store.Get(ctx, "model", 2, ""); err == nil {
		t.Fatal("the client's model version is in the store")
	}
}

func TestServerRefusesUnknownIdentitiesAndPlainText(t *testing.T) {
	url, dial := secureMesh(t)
	checkRefusals(t, url, dial)
}

// checkRefusals connects with a key the server does not know, without TLS
// and without credentials: each must be refused.
func checkRefusals(t *testing.T, url string, dial func(kind, id string) Dialer) {
	stranger, err := identity.New(identity.KindClient, "eu-c1")
	if err != nil {
		t.Fatal(err)
	}
	d := dial(identity.KindClient, "eu-c1")
	d.Key = stranger
	if _, err := d.Connect("stranger"); err == nil || !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("unknown key connected: %v", err)
	}
	plain := Dialer{URL: url, Key: dial(identity.KindClient, "eu-c1").Key}
	if _, err := plain.Connect("plain"); err == nil {
		t.Fatal("connected without TLS")
	}
	anon := Dialer{URL: url, TLS: dial(identity.KindClient, "eu-c1").TLS}
	if _, err := anon.Connect("anonymous"); err == nil {
		t.Fatal("connected without credentials")
	}
}
