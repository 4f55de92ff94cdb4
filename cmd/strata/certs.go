package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/identity"
	"github.com/strata-fl/strata/mesh"
	"github.com/strata-fl/strata/roles"
	"github.com/strata-fl/strata/topology"
)

// runCerts creates a dev mesh's secrets: a local CA, the NATS server's
// certificate, and a key for every identity of the topology. With --keep it
// is idempotent, so a one-shot init container can run it on every start:
// existing secrets are kept (and checked against the topology and hosts),
// never regenerated. It can also write the at-rest key and render the
// nats-server config of the secrets (--nats-conf), from the identities
// recorded in the directory.
func runCerts(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("certs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "./strata-secrets", "directory to create (refused if it already holds a CA, unless --keep)")
	topo := fs.String("topology", "", "topology YAML whose regions and clients get keys (default: $STRATA_TOPOLOGY, else the built-in one)")
	globals := fs.String("globals", "g1,g2,g3", "global node ids, comma-separated")
	hosts := fs.String("hosts", "", "extra names/addresses the NATS server certificate is valid for, comma-separated (localhost and 127.0.0.1 always are)")
	keep := fs.Bool("keep", false, "when DIR already holds a CA, keep every secret in it (after checking it has a key for every identity of the topology and a certificate for every --hosts name) instead of refusing")
	atRest := fs.String("at-rest-key", "", "also write a new AES-256 at-rest key to this file (mode 0600), as `strata keygen --out`; an existing key is kept")
	natsConf := fs.String("nats-conf", "", "also write a nats-server config file for the secrets: TLS, JetStream and one NKey user per identity of DIR/public.json with its role's permissions (rewritten only when it changes)")
	natsRoutes := fs.String("nats-routes", "", "with --nats-conf: the cluster's servers as host:port, comma-separated (each server skips itself and takes its name from $"+mesh.NameEnv+"); empty: one server, no cluster")
	natsStore := fs.String("nats-store", "./strata-nats", "with --nats-conf: JetStream's store dir on the server")
	leafSites := fs.String("leaf-sites", "", "also make leaf-node credentials for these consortium sites, comma-separated REGION[=HOST[+HOST...]]: an NKey (keys/leaf-REGION.nk) whose NATS permissions carry only that region's subjects, and a certificate (leaf-REGION.pem) valid for leaf-REGION and the HOSTs; with --keep, missing ones are added")
	if err := fs.Parse(args); err != nil {
		return helpOK(fmt.Errorf("%w: %v", errUsage, err))
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: certs takes no arguments, got %q", errUsage, fs.Args())
	}
	t, err := loadTopology(*topo)
	if err != nil {
		return err
	}
	spec := roles.Spec(t, splitList(*globals))
	spec.Hosts = splitList(*hosts)
	allHosts := strings.Join(append([]string{"localhost", "127.0.0.1"}, spec.Hosts...), ", ")
	if err := identity.GenerateMesh(*dir, spec); err == nil {
		fmt.Fprintf(stdout, "created %s: CA, NATS server certificate (%s), keys for 1 operator, %d global nodes, %d regions, %d clients\n",
			*dir, allHosts, len(spec.Globals), len(spec.Regions), t.Population())
	} else if !*keep || !errors.Is(err, identity.ErrHaveCA) {
		return err
	} else if err := identity.CheckMesh(*dir, spec); err != nil {
		return fmt.Errorf("certs --keep: %w", err)
	} else {
		fmt.Fprintf(stdout, "kept the secrets in %s: they have keys for the topology's identities and a certificate for %s\n", *dir, allHosts)
	}
	if *leafSites != "" {
		if err := leafCredentials(*dir, *leafSites, t, stdout); err != nil {
			return err
		}
	}
	if *atRest != "" {
		msg, err := writeKeyFile(*atRest)
		if err != nil {
			return fmt.Errorf("certs --at-rest-key: %w", err)
		}
		fmt.Fprintln(stdout, msg)
	}
	if *natsConf != "" {
		return writeNATSConf(*natsConf, *dir, t.Job, *natsStore, splitList(*natsRoutes), stdout)
	}
	fmt.Fprintf(stdout, "start the server with: strata nats --secrets %s --topology FILE; every role takes --secrets %s\n", *dir, *dir)
	return nil
}

// leafCredentials makes (or, when present, checks) the leaf-node
// credentials of each site of spec (REGION[=HOST[+HOST...]], comma-separated).
// A new site's credentials orphan nothing, so --keep adds them.
func leafCredentials(dir, spec string, t *topology.Topology, stdout io.Writer) error {
	for _, site := range splitList(spec) {
		region, hostList, _ := strings.Cut(site, "=")
		if !slices.ContainsFunc(t.Regions, func(r topology.Region) bool { return r.ID == region }) {
			return fmt.Errorf("%w: --leaf-sites %q: the topology has no region %q", errUsage, site, region)
		}
		var hosts []string
		for _, h := range strings.Split(hostList, "+") {
			if h = strings.TrimSpace(h); h != "" {
				hosts = append(hosts, h)
			}
		}
		if _, err := identity.LoadKey(dir, identity.KindLeaf, region); err == nil {
			if err := identity.CheckLeaf(dir, region, hosts); err != nil {
				return fmt.Errorf("certs --leaf-sites: %w", err)
			}
			fmt.Fprintf(stdout, "kept the leaf-node credentials of site %s\n", region)
			continue
		}
		if err := identity.AddLeaf(dir, region, hosts); err != nil {
			return fmt.Errorf("certs --leaf-sites: %w", err)
		}
		fmt.Fprintf(stdout, "leaf node of site %s: key %s, certificate %s (valid for %s)\n", region,
			filepath.Join(dir, "keys", "leaf-"+region+".nk"), filepath.Join(dir, "leaf-"+region+".pem"),
			strings.Join(append([]string{identity.LeafHost(region)}, hosts...), ", "))
	}
	return nil
}

// writeNATSConf renders the nats-server config of the secrets in dir and
// writes it unless the file already holds exactly that.
func writeNATSConf(path, dir, job, store string, routes []string, stdout io.Writer) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	pub, err := identity.LoadPublic(dir)
	if err != nil {
		return err
	}
	if len(routes) > 0 {
		cert, err := identity.ServerCert(dir)
		if err != nil {
			return err
		}
		if !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
			return fmt.Errorf("certs --nats-routes: the server certificate in %s predates cluster routes (servers present it to each other, which needs client-auth usage): create the secrets anew", dir)
		}
	}
	conf, err := mesh.RenderNATSConf(mesh.NATSConf{Job: job, Secrets: abs, Identities: pub, StoreDir: store, Routes: routes})
	if err != nil {
		return fmt.Errorf("certs --nats-conf: %w", err)
	}
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, conf) {
		fmt.Fprintf(stdout, "%s is up to date (%d NATS users)\n", path, len(pub))
		return nil
	}
	// Written aside and renamed, so a server (re)starting meanwhile never
	// reads half a file.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, conf, 0o644); err != nil {
		return fmt.Errorf("certs --nats-conf: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("certs --nats-conf: %w", err)
	}
	fmt.Fprintf(stdout, "wrote %s: nats-server config with TLS and %d NATS users (run nats-server -c %s)\n", path, len(pub), path)
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

