package identity

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// A secrets directory holds what one dev mesh needs to run with TLS and
// per-identity credentials:
//
//	ca.pem, ca.key            the local certificate authority
//	server.pem, server.key    the NATS server's certificate (SANs: the hosts given)
//	keys/<kind>-<id>.nk       one NKey seed per global node, region and enrolled client
//	keys/clients-<region>.keys  "id seed" lines: a simulated fleet's clients
//	public.json               every identity's public key: what the global tier
//	                          enrols and what NATS authorization is generated from
//
// Secret files are written 0600 and refused when others can read them.
// Production deployments bring their own CA and keep each seed on its owner's host.
const (
	caCert     = "ca.pem"
	caKey      = "ca.key"
	serverCert = "server.pem"
	serverKey  = "server.key"
	publicFile = "public.json"
	keysDir    = "keys"
)

// KindOperator is an administrator: the CLI's ledger, enrol and withdraw
// commands against a running mesh.
const KindOperator = "operator"

// ErrNoSecrets says a directory holds no mesh secrets.
var ErrNoSecrets = errors.New("identity: no secrets; create them with `strata certs --dir DIR`")

// MeshSpec lists the identities of a mesh.
type MeshSpec struct {
	// Operators are administrators (the CLI against a running mesh).
	Operators []string
	Globals   []string
	Regions   []string
	// Clients maps a region to its clients' IDs.
	Clients map[string][]string
	// Hosts are the names and addresses the NATS server's certificate is
	// valid for; localhost and 127.0.0.1 are always included.
	Hosts []string
}

// ErrHaveCA says a directory already holds a mesh's CA.
var ErrHaveCA = errors.New("identity: the directory already holds a CA")

// GenerateMesh writes a fresh CA, server certificate and a key for every
// identity of spec into dir. It refuses to overwrite an existing CA.
func GenerateMesh(dir string, spec MeshSpec) error {
	if _, err := os.Stat(filepath.Join(dir, caCert)); err == nil {
		return fmt.Errorf("%w (%s): use a new directory (or remove it) to start over", ErrHaveCA, dir)
	}
	if err := os.MkdirAll(filepath.Join(dir, keysDir), 0o700); err != nil {
		return err
	}
	if err := writeCA(dir, spec.Hosts); err != nil {
		return err
	}
	var pub []Entry
	add := func(kind, id, region string) (*Key, error) {
		k, err := New(kind, id)
		if err != nil {
			return nil, err
		}
		pub = append(pub, Entry{ID: id, Kind: kind, Region: region, Public: k.Public(), Status: StatusActive})
		return k, nil
	}
	for _, g := range []struct {
		kind string
		ids  []string
	}{{KindOperator, spec.Operators}, {KindGlobal, spec.Globals}} {
		for _, id := range g.ids {
			k, err := add(g.kind, id, "")
			if err != nil {
				return err
			}
			if err := WriteSeed(keyPath(dir, g.kind, id), k); err != nil {
				return err
			}
		}
	}
	for _, r := range spec.Regions {
		k, err := add(KindRegion, r, r)
		if err != nil {
			return err
		}
		if err := WriteSeed(keyPath(dir, KindRegion, r), k); err != nil {
			return err
		}
		var ring bytes.Buffer
		for _, id := range spec.Clients[r] {
			k, err := add(KindClient, id, r)
			if err != nil {
				return err
			}
			fmt.Fprintf(&ring, "%s %s\n", id, k.Seed())
		}
		if len(spec.Clients[r]) > 0 {
			if err := os.WriteFile(filepath.Join(dir, keysDir, "clients-"+r+".keys"), ring.Bytes(), 0o600); err != nil {
				return err
			}
		}
	}
	return writePublic(dir, pub)
}

