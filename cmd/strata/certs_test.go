package main

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/strata-fl/strata/identity"
	"github.com/strata-fl/strata/internal/seal"
	"github.com/strata-fl/strata/mesh"
)

const certsTopology = `job: certs-test
regions:
  - {id: eu, clients: 3}
  - {id: us, clients: 2}
`

// snapshot reads every file of dir with its mode.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		out[p] = fi.Mode().String() + " " + string(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// As the compose init service runs it on every `up`: secrets, at-rest key
// and nats-server config are created once and then kept as they are.
func TestCertsKeepIsIdempotentAndRendersTheNATSConfig(t *testing.T) {
	dir := t.TempDir()
	topo := filepath.Join(dir, "topology.yaml")
	if err := os.WriteFile(topo, []byte(certsTopology), 0o644); err != nil {
		t.Fatal(err)
	}
	secrets := filepath.Join(dir, "secrets")
	args := []string{"--dir", secrets, "--topology", topo, "--hosts", "nats1,nats2,nats3", "--keep",
		"--at-rest-key", filepath.Join(secrets, "strata.key"), "--nats-conf", filepath.Join(secrets, "nats.conf"),
		"--nats-routes", "nats1:6222,nats2:6222,nats3:6222", "--nats-store", "/data"}
	var out bytes.Buffer
	if err := runCerts(t.Context(), args, &out, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "created "+secrets) || !strings.Contains(out.String(), "wrote a new key") || !strings.Contains(out.String(), "wrote "+filepath.Join(secrets, "nats.conf")) {
		t.Errorf("first run says:\n%s", out.String())
	}
	first := snapshot(t, secrets)
	for p, s := range first {
		secret := strings.HasSuffix(p, ".key") || strings.HasSuffix(p, ".nk") || strings.HasSuffix(p, ".keys")
		if secret && !strings.HasPrefix(s, "-rw------- ") {
			t.Errorf("%s: mode %s, want -rw------- (identity refuses keys others can read)", p, strings.Fields(s)[0])
		}
	}
	if _, err := seal.Load(filepath.Join(secrets, "strata.key")); err != nil {
		t.Fatal(err)
	}
	// The servers read the config as written, with every identity a user.
	t.Setenv(mesh.NameEnv, "nats1")
	o, err := server.ProcessConfigFile(filepath.Join(secrets, "nats.conf"))
	if err != nil {
		t.Fatal(err)
	}
	// 1 operator, 3 global nodes, 2 regions, 5 clients.
	if len(o.Nkeys) != 11 || len(o.Routes) != 3 || o.StoreDir != "/data" || o.TLSConfig == nil || o.Cluster.TLSConfig == nil {
		t.Errorf("config: %d users, %d routes, store %q, TLS %v, route TLS %v", len(o.Nkeys), len(o.Routes), o.StoreDir, o.TLSConfig != nil, o.Cluster.TLSConfig != nil)
	}
	cert, err := identity.ServerCert(secrets)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"nats1", "nats2", "nats3", "localhost", "127.0.0.1"} {
		if err := cert.VerifyHostname(h); err != nil {
			t.Errorf("server certificate: %v", err)
		}
	}

	// The second start keeps everything, byte for byte.
	out.Reset()
	if err := runCerts(t.Context(), args, &out, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "kept the secrets") || !strings.Contains(out.String(), "kept it") || !strings.Contains(out.String(), "up to date") {
		t.Errorf("second run says:\n%s", out.String())
	}
	second := snapshot(t, secrets)
	if len(second) != len(first) {
		t.Errorf("%d files after the second run, %d after the first", len(second), len(first))
	}
	for p, s := range first {
		if second[p] != s {
			t.Errorf("%s changed on the second run", p)
		}
	}

	// Without --keep an existing CA is refused, as before.
	err = runCerts(t.Context(), []string{"--dir", secrets, "--topology", topo}, &out, &out)
	if !errors.Is(err, identity.ErrHaveCA) {
		t.Errorf("without --keep: %v, want ErrHaveCA", err)
	}
	// Secrets that do not serve the mesh are not silently reused.
	bigger := filepath.Join(dir, "bigger.yaml")
	os.WriteFile(bigger, []byte(strings.Replace(certsTopology, "clients: 2", "clients: 4", 1)), 0o644)
	err = runCerts(t.Context(), []string{"--dir", secrets, "--topology", bigger, "--hosts", "nats1", "--keep"}, &out, &out)
	if err == nil || !strings.Contains(err.Error(), "no key for 2 identities") || !strings.Contains(err.Error(), "client us-c00002") {
		t.Errorf("--keep with a topology of more clients: %v, want an error naming the missing keys", err)
	}
	err = runCerts(t.Context(), []string{"--dir", secrets, "--topology", topo, "--hosts", "nats4", "--keep"}, &out, &out)
	if err == nil || !strings.Contains(err.Error(), `not valid for "nats4"`) {
		t.Errorf("--keep with a new host: %v, want an error naming it", err)
	}
	os.Chmod(filepath.Join(secrets, "keys", "region-eu.nk"), 0o644)
	err = runCerts(t.Context(), args, &out, &out)
	if err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("--keep with a key others can read: %v, want the chmod fix", err)
	}
}