// runEnroll creates a client (or node) identity and registers it with a
// running global tier through raft (the leader applies it).
func runEnroll(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("enroll", flag.ContinueOnError)
	fs.SetOutput(stderr)
	client := fs.String("client", "", "new client id (required unless --node)")
	node := fs.String("node", "", "enrol a node instead: region:ID or global:ID (a region node's ID is its region)")
	region := fs.String("region", "", "the client's region (required)")
	budget := fs.Float64("budget", 0, "public ε the client consents to spend (default: the topology's budget)")
	purpose := fs.String("purpose", "", "purpose the client consents to (recorded in the ledger)")
	secrets := fs.String("secrets", "./strata-secrets", "secrets dir: the client's key is written here (0600) and the operator key authenticates the request")
	natsURL := fs.String("nats", "nats://127.0.0.1:4222", "NATS URL of the mesh")
	topo := fs.String("topology", "", "topology YAML (default: the built-in one)")
	if err := fs.Parse(args); err != nil {
		return helpOK(fmt.Errorf("%w: %v", errUsage, err))
	}
	if *node != "" {
		return enrollNode(ctx, *node, *secrets, *natsURL, stdout)
	}
	if *client == "" || *region == "" {
		return fmt.Errorf("%w: --client and --region are required (or --node region:ID | global:ID)", errUsage)
	}
	t, err := loadRegionTopology(*topo, *region)
	if err != nil {
		return err
	}
	if *budget == 0 {
		*budget = t.Privacy.Budget
	}
	k, err := identity.AddClient(*secrets, *client, *region)
	if err != nil {
		return err
	}
	req := global.EnrollRequest{Purpose: *purpose, Clients: []ledger.Enrollment{{ID: *client, Region: *region, Budget: *budget, PubKey: k.Public()}}}
	if err := operatorRequest(ctx, *natsURL, *secrets, req); err != nil {
		return fmt.Errorf("enrol %s: %w (its key stays in %s)", *client, err, *secrets)
	}
	fmt.Fprintf(stdout, "client %s enrolled in region %s with key %s (budget ε %.4g); its key is in %s\n", *client, *region, k.Public(), *budget, *secrets)
	fmt.Fprintln(stdout, "restart (or reload) the NATS server with the same --secrets so the new client can connect")
	return nil
}