// CheckMesh checks that the secrets in dir serve spec: a key (readable by
// its owner only) and a public record for every identity, and a server
// certificate valid for every host. Existing secrets are reused this way
// instead of being regenerated, which would orphan every key handed out.
func CheckMesh(dir string, spec MeshSpec) error {
	pub, err := LoadPublic(dir)
	if err != nil {
		return err
	}
	have := map[string]bool{}
	for _, e := range pub {
		have[e.Kind+"\x00"+e.ID] = true
	}
	var missing []string
	need := func(kind, id string, key func() error) error {
		if !have[kind+"\x00"+id] {
			missing = append(missing, kind+" "+id)
			return nil
		}
		return key()
	}
	for _, g := range []struct {
		kind string
		ids  []string
	}{{KindOperator, spec.Operators}, {KindGlobal, spec.Globals}, {KindRegion, spec.Regions}} {
		for _, id := range g.ids {
			if err := need(g.kind, id, func() error { _, err := LoadKey(dir, g.kind, id); return err }); err != nil {
				return err
			}
		}
	}
	for _, r := range spec.Regions {
		keys, err := LoadClients(dir, r)
		if err != nil {
			return err
		}
		for _, id := range spec.Clients[r] {
			if err := need(KindClient, id, func() error {
				if keys[id] == nil {
					return fmt.Errorf("%w: client %s is in %s but its key is not in %s", ErrKeyFile, id, publicFile, filepath.Join(dir, keysDir))
				}
				return nil
			}); err != nil {
				return err
			}
		}
	}
	if len(missing) > 0 {
		some := strings.Join(missing[:min(3, len(missing))], ", ")
		if len(missing) > 3 {
			some += ", …"
		}
		return fmt.Errorf("identity: %s has no key for %d identities of the mesh (%s): create the secrets anew in an empty directory, or add them with `strata enroll`",
			dir, len(missing), some)
	}
	if _, err := ServerTLS(dir); err != nil {
		return err
	}
	cert, err := ServerCert(dir)
	if err != nil {
		return err
	}
	for _, h := range spec.Hosts {
		if err := cert.VerifyHostname(h); err != nil {
			return fmt.Errorf("identity: the NATS server certificate in %s is not valid for %q (%v): create the secrets anew with that host", dir, h, err)
		}
	}
	return nil
}

