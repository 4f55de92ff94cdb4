package mesh

import (
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats-server/v2/conf"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/strata-fl/strata/identity"
)

// renderedCluster renders the config of a 2-server cluster for the mesh of
// secureMesh, reads it back as nats-server does and starts both servers
// from it (client ports picked free, monitoring off). Roles other than the
// global node dial server A, the global node server B, so everything they
// exchange crosses the TLS route.
func renderedCluster(t *testing.T) (urls [2]string, dial func(kind, id string) Dialer, opts *server.Options) {
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
	routePorts := freeTCPPorts(t, 2)
	var routes []string
	for _, p := range routePorts {
		routes = append(routes, "127.0.0.1:"+p)
	}
	conf, err := RenderNATSConf(NATSConf{Job: "j", Secrets: secrets, Identities: pub, StoreDir: filepath.Join(dir, "js"), Routes: routes})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(path, conf, 0o644); err != nil {
		t.Fatal(err)
	}
	var servers [2]*server.Server
	for i := range servers {
		t.Setenv(NameEnv, []string{"a", "b"}[i])
		o, err := server.ProcessConfigFile(path)
		if err != nil {
			t.Fatalf("nats-server reads the rendered config: %v\n%s", err, conf)
		}
		opts = o
		if want := []string{"a", "b"}[i]; o.ServerName != want {
			t.Fatalf("server name %q from $%s, want %q", o.ServerName, NameEnv, want)
		}
		o.Host, o.Port, o.HTTPPort = "127.0.0.1", server.RANDOM_PORT, 0
		o.Cluster.Host = "127.0.0.1"
		o.Cluster.Port, _ = strconv.Atoi(routePorts[i])
		o.StoreDir = filepath.Join(dir, "js-"+o.ServerName)
		o.NoSigs, o.NoLog = true, true
		s, err := server.NewServer(o)
		if err != nil {
			t.Fatal(err)
		}
		s.Start()
		t.Cleanup(s.Shutdown)
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatalf("server %s not ready", o.ServerName)
		}
		servers[i] = s
		urls[i] = s.ClientURL()
	}
	for deadline := time.Now().Add(20 * time.Second); servers[0].NumRoutes() == 0 || servers[1].NumRoutes() == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the two servers opened no route to each other (route TLS: each must verify the other's certificate against the mesh CA)")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Global nodes dial the second server, everyone else the first.
	return urls, meshDialer(t, secrets, spec.Regions, func(kind string) string {
		if kind == identity.KindGlobal {
			return urls[1]
		}
		return urls[0]
	}), opts
}

