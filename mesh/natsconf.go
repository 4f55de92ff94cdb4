package mesh

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/strata-fl/strata/identity"
)

// NATSConf describes the nats-server binary's configuration for a secured
// mesh: what `strata nats --secrets` sets up in process, written as a
// config file so a cluster of stock nats-servers enforces the same TLS and
// per-role permissions.
type NATSConf struct {
	// Job names the subjects the permissions are generated for.
	Job string
	// Secrets is the secrets dir as the server will see it (absolute): the
	// config names its certificate, key and CA there.
	Secrets string
	// Identities are the users admitted (public.json of the secrets dir).
	Identities []identity.Entry
	// StoreDir is JetStream's store; required.
	StoreDir string
	// Port and HTTPPort are the client and monitoring ports (default 4222, 8222).
	Port, HTTPPort int
	// Routes are the cluster's servers as host:port (this one included; a
	// server skips itself). None: a single server without a cluster block.
	// With routes, each server takes its name from the environment
	// variable NameEnv, so that one file serves the whole cluster.
	Routes []string
	// ClusterName and ClusterPort (default strata, 6222) when Routes is set.
	ClusterName string
	ClusterPort int
	// LeafPort, when set, opens a leafnode port for consortium sites'
	// leaf nodes (`strata nats --leaf-of`): TLS with the server
	// certificate, a leaf certificate of the mesh CA required of each, the
	// site's leaf key its user (LeafPermissions); JetStream then takes the
	// domain HubDomain, through which the sites' clients reach the store.
	LeafPort int
}

// NameEnv is the environment variable a clustered server's name comes from.
const NameEnv = "STRATA_NATS_NAME"