// ServerCert returns the NATS server's certificate of dir.
func ServerCert(dir string) (*x509.Certificate, error) {
	b, err := os.ReadFile(filepath.Join(dir, serverCert))
	if err != nil {
		return nil, fmt.Errorf("identity: server certificate: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("identity: %s holds no PEM certificate", filepath.Join(dir, serverCert))
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("identity: %s: %w", filepath.Join(dir, serverCert), err)
	}
	return cert, nil
}

// AddClient creates one client's identity in dir (as `strata enroll` does)
// and records its public key; it refuses an ID already present.
func AddClient(dir, id, region string) (*Key, error) { return Add(dir, KindClient, id, region) }

// Add creates one identity of any kind in dir and records its public key;
// it refuses an identity already present (rotate a node's key by removing
// its key file and public record first).
func Add(dir, kind, id, region string) (*Key, error) {
	pub, err := LoadPublic(dir)
	if err != nil && !errors.Is(err, ErrNoSecrets) {
		return nil, err
	}
	for _, e := range pub {
		if e.Kind == kind && e.ID == id {
			return nil, fmt.Errorf("identity: %s %q already has a key in %s; withdraw it and enrol a new ID", kind, id, dir)
		}
	}
	k, err := New(kind, id)
	if err != nil {
		return nil, err
	}
	if err := WriteSeed(keyPath(dir, kind, id), k); err != nil {
		return nil, err
	}
	pub = append(pub, Entry{ID: id, Kind: kind, Region: region, Public: k.Public(), Status: StatusActive})
	return k, writePublic(dir, pub)
}

func keyPath(dir, kind, id string) string {
	return filepath.Join(dir, keysDir, kind+"-"+id+".nk")
}

func writePublic(dir string, pub []Entry) error {
	b, err := json.MarshalIndent(pub, "", " ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, publicFile), append(b, '\n'), 0o644)
}

// LoadPublic reads every identity's public record.
func LoadPublic(dir string) ([]Entry, error) {
	b, err := os.ReadFile(filepath.Join(dir, publicFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w (looked in %s)", ErrNoSecrets, dir)
	}
	if err != nil {
		return nil, err
	}
	var pub []Entry
	if err := json.Unmarshal(b, &pub); err != nil {
		return nil, fmt.Errorf("identity: %s: %w", filepath.Join(dir, publicFile), err)
	}
	for i, e := range pub {
		if err := ValidPublic(e.Public); err != nil {
			return nil, fmt.Errorf("identity: %s entry %d (%s %q): %w", publicFile, i, e.Kind, e.ID, err)
		}
	}
	return pub, nil
}

// LoadKey reads the key of one global node, region or enrolled client.
func LoadKey(dir, kind, id string) (*Key, error) {
	k, err := ReadSeed(kind, id, keyPath(dir, kind, id))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w (create it with `strata certs` or `strata enroll`)", kind, id, err)
	}
	return k, nil
}

// LoadClients reads the keys of a region's clients: the fleet keyring and
// any clients enrolled one by one.
func LoadClients(dir, region string) (map[string]*Key, error) {
	out := map[string]*Key{}
	ring := filepath.Join(dir, keysDir, "clients-"+region+".keys")
	if _, err := os.Stat(ring); err == nil {
		if err := readRing(ring, out); err != nil {
			return nil, err
		}
	}
	pub, err := LoadPublic(dir)
	if err != nil {
		return nil, err
	}
	for _, e := range pub {
		if e.Kind != KindClient || e.Region != region || out[e.ID] != nil {
			continue
		}
		if k, err := ReadSeed(KindClient, e.ID, keyPath(dir, KindClient, e.ID)); err == nil {
			out[e.ID] = k
		}
	}
	return out, nil
}

func readRing(ring string, out map[string]*Key) error {
	if err := ownerOnly(ring); err != nil {
		return err
	}
	f, err := os.Open(ring)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		id, seed, ok := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		if !ok {
			return fmt.Errorf("%w: %s line %d: want \"id seed\"", ErrKeyFile, ring, line)
		}
		k, err := FromSeed(KindClient, id, []byte(seed))
		if err != nil {
			return fmt.Errorf("%s line %d: %w", ring, line, err)
		}
		out[id] = k
	}
	return sc.Err()
}

// ClientTLS trusts the mesh's CA.
func ClientTLS(dir string) (*tls.Config, error) {
	pemBytes, err := os.ReadFile(filepath.Join(dir, caCert))
	if err != nil {
		return nil, fmt.Errorf("identity: CA certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		return nil, fmt.Errorf("identity: %s holds no PEM certificate", filepath.Join(dir, caCert))
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// ServerTLS is the NATS server's certificate.
func ServerTLS(dir string) (*tls.Config, error) {
	if err := ownerOnly(filepath.Join(dir, serverKey)); err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, serverCert), filepath.Join(dir, serverKey))
	if err != nil {
		return nil, fmt.Errorf("identity: server certificate: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

func writeCA(dir string, hosts []string) error {
	caPriv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	ca := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "strata dev mesh CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(5, 0, 0),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caPriv.PublicKey, caPriv)
	if err != nil {
		return err
	}
	caParsed, _ := x509.ParseCertificate(caDER)
	srvPriv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	srv := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "strata nats"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(2, 0, 0),
		KeyUsage: x509.KeyUsageDigitalSignature,
		// Client auth too: the servers of a NATS cluster present this
		// certificate to each other on routes, which verify both ways.
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	seen := map[string]bool{}
	for _, h := range append([]string{"localhost", "127.0.0.1"}, hosts...) {
		if h == "" || seen[h] {
			continue
		}
		seen[h] = true
		if ip := net.ParseIP(h); ip != nil {
			srv.IPAddresses = append(srv.IPAddresses, ip)
		} else {
			srv.DNSNames = append(srv.DNSNames, h)
		}
	}
	sort.Strings(srv.DNSNames)
	srvDER, err := x509.CreateCertificate(rand.Reader, srv, caParsed, &srvPriv.PublicKey, caPriv)
	if err != nil {
		return err
	}
	for _, f := range []struct {
		name, typ string
		der       []byte
		mode      os.FileMode
	}{
		{caCert, "CERTIFICATE", caDER, 0o644},
		{serverCert, "CERTIFICATE", srvDER, 0o644},
		{caKey, "EC PRIVATE KEY", mustEC(caPriv), 0o600},
		{serverKey, "EC PRIVATE KEY", mustEC(srvPriv), 0o600},
	} {
		b := pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der})
		if err := os.WriteFile(filepath.Join(dir, f.name), b, f.mode); err != nil {
			return err
		}
	}
	return nil
}

func mustEC(k *ecdsa.PrivateKey) []byte {
	b, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		panic(err) // P-256 keys always marshal
	}
	return b
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	return n
}
