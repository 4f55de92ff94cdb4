package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"time"
)

// KindLeaf is a consortium site's NATS leaf node. Its key authenticates the
// leaf's connection to the hub, where it is a user whose permissions carry
// only its region's subjects (mesh.LeafPermissions); its certificate
// (leaf-<region>.pem, issued by the mesh CA for client and server use) is
// what the leaf serves to the site's own clients and presents to the hub,
// which requires it. A site so holds no key of the hub and no credential
// that reaches another region.
const KindLeaf = "leaf"

// LeafHost is the name a site's leaf certificate is valid for when no
// other is given: leaf-<region>.
func LeafHost(region string) string { return "leaf-" + region }

func leafCertPath(dir, region string) string { return filepath.Join(dir, "leaf-"+region+".pem") }
func leafKeyPath(dir, region string) string  { return filepath.Join(dir, "leaf-"+region+".key") }

// AddLeaf creates the leaf-node credentials of one site: an NKey (recorded
// in public.json as kind leaf, ID and region the site's region) and a
// certificate of the mesh CA valid for hosts (LeafHost(region), localhost
// and 127.0.0.1 always). It needs the CA key in dir and refuses a site that
// already has a leaf key.
func AddLeaf(dir, region string, hosts []string) error {
	if region == "" {
		return errors.New("identity: a leaf node needs its site's region")
	}
	caCertDER, caPriv, err := loadCA(dir)
	if err != nil {
		return err
	}
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "strata leaf " + region},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(2, 0, 0),
		KeyUsage: x509.KeyUsageDigitalSignature,
		// Server auth for the site's clients, client auth for the hub's
		// leafnode port, which verifies it.
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	setHosts(tmpl, append([]string{LeafHost(region)}, hosts...))
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCertDER, &priv.PublicKey, caPriv)
	if err != nil {
		return err
	}
	if _, err := Add(dir, KindLeaf, region, region); err != nil {
		return err
	}
	if err := os.WriteFile(leafKeyPath(dir, region), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: mustEC(priv)}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(leafCertPath(dir, region), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// CheckLeaf checks that dir holds a site's leaf credentials: its key, its
// certificate and key pair, valid for every host.
func CheckLeaf(dir, region string, hosts []string) error {
	if _, err := LoadKey(dir, KindLeaf, region); err != nil {
		return err
	}
	if _, err := LeafTLS(dir, region); err != nil {
		return err
	}
	b, err := os.ReadFile(leafCertPath(dir, region))
	if err != nil {
		return err
	}
	cert, err := parseCert(b, leafCertPath(dir, region))
	if err != nil {
		return err
	}
	for _, h := range append([]string{LeafHost(region)}, hosts...) {
		if err := cert.VerifyHostname(h); err != nil {
			return fmt.Errorf("identity: the leaf certificate of site %s is not valid for %q (%v): remove %s, its key and its public record to issue it anew", region, h, err, leafCertPath(dir, region))
		}
	}
	return nil
}

// LeafTLS is a site's leaf-node certificate with the mesh CA: the leaf
// serves it to the site's clients and presents it to the hub, whose
// certificate it verifies against the CA.
func LeafTLS(dir, region string) (*tls.Config, error) {
	if err := ownerOnly(leafKeyPath(dir, region)); err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(leafCertPath(dir, region), leafKeyPath(dir, region))
	if err != nil {
		return nil, fmt.Errorf("identity: leaf certificate of site %s: %w (create it with `strata certs --leaf-sites %s`)", region, err, region)
	}
	c, err := ClientTLS(dir)
	if err != nil {
		return nil, err
	}
	c.Certificates = []tls.Certificate{cert}
	return c, nil
}

// LeafHubTLS is the hub's leafnode listener: the server certificate, and
// only leaf nodes presenting a certificate of the mesh CA are let in.
func LeafHubTLS(dir string) (*tls.Config, error) {
	c, err := ServerTLS(dir)
	if err != nil {
		return nil, err
	}
	ca, err := ClientTLS(dir)
	if err != nil {
		return nil, err
	}
	c.ClientCAs = ca.RootCAs
	c.ClientAuth = tls.RequireAndVerifyClientCert
	return c, nil
}

func loadCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	if err := ownerOnly(filepath.Join(dir, caKey)); err != nil {
		return nil, nil, fmt.Errorf("identity: leaf credentials need the CA key: %w", err)
	}
	cb, err := os.ReadFile(filepath.Join(dir, caCert))
	if err != nil {
		return nil, nil, fmt.Errorf("identity: CA certificate: %w", err)
	}
	cert, err := parseCert(cb, filepath.Join(dir, caCert))
	if err != nil {
		return nil, nil, err
	}
	kb, err := os.ReadFile(filepath.Join(dir, caKey))
	if err != nil {
		return nil, nil, err
	}
	block, _ := pem.Decode(kb)
	if block == nil {
		return nil, nil, fmt.Errorf("identity: %s holds no PEM key", filepath.Join(dir, caKey))
	}
	priv, err := x509.ParseECPrivateKey(block.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("identity: %s: %w", filepath.Join(dir, caKey), err)
	}
	return cert, priv, nil
}

func parseCert(b []byte, name string) (*x509.Certificate, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("identity: %s holds no PEM certificate", name)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("identity: %s: %w", name, err)
	}
	return cert, nil
}

// setHosts puts localhost, 127.0.0.1 and hosts into a certificate's SANs.
func setHosts(c *x509.Certificate, hosts []string) {
	seen := map[string]bool{}
	for _, h := range append([]string{"localhost", "127.0.0.1"}, hosts...) {
		if h == "" || seen[h] {
			continue
		}
		seen[h] = true
		if ip := net.ParseIP(h); ip != nil {
			c.IPAddresses = append(c.IPAddresses, ip)
		} else {
			c.DNSNames = append(c.DNSNames, h)
		}
	}
	sort.Strings(c.DNSNames)
}