// RenderNATSConf writes the config file of c. Clients must come over TLS
// with the server certificate of the secrets dir and authenticate with an
// NKey of Identities; each gets its role's permissions (Authorization).
// Routes between the servers use TLS too, verified both ways against the
// mesh CA, so a route cannot be opened by anything without a certificate
// of that CA. The monitoring port stays plain HTTP (healthchecks read it).
func RenderNATSConf(c NATSConf) ([]byte, error) {
	if c.StoreDir == "" {
		return nil, errors.New("mesh: nats config: StoreDir is required (JetStream keeps model versions there)")
	}
	if !filepath.IsAbs(c.Secrets) {
		return nil, fmt.Errorf("mesh: nats config: secrets dir %q must be an absolute path (the server resolves it from its own working dir)", c.Secrets)
	}
	if len(c.Identities) == 0 {
		return nil, fmt.Errorf("mesh: nats config: no identities in %s: create them with `strata certs`", c.Secrets)
	}
	users, err := Authorization(c.Job, c.Identities)
	if err != nil {
		return nil, err
	}
	if c.Port == 0 {
		c.Port = 4222
	}
	if c.HTTPPort == 0 {
		c.HTTPPort = 8222
	}
	if c.ClusterName == "" {
		c.ClusterName = "strata"
	}
	if c.ClusterPort == 0 {
		c.ClusterPort = 6222
	}
	file := func(name string) string { return quote(filepath.Join(c.Secrets, name)) }
	var b bytes.Buffer
	fmt.Fprintf(&b, "# nats-server configuration of the Strata mesh of job %s: TLS and one NKey\n", c.Job)
	fmt.Fprintf(&b, "# user per identity of %s, with its role's permissions.\n", filepath.Join(c.Secrets, "public.json"))
	b.WriteString("# Rendered by `strata certs --nats-conf`; render it again after enrolling\n# identities, then reload the servers (SIGHUP).\n")
	if len(c.Routes) > 0 {
		// A clustered JetStream server needs its name in the file, not only
		// on the command line (-n): a reload reads the file alone.
		fmt.Fprintf(&b, "# Each server of the cluster takes its name from $%s.\nserver_name: $%s\n", NameEnv, NameEnv)
	}
	fmt.Fprintf(&b, "port: %d\nhttp_port: %d\n", c.Port, c.HTTPPort)
	// As the server `strata up` embeds: model chunks and partials of large
	// models travel in messages up to 8 MiB.
	b.WriteString("max_payload: 8MB\nmax_pending: 256MB\nwrite_deadline: \"10s\"\n")
	if c.LeafPort > 0 {
		fmt.Fprintf(&b, "jetstream {\n  store_dir: %s\n  domain: %s\n}\n", quote(c.StoreDir), quote(HubDomain))
	} else {
		fmt.Fprintf(&b, "jetstream {\n  store_dir: %s\n}\n", quote(c.StoreDir))
	}
	// A loaded machine takes more than the default 2 s for a handshake.
	fmt.Fprintf(&b, "tls {\n  cert_file: %s\n  key_file: %s\n  timeout: 10\n}\n", file("server.pem"), file("server.key"))
	if len(c.Routes) > 0 {
		// no_advertise: clients are given every server's name (the names
		// the certificate is for); advertised addresses would be the
		// servers' private IPs, which neither verify nor reach from outside.
		fmt.Fprintf(&b, "cluster {\n  name: %s\n  port: %d\n  no_advertise: true\n", quote(c.ClusterName), c.ClusterPort)
		fmt.Fprintf(&b, "  tls {\n    cert_file: %s\n    key_file: %s\n    ca_file: %s\n    timeout: 10\n  }\n", file("server.pem"), file("server.key"), file("ca.pem"))
		b.WriteString("  routes: [\n")
		for _, r := range c.Routes {
			if r == "" || strings.Contains(r, "://") || !strings.Contains(r, ":") {
				return nil, fmt.Errorf("mesh: nats config: route %q: want host:port", r)
			}
			fmt.Fprintf(&b, "    %s\n", quote("nats-route://"+r))
		}
		b.WriteString("  ]\n}\n")
	}
	if c.LeafPort > 0 {
		// As the embedded hub's leafnode listener (LeafHubTLS), and as
		// quickly aware of a silent site (leafOptions).
		fmt.Fprintf(&b, "leafnodes {\n  port: %d\n  tls {\n    cert_file: %s\n    key_file: %s\n    ca_file: %s\n    verify: true\n    timeout: 10\n  }\n}\n",
			c.LeafPort, file("server.pem"), file("server.key"), file("ca.pem"))
		b.WriteString("ping_interval: \"2s\"\nping_max: 3\n")
	}
	b.WriteString("authorization {\n  timeout: 10\n  users: [\n")
	for _, u := range users {
		fmt.Fprintf(&b, "    {nkey: %s, permissions: %s%s}\n", quote(u.Nkey), permissions(u.Permissions), connectionTypes(u.AllowedConnectionTypes))
	}
	b.WriteString("  ]\n}\n")
	return b.Bytes(), nil
}

func permissions(p *server.Permissions) string {
	var parts []string
	side := func(name string, sp *server.SubjectPermission) {
		if sp == nil {
			return
		}
		var s []string
		if len(sp.Allow) > 0 {
			s = append(s, "allow: "+quoteList(sp.Allow))
		}
		if len(sp.Deny) > 0 {
			s = append(s, "deny: "+quoteList(sp.Deny))
		}
		parts = append(parts, name+": {"+strings.Join(s, ", ")+"}")
	}
	side("publish", p.Publish)
	side("subscribe", p.Subscribe)
	if r := p.Response; r != nil {
		parts = append(parts, fmt.Sprintf("allow_responses: {max: %d, expires: %s}", r.MaxMsgs, quote(r.Expires.String())))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// connectionTypes renders a user's allowed_connection_types (none: any).
func connectionTypes(m map[string]struct{}) string {
	if len(m) == 0 {
		return ""
	}
	ts := make([]string, 0, len(m))
	for t := range m {
		ts = append(ts, t)
	}
	sort.Strings(ts)
	return ", allowed_connection_types: " + quoteList(ts)
}

func quoteList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = quote(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// quote writes a double-quoted string the config parser reads back as is:
// quoted, a '$' starts no variable and '>' or '*' no special token.
func quote(s string) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return strings.TrimSuffix(b.String(), "\n")
}