// `strata certs --leaf-sites` makes each site's leaf credentials once: a
// leaf key recorded in public.json and a certificate of the mesh CA valid
// for the site's hosts; with --keep they are kept, and a site added later
// gets its own without touching the others.
func TestCertsLeafSites(t *testing.T) {
	dir := t.TempDir()
	topo := filepath.Join(dir, "topology.yaml")
	if err := os.WriteFile(topo, []byte(certsTopology), 0o644); err != nil {
		t.Fatal(err)
	}
	secrets := filepath.Join(dir, "secrets")
	args := []string{"--dir", secrets, "--topology", topo, "--keep", "--leaf-sites", "eu=nats.eu.example"}
	var out bytes.Buffer
	if err := runCerts(t.Context(), args, &out, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "leaf node of site eu") {
		t.Errorf("first run says:\n%s", out.String())
	}
	if _, err := identity.LoadKey(secrets, identity.KindLeaf, "eu"); err != nil {
		t.Fatal(err)
	}
	if err := identity.CheckLeaf(secrets, "eu", []string{"nats.eu.example", "leaf-eu", "127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := identity.LoadKey(secrets, identity.KindLeaf, "us"); err == nil {
		t.Error("site us got leaf credentials it was not asked for")
	}
	first := snapshot(t, secrets)

	out.Reset()
	args[len(args)-1] = "eu=nats.eu.example,us"
	if err := runCerts(t.Context(), args, &out, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "kept the leaf-node credentials of site eu") || !strings.Contains(out.String(), "leaf node of site us") {
		t.Errorf("second run says:\n%s", out.String())
	}
	second := snapshot(t, secrets)
	for p, s := range first {
		if strings.HasSuffix(p, "public.json") {
			continue // gains site us
		}
		if second[p] != s {
			t.Errorf("%s changed when site us was added", p)
		}
	}
	pub, err := identity.LoadPublic(secrets)
	if err != nil {
		t.Fatal(err)
	}
	leafs := 0
	for _, e := range pub {
		if e.Kind == identity.KindLeaf {
			leafs++
		}
	}
	if leafs != 2 {
		t.Errorf("public.json has %d leaf identities, want 2", leafs)
	}

	for _, bad := range []string{"mars", "eu=bad host"} {
		out.Reset()
		if err := runCerts(t.Context(), []string{"--dir", secrets, "--topology", topo, "--keep", "--leaf-sites", bad}, &out, &out); err == nil {
			t.Errorf("--leaf-sites %q accepted", bad)
		} else {
			t.Logf("--leaf-sites %q: %v", bad, err)
		}
	}
}