func enrollNode(ctx context.Context, spec, secrets, url string, stdout io.Writer) error {
	kind, id, ok := strings.Cut(spec, ":")
	if !ok || id == "" || kind != identity.KindRegion && kind != identity.KindGlobal {
		return fmt.Errorf("%w: --node %q: want region:ID or global:ID", errUsage, spec)
	}
	region := ""
	if kind == identity.KindRegion {
		region = id
	}
	k, err := identity.Add(secrets, kind, id, region)
	if err != nil {
		return err
	}
	req := global.EnrollRequest{Nodes: []ledger.Node{{ID: id, Kind: kind, PubKey: k.Public()}}}
	if err := operatorRequest(ctx, url, secrets, req); err != nil {
		return fmt.Errorf("enrol %s %s: %w (its key stays in %s)", kind, id, err, secrets)
	}
	fmt.Fprintf(stdout, "%s %s enrolled with key %s; its key is in %s\n", kind, id, k.Public(), secrets)
	return nil
}

// operatorDialer connects as the mesh's operator: over TLS with the
// operator key when secrets is set, in the clear otherwise (open servers).
func operatorDialer(url, secrets string) (mesh.Dialer, error) {
	d := mesh.Dialer{URL: url}
	if secrets == "" {
		return d, nil
	}
	tlsc, err := identity.ClientTLS(secrets)
	if err != nil {
		return d, err
	}
	op, err := identity.LoadKey(secrets, identity.KindOperator, "admin")
	if err != nil {
		return d, err
	}
	d.TLS, d.Key = tlsc, op
	return d, nil
}

// operatorRequest sends an enrol or withdraw request as the operator.
func operatorRequest(ctx context.Context, url, secrets string, req global.EnrollRequest) error {
	d, err := operatorDialer(url, secrets)
	if err != nil {
		return err
	}
	nc, err := d.Connect("strata-operator")
	if err != nil {
		return err
	}
	defer nc.Close()
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	return global.RequestEnroll(rctx, nc, req)
}