func TestRenderedConfigReadsBackAsTheGeneratedAuthorization(t *testing.T) {
	dir := t.TempDir()
	secrets := filepath.Join(dir, "secrets")
	spec := identity.MeshSpec{Operators: []string{"admin"}, Globals: []string{"g1", "g2"}, Regions: []string{"eu"},
		Clients: map[string][]string{"eu": {"eu-c1", "eu-c2"}}}
	if err := identity.GenerateMesh(secrets, spec); err != nil {
		t.Fatal(err)
	}
	pub, err := identity.LoadPublic(secrets)
	if err != nil {
		t.Fatal(err)
	}
	conf, err := RenderNATSConf(NATSConf{Job: "j", Secrets: secrets, Identities: pub, StoreDir: "/data",
		Routes: []string{"nats1:6222", "nats2:6222", "nats3:6222"}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(path, conf, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := server.ProcessConfigFile(path); err == nil || !strings.Contains(err.Error(), NameEnv) {
		t.Errorf("without $%s: %v, want an error naming it", NameEnv, err)
	}
	t.Setenv(NameEnv, "nats2")
	o, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("%v\n%s", err, conf)
	}
	if o.ServerName != "nats2" {
		t.Errorf("server name %q, want nats2 from $%s", o.ServerName, NameEnv)
	}
	want, err := Authorization("j", pub)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.Nkeys) != len(want) {
		t.Fatalf("config holds %d users, want %d", len(o.Nkeys), len(want))
	}
	for i, u := range o.Nkeys {
		if u.Nkey != want[i].Nkey || !reflect.DeepEqual(u.Permissions, want[i].Permissions) || !reflect.DeepEqual(u.AllowedConnectionTypes, want[i].AllowedConnectionTypes) {
			t.Errorf("user %d: %s %+v, want %s %+v", i, u.Nkey, u.Permissions, want[i].Nkey, want[i].Permissions)
		}
	}
	if !o.Cluster.NoAdvertise {
		t.Error("the cluster advertises its servers' addresses to clients")
	}
	if o.TLSConfig == nil || o.Cluster.TLSConfig == nil {
		t.Fatal("clients or routes without TLS")
	}
	if o.Port != 4222 || o.HTTPPort != 8222 || o.Cluster.Port != 6222 || o.Cluster.Name != "strata" || o.StoreDir != "/data" || !o.JetStream {
		t.Errorf("ports %d/%d/%d, cluster %q, store %q, JetStream %v", o.Port, o.HTTPPort, o.Cluster.Port, o.Cluster.Name, o.StoreDir, o.JetStream)
	}
	var routes []string
	for _, r := range o.Routes {
		routes = append(routes, r.String())
	}
	if strings.Join(routes, ",") != "nats-route://nats1:6222,nats-route://nats2:6222,nats-route://nats3:6222" {
		t.Errorf("routes %v", routes)
	}
}

func TestRenderedClusterEnforcesRolePermissionsAcrossTLSRoutes(t *testing.T) {
	_, dial, _ := renderedCluster(t)
	checkRolePermissions(t, dial)
}

func TestRenderedClusterRefusesUnknownIdentitiesAndPlainText(t *testing.T) {
	urls, dial, _ := renderedCluster(t)
	checkRefusals(t, urls[0], dial)
}

func TestRenderNATSConfRejectsBadInput(t *testing.T) {
	pub := []identity.Entry{{ID: "g1", Kind: identity.KindGlobal, Public: "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4"}}
	for _, c := range []struct {
		name string
		conf NATSConf
		want string
	}{
		{"no store", NATSConf{Job: "j", Secrets: "/s", Identities: pub}, "StoreDir"},
		{"relative secrets", NATSConf{Job: "j", Secrets: "s", Identities: pub, StoreDir: "/d"}, "absolute"},
		{"no identities", NATSConf{Job: "j", Secrets: "/s", StoreDir: "/d"}, "no identities"},
		{"route with scheme", NATSConf{Job: "j", Secrets: "/s", Identities: pub, StoreDir: "/d", Routes: []string{"nats://a:6222"}}, "host:port"},
		{"bad job", NATSConf{Job: "a.b", Secrets: "/s", Identities: pub, StoreDir: "/d"}, "job"},
	} {
		if _, err := RenderNATSConf(c.conf); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one naming %q", c.name, err, c.want)
		}
	}
}

func freeTCPPorts(t *testing.T, n int) []string {
	t.Helper()
	var ls []net.Listener
	var ports []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		_, p, _ := net.SplitHostPort(l.Addr().String())
		ports = append(ports, p)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// The config parser reads back every quoted value as written: subjects
// with '$', '>' and '*', and paths with spaces, quotes or backslashes.
func FuzzQuoteReadsBack(f *testing.F) {
	for _, s := range []string{"$JS.API.INFO", "strata.j.update.eu.*", ">", "/tmp/my secrets/ca.pem", `C:\strata\"x"`, "10m0s", "ü", "#not a comment", "a;b", "{[("} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) || strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			t.Skip("control characters and invalid UTF-8 name no subject or path Strata writes")
		}
		m, err := conf.Parse("v: " + quote(s) + "\n")
		if err != nil {
			t.Fatalf("%q: %v", quote(s), err)
		}
		if got, _ := m["v"].(string); got != s {
			t.Fatalf("%q read back as %q", s, got)
		}
	})
}
