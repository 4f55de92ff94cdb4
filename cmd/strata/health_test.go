package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/identity"
	"github.com/strata-fl/strata/internal/seal"
	"github.com/strata-fl/strata/mesh"
)

func TestKeygenOutKeepsAnExistingKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "strata.key")
	var out bytes.Buffer
	if err := runKeygen(t.Context(), []string{"--out", path}, &out, &out); err != nil {
		t.Fatal(err)
	}
	first, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := seal.Load(path); err != nil {
		t.Fatalf("written key does not load: %v", err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	// A second run (an init container starting again) keeps the key.
	out.Reset()
	if err := runKeygen(t.Context(), []string{"--out", path}, &out, &out); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(path); !bytes.Equal(first, again) {
		t.Fatal("keygen --out replaced an existing key")
	}
	if !strings.Contains(out.String(), "kept it") {
		t.Errorf("second run says %q, want that it kept the key", out.String())
	}
	// A file that is not a key is neither used nor overwritten.
	junk := filepath.Join(t.TempDir(), "junk")
	os.WriteFile(junk, []byte("not a key"), 0o600)
	err = runKeygen(t.Context(), []string{"--out", junk}, &out, &out)
	if err == nil || !strings.Contains(err.Error(), "not a key") {
		t.Fatalf("got %v, want an error saying the file is not a key", err)
	}
	if b, _ := os.ReadFile(junk); string(b) != "not a key" {
		t.Fatal("keygen overwrote a file that was not a key")
	}
}

// startNATS starts a real NATS server with JetStream and its monitoring
// port, as the compose file's servers run.
func startNATS(t *testing.T) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, HTTPHost: "127.0.0.1", HTTPPort: server.RANDOM_PORT,
		JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(s.Shutdown)
	return s
}

func TestHealth(t *testing.T) {
	s := startNATS(t)
	url := s.ClientURL()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ping, _ := mesh.PingSubject("mnist-finetune", "eu")
	if _, err := nc.Subscribe(ping, func(m *nats.Msg) { m.Respond([]byte("ok")) }); err != nil {
		t.Fatal(err)
	}
	// A node that answers but has no leader yet, and one that knows it.
	for id, leader := range map[string]string{"g1": "", "g2": "g3"} {
		b, _ := json.Marshal(global.Status{ID: id, LeaderID: leader})
		if _, err := nc.Subscribe(global.StatusSubject(id), func(m *nats.Msg) { m.Respond(b) }); err != nil {
			t.Fatal(err)
		}
	}
	nc.Flush()
	monitor := fmt.Sprintf("http://%s", s.MonitorAddr())
	tests := []struct {
		name    string
		args    []string
		wantErr string // "" = healthy
		usage   bool
	}{
		{"nats serving", []string{"nats", "--url", monitor}, "", false},
		{"nats down", []string{"nats", "--url", "http://127.0.0.1:1", "--timeout", "1s"}, "health nats", false},
		{"regional answering", []string{"regional", "--region", "eu", "--nats", url}, "", false},
		{"regional silent", []string{"regional", "--region", "us", "--nats", url, "--timeout", "300ms"}, `region "us"`, false},
		{"regional not in topology", []string{"regional", "--region", "mars", "--nats", url}, `--region "mars"`, true},
		{"global with leader", []string{"global", "--id", "g2", "--nats", url}, "", false},
		{"global without leader", []string{"global", "--id", "g1", "--nats", url}, "knows no leader", false},
		{"global silent", []string{"global", "--id", "g9", "--nats", url, "--timeout", "300ms"}, `node "g9" did not answer`, false},
		{"global without id", []string{"global", "--nats", url}, "--id", true},
		{"unknown role", []string{"edge"}, "nats, global and regional", true},
		{"no role", nil, "strata health nats", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := runHealth(t.Context(), tc.args, &out, &out)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("got %v, want healthy", err)
			case tc.wantErr == "":
				if !strings.Contains(out.String(), "healthy") {
					t.Fatalf("output %q does not say healthy", out.String())
				}
			case err == nil || !strings.Contains(err.Error(), tc.wantErr):
				t.Fatalf("got %v, want an error containing %q", err, tc.wantErr)
			case errors.Is(err, errUsage) != tc.usage:
				t.Fatalf("usage error %v, want %v (%v)", errors.Is(err, errUsage), tc.usage, err)
			}
		})
	}
}

// On a secured mesh (the compose file's) the checks connect over TLS as
// the operator; without --secrets the server turns them away.
func TestHealthSecured(t *testing.T) {
	dir := t.TempDir()
	secrets := filepath.Join(dir, "secrets")
	spec := identity.MeshSpec{Operators: []string{"admin"}, Globals: []string{"g1"}, Regions: []string{"eu"}}
	if err := identity.GenerateMesh(secrets, spec); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := mesh.Secured(mesh.ServerConfig{StoreDir: filepath.Join(dir, "nats")}, secrets, "mnist-finetune")
	if err != nil {
		t.Fatal(err)
	}
	s, err := mesh.StartServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	url := s.ClientURL()
	ctls, err := identity.ClientTLS(secrets)
	if err != nil {
		t.Fatal(err)
	}
	as := func(kind, id string) *nats.Conn {
		k, err := identity.LoadKey(secrets, kind, id)
		if err != nil {
			t.Fatal(err)
		}
		nc, err := mesh.Dialer{URL: url, TLS: ctls, Key: k}.Connect(kind + "-" + id)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	region := as(identity.KindRegion, "eu")
	ping, _ := mesh.PingSubject("mnist-finetune", "eu")
	if _, err := region.Subscribe(ping, func(m *nats.Msg) { m.Respond([]byte("ok")) }); err != nil {
		t.Fatal(err)
	}
	region.Flush()
	g := as(identity.KindGlobal, "g1")
	b, _ := json.Marshal(global.Status{ID: "g1", LeaderID: "g1"})
	if _, err := g.Subscribe(global.StatusSubject("g1"), func(m *nats.Msg) { m.Respond(b) }); err != nil {
		t.Fatal(err)
	}
	g.Flush()
	for _, args := range [][]string{
		{"global", "--id", "g1", "--nats", url, "--secrets", secrets},
		{"regional", "--region", "eu", "--nats", url, "--secrets", secrets},
	} {
		var out bytes.Buffer
		if err := runHealth(t.Context(), args, &out, &out); err != nil || !strings.Contains(out.String(), "healthy") {
			t.Errorf("health %v: %v %q, want healthy", args, err, out.String())
		}
		if err := runHealth(t.Context(), args[:len(args)-2], &out, &out); err == nil {
			t.Errorf("health %v without --secrets: healthy, want refused by the server", args[:len(args)-2])
		}
	}
}
