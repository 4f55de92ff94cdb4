package mesh

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/strata-fl/strata/identity"
	"github.com/strata-fl/strata/topology"
)

// LeafPermissions are what a consortium site's leaf node may carry across
// its link to the hub, written from the leaf's side (publish: site → hub;
// subscribe: hub → site). The site runs region R's aggregator and R's
// clients; so the link carries
//
//	site → hub   R's partials and registry requests, replies to the
//	             global tier's and operators' requests (round and ping
//	             acknowledgements: their inboxes, requesters), and its
//	             clients' read-only JetStream calls on the model bucket,
//	             through the hub's JetStream domain (HubDomain)
//	hub → site   R's rounds, pings and client invitations, the end of the
//	             job, and replies to R's aggregator and R's clients (their
//	             own inboxes, one per client listed)
//
// and nothing else: no other region's subjects either way, and not R's
// client updates or secure-aggregation messages, which stay on the site
// (only R's aggregator reads them). clients are R's client IDs.
//
// Replies are allowed by inbox, not per request: a site's leaf forwards
// only what the permissions the hub sent it allow, and nats-server's
// allow_responses does not reach that side. So a rogue site could publish
// into a global node's inbox; it cannot read it, and a reply it forged
// would have to guess the random token of a request it never saw.
func LeafPermissions(job, region string, clients, requesters []string) (*server.Permissions, error) {
	base, err := join(job, "", "")
	if err != nil {
		return nil, err
	}
	base = strings.TrimSuffix(base, ".")
	if err := topology.ValidToken(region); err != nil {
		return nil, fmt.Errorf("mesh: leaf node region: %w", err)
	}
	sub := []string{
		base + ".round." + region, base + ".ping." + region, base + ".invite." + region + ".*", base + ".done",
		InboxPrefix(identity.KindRegion, region) + ".>",
	}
	for _, c := range clients {
		if err := validClientID(c); err != nil {
			return nil, err
		}
		sub = append(sub, InboxPrefix(identity.KindClient, c)+".>")
	}
	pub := append([]string{base + ".partial." + region, base + ".registry." + region}, modelReads(job, "$JS."+HubDomain+".API")...)
	for _, r := range requesters {
		pub = append(pub, r+".>")
	}
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pub},
		Subscribe: &server.SubjectPermission{Allow: sub},
	}, nil
}

// LeafUsers are the identities a site's leaf node admits from its own
// clients: the site's region, that region's clients and the operators,
// each with its role's permissions. The global nodes and other regions
// connect to the hub, not to a site.
func LeafUsers(job, region string, ids []identity.Entry) ([]*server.NkeyUser, error) {
	var local []identity.Entry
	for _, e := range ids {
		switch {
		case e.Kind == identity.KindOperator,
			e.Kind == identity.KindRegion && e.ID == region,
			e.Kind == identity.KindClient && e.Region == region:
			local = append(local, e)
		}
	}
	return Authorization(job, local)
}

// HubDomain is the JetStream domain of a hub that has a leafnode
// listener. Sites' leaf nodes run no JetStream; their clients reach the
// hub's model store through this domain (strata edge --js-domain hub).
const HubDomain = "hub"

// LeafRemote makes a server a site's leaf node of a hub.
type LeafRemote struct {
	// URL is the hub's leafnode listener: nats-leaf://host:port or
	// tls://host:port (comma-separated for a hub cluster).
	URL string
	// TLS, when set, secures the link: the leaf verifies the hub against
	// its RootCAs and presents its Certificates.
	TLS *tls.Config
	// Key, when set, authenticates the leaf to the hub (the site's leaf
	// NKey: identity.KindLeaf).
	Key *identity.Key
}

func (r *LeafRemote) urls() ([]*url.URL, error) {
	var out []*url.URL
	for _, s := range strings.Split(r.URL, ",") {
		s = strings.TrimSpace(s)
		u, err := url.Parse(s)
		if err != nil || u.Host == "" || u.Port() == "" {
			return nil, fmt.Errorf("%w: leaf remote %q: want nats-leaf://HOST:PORT (the hub's leafnode port)", ErrConfig, s)
		}
		switch u.Scheme {
		case "nats-leaf", "tls", "nats":
		default:
			return nil, fmt.Errorf("%w: leaf remote %q: scheme %q, want nats-leaf, tls or nats", ErrConfig, s, u.Scheme)
		}
		out = append(out, u)
	}
	return out, nil
}

// leafListen splits a LeafListen address.
func leafListen(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%w: ServerConfig.LeafListen %q: want HOST:PORT (the leafnode port, e.g. 0.0.0.0:7422): %v", ErrConfig, addr, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("%w: ServerConfig.LeafListen %q: port want 0..65535 (0 picks a free one)", ErrConfig, addr)
	}
	return host, port, nil
}

// LeafURL is the address leaf nodes dial to reach s's leafnode listener
// (the port it picked when LeafListen asked for 0).
func LeafURL(s *server.Server) (string, error) {
	v, err := s.Varz(nil)
	if err != nil {
		return "", fmt.Errorf("mesh: leafnode listener: %w", err)
	}
	if v.LeafNode.Port == 0 {
		return "", fmt.Errorf("mesh: the server has no leafnode listener")
	}
	host := v.LeafNode.Host
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return "nats-leaf://" + net.JoinHostPort(host, strconv.Itoa(v.LeafNode.Port)), nil
}

// leafOptions sets the leafnode side of opts: a listener (a hub), or a
// remote (a site's leaf, without JetStream).
func leafOptions(cfg ServerConfig, opts *server.Options) error {
	if cfg.LeafListen != "" || cfg.LeafOf != nil {
		// A cut WAN link leaves a silent connection: both ends find out
		// within 3 missed pings of 2 s (nats-server's default is minutes),
		// and the hub then stops routing the site's interest into it.
		opts.PingInterval, opts.MaxPingsOut = 2*time.Second, 3
	}
	if cfg.LeafListen != "" {
		host, port, err := leafListen(cfg.LeafListen)
		if err != nil {
			return err
		}
		if port == 0 {
			port = server.RANDOM_PORT
		}
		opts.LeafNode.Host, opts.LeafNode.Port = host, port
		opts.JetStreamDomain = HubDomain
		if cfg.LeafTLS != nil {
			opts.LeafNode.TLSConfig = cfg.LeafTLS
			opts.LeafNode.TLSTimeout = 10
		}
	}
	if r := cfg.LeafOf; r != nil {
		urls, err := r.urls()
		if err != nil {
			return err
		}
		remote := &server.RemoteLeafOpts{URLs: urls}
		if r.TLS != nil {
			remote.TLS, remote.TLSConfig, remote.TLSTimeout = true, r.TLS.Clone(), 10
		}
		if r.Key != nil {
			// The server signs the hub's nonce with the seed itself.
			remote.Nkey = string(r.Key.Seed())
		}
		opts.LeafNode.Remotes = []*server.RemoteLeafOpts{remote}
		// Each site's server needs a name of its own: the hub takes a leaf
		// connection from a server name it already has for a stale one
		// and drops the older, so same-named sites would evict each other.
		opts.ServerName = "strata-leaf-" + leafName(r.Key)
		// A cut link is retried every second, so a site is back soon
		// after its link heals.
		opts.LeafNode.ReconnectInterval = time.Second
		opts.JetStream = false
		opts.StoreDir = ""
	}
	return nil
}

// leafName names a site's leaf server: by its site, or at random for a
// leaf without a key.
func leafName(k *identity.Key) string {
	if k != nil {
		return k.ID
	}
	var b [6]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}

// SecuredLeaf configures a site's leaf node the way `strata nats --leaf-of`
// runs one: it serves the site's clients over TLS with the site's leaf
// certificate, admits only the site's identities (LeafUsers), and connects
// to the hub at hubURL over TLS, presenting that certificate and the
// site's leaf key. It also returns a dialer that connects to it as the
// operator.
func SecuredLeaf(cfg ServerConfig, secrets, job, region, hubURL string) (ServerConfig, Dialer, error) {
	pub, err := identity.LoadPublic(secrets)
	if err != nil {
		return cfg, Dialer{}, err
	}
	if cfg.Users, err = LeafUsers(job, region, pub); err != nil {
		return cfg, Dialer{}, err
	}
	ltls, err := identity.LeafTLS(secrets, region)
	if err != nil {
		return cfg, Dialer{}, err
	}
	key, err := identity.LoadKey(secrets, identity.KindLeaf, region)
	if err != nil {
		return cfg, Dialer{}, err
	}
	cfg.TLS = &tls.Config{Certificates: ltls.Certificates, MinVersion: tls.VersionTLS12}
	cfg.LeafOf = &LeafRemote{URL: hubURL, TLS: ltls, Key: key}
	ctls, err := identity.ClientTLS(secrets)
	if err != nil {
		return cfg, Dialer{}, err
	}
	op, err := identity.LoadKey(secrets, identity.KindOperator, "admin")
	if err != nil {
		return cfg, Dialer{}, err
	}
	return cfg, Dialer{TLS: ctls, Key: op}, nil
}
