// Package mesh is where NATS lives: the embedded server, connections,
// subjects and the model object store. The tiers talk only through what this
// package offers, so that one process (strata up) and many hosts behave alike.
package mesh

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/strata-fl/strata/identity"
)

// ErrConfig is wrapped by every error about a ServerConfig.
var ErrConfig = errors.New("mesh: invalid configuration")

// ServerConfig configures an embedded NATS server. Zero fields take the
// defaults given with each.
type ServerConfig struct {
	// StoreDir holds JetStream's file store (the model versions);
	// required, except on a leaf node (LeafOf), which runs no JetStream.
	StoreDir string
	// Host is the interface to listen on; default "127.0.0.1".
	Host string
	// Port is the TCP port to listen on: 0 (default) picks a free port, -1
	// disables TCP listening (in-process connections only); else 1..65535.
	Port int
	// MaxPayload bounds one message, in bytes; default DefaultMaxPayload
	// (8 MiB), at most 256 MiB (what the server buffers for one client).
	MaxPayload int32
	// Logger receives the server's start-up line; nil is silent.
	Logger *slog.Logger
	// TLS, when set, is required of every TCP connection; nil serves in
	// the clear.
	TLS *tls.Config
	// Users, when set, are the only identities allowed in, each with its
	// subject permissions (see Authorization); nil leaves the server open.
	Users []*server.NkeyUser
	// Cluster, when set, makes the server one of a NATS cluster with
	// JetStream clustered, so that a stream (the model store, with
	// Replicas 3) survives losing a server; nil runs it alone.
	Cluster *ClusterConfig
	// LeafListen, when set (HOST:PORT; port 0 picks a free one), opens a
	// leafnode listener: consortium sites' leaf nodes connect there, each
	// as a user of Users (its permissions, LeafPermissions, bound what the
	// link carries). LeafTLS, when set, is required of them (with client
	// certificates: identity.LeafHubTLS).
	LeafListen string
	LeafTLS    *tls.Config
	// LeafOf, when set, makes this server a site's leaf node of that hub;
	// it runs no JetStream (its clients reach the hub's). Users are then
	// the site's own clients (LeafUsers).
	LeafOf *LeafRemote
}

// ClusterConfig makes an embedded server one of a cluster. Every server
// of a cluster has the same Name and routes to the others; JetStream's
// meta group forms once a majority of them see each other.
type ClusterConfig struct {
	// ServerName is this server's name, unique in the cluster (JetStream
	// names its peers by it); required.
	ServerName string
	// Name is the cluster's name, the same on every server; default
	// "strata".
	Name string
	// Listen is host:port the server takes routes on; required.
	Listen string
	// Routes are the other servers' route URLs (nats-route://host:port);
	// at least one. Routes to this server's own Listen are ignored by
	// the NATS server, so every server may be given the same list.
	Routes []string
}

// routePing is how often a server pings its routes: a route that stops
// answering (a partition between servers) is dropped after a few missed
// pings, rather than after NATS's default of minutes.
const routePing = 2 * time.Second

// maxPending is how many bytes the server buffers for one slow client
// before it is cut off; a message may not be larger (ServerConfig.MaxPayload).
const maxPending = 256 << 20

// Validate names the field that is wrong. Zero fields are valid: they take
// their defaults.
func (c ServerConfig) Validate() error {
	if c.LeafListen != "" {
		if _, _, err := leafListen(c.LeafListen); err != nil {
			return err
		}
	}
	if c.LeafOf != nil {
		if _, err := c.LeafOf.urls(); err != nil {
			return err
		}
	}
	switch {
	case c.StoreDir == "" && c.LeafOf == nil:
		return fmt.Errorf("%w: ServerConfig.StoreDir is required (JetStream keeps model versions there)", ErrConfig)
	case c.LeafTLS != nil && c.LeafListen == "":
		return fmt.Errorf("%w: ServerConfig.LeafTLS is set without LeafListen (the leafnode listener it secures)", ErrConfig)
	case c.Port < -1 || c.Port > 65535:
		return fmt.Errorf("%w: ServerConfig.Port %d: want 0..65535, or -1 for in-process connections only", ErrConfig, c.Port)
	case c.MaxPayload < 0 || c.MaxPayload > maxPending:
		return fmt.Errorf("%w: ServerConfig.MaxPayload %d: want 1..%d bytes, or 0 for %d", ErrConfig, c.MaxPayload, maxPending, DefaultMaxPayload)
	}
	if c.Cluster != nil {
		if err := c.Cluster.validate(c); err != nil {
			return err
		}
	}
	return nil
}

func (c *ClusterConfig) validate(sc ServerConfig) error {
	switch {
	case c.ServerName == "":
		return fmt.Errorf("%w: ClusterConfig.ServerName is required (each server of a cluster needs its own name)", ErrConfig)
	case sc.Port < 0:
		return fmt.Errorf("%w: ClusterConfig with ServerConfig.Port -1: a cluster's servers need a client port", ErrConfig)
	case sc.TLS != nil:
		// The route listener would take the mesh's certificates but not
		// check its peers; rather than run routes weaker than clients,
		// refuse.
		return fmt.Errorf("%w: ClusterConfig with ServerConfig.TLS: routes between servers are in the clear, so a secured (TLS) mesh cannot be clustered yet; run one server or an open mesh", ErrConfig)
	case len(c.Routes) == 0:
		return fmt.Errorf("%w: ClusterConfig.Routes is empty: name the other servers' nats-route://HOST:PORT", ErrConfig)
	}
	if _, err := hostPort(c.Listen); err != nil {
		return fmt.Errorf("%w: ClusterConfig.Listen %q: %v (want HOST:PORT)", ErrConfig, c.Listen, err)
	}
	for _, r := range c.Routes {
		u, err := url.Parse(r)
		if err != nil || u.Scheme != "nats-route" || u.Port() == "" {
			return fmt.Errorf("%w: ClusterConfig.Routes: %q: want nats-route://HOST:PORT", ErrConfig, r)
		}
	}
	return nil
}

// hostPort splits HOST:PORT and checks the port.
func hostPort(s string) (int, error) {
	_, p, err := net.SplitHostPort(s)
	if err != nil {
		return 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 1 || port > 65535 {
		return 0, fmt.Errorf("port %q: want 1..65535", p)
	}
	return port, nil
}

// withDefaults returns a copy of c with zero fields set to their defaults.
func (c ServerConfig) withDefaults() ServerConfig {
	if c.Host == "" {
		c.Host = "127.0.0.1"
	}
	if c.MaxPayload == 0 {
		c.MaxPayload = DefaultMaxPayload
	}
	return c
}

// StartServer starts an embedded NATS server with JetStream on and waits
// until it accepts connections. A configuration that fails Validate is
// returned as that error.
func StartServer(cfg ServerConfig) (*server.Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	opts := &server.Options{
		ServerName: "strata",
		Host:       cfg.Host,
		Port:       cfg.Port,
		JetStream:  true,
		StoreDir:   filepath.Clean(cfg.StoreDir),
		MaxPayload: cfg.MaxPayload,
		// Simulated meshes open thousands of connections in one process.
		MaxConn:       1 << 20,
		MaxPending:    maxPending,
		NoSigs:        true,
		NoLog:         os.Getenv("STRATA_NATS_DEBUG") == "",
		Debug:         os.Getenv("STRATA_NATS_DEBUG") != "",
		DontListen:    cfg.Port < 0,
		WriteDeadline: 10 * time.Second,
	}
	if cfg.TLS != nil {
		opts.TLSConfig = cfg.TLS
		opts.TLS = true
		opts.TLSTimeout = 5
	}
	if cfg.Users != nil {
		opts.Nkeys = cfg.Users
	}
	if cfg.Port == 0 || cfg.Port < 0 {
		opts.Port = server.RANDOM_PORT
	}
	if c := cfg.Cluster; c != nil {
		opts.ServerName = c.ServerName
		host, _, _ := net.SplitHostPort(c.Listen)
		port, _ := hostPort(c.Listen)
		name := c.Name
		if name == "" {
			name = "strata"
		}
		opts.Cluster = server.ClusterOpts{Name: name, Host: host, Port: port, PingInterval: routePing, MaxPingsOut: 2}
		for _, r := range c.Routes {
			u, _ := url.Parse(r) // checked by Validate
			opts.Routes = append(opts.Routes, u)
		}
	}
	if err := leafOptions(cfg, opts); err != nil {
		return nil, err
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("mesh: nats server: %w", err)
	}
	s.Start()
	// A clustered server takes clients before JetStream's meta group has
	// elected a leader: until a majority of the servers are up and it
	// has, JetStream requests fail as temporarily unavailable.
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, errors.New("mesh: nats server did not become ready in 10s")
	}
	if cfg.Logger != nil {
		cfg.Logger.Info("nats server ready", "url", s.ClientURL(), "store", cfg.StoreDir)
	}
	return s, nil
}

// Dialer opens connections to one NATS deployment: either an in-process
// server (no TCP) or a URL, over TLS when TLS is set, authenticated by Key
// when set (the identity's NKey; its replies get their own inbox prefix).
type Dialer struct {
	Server *server.Server // in-process when set
	URL    string
	// OnConnect, when set, is told of every connection opened (metrics
	// sum the bytes of a fleet's many connections through it).
	OnConnect func(*nats.Conn)
	TLS       *tls.Config
	Key       *identity.Key
}

// As returns a dialer that connects as the given identity (nil key: as d).
func (d Dialer) As(k *identity.Key) Dialer {
	if k != nil {
		d.Key = k
	}
	return d
}

// Connect opens a named connection. Handlers never block the connection's
// reader: callers push into bounded queues they own.
func (d Dialer) Connect(name string) (*nats.Conn, error) { return d.connect(name) }

func (d Dialer) connect(name string, extra ...nats.Option) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(200 * time.Millisecond),
		nats.Timeout(10 * time.Second),
		// A server that stops answering (cut off from this client, or
		// from the rest of its cluster with this client) is left for
		// another of the URLs after clientPing·(clientPingsOut+1), not
		// NATS's default of minutes.
		nats.PingInterval(clientPing),
		nats.MaxPingsOutstanding(clientPingsOut),
	}
	if d.TLS != nil {
		opts = append(opts, nats.Secure(d.TLS.Clone()))
	}
	if d.Key != nil {
		opts = append(opts, nats.Nkey(d.Key.Public(), d.Key.SignNonce), nats.CustomInboxPrefix(InboxPrefix(d.Key.Kind, d.Key.ID)))
	}
	opts = append(opts, extra...)
	url := d.URL
	if d.Server != nil {
		opts = append(opts, nats.InProcessServer(d.Server))
		url = d.Server.ClientURL()
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("mesh: connect %s: %w", name, err)
	}
	if d.OnConnect != nil {
		d.OnConnect(nc)
	}
	return nc, nil
}

// clientPing and clientPingsOut are how often a connection pings its
// server and how many unanswered pings make it reconnect.
const (
	clientPing     = 3 * time.Second
	clientPingsOut = 2
)

// DefaultMaxPayload is the largest NATS message a mesh server takes unless
// configured otherwise (8 MiB).
const DefaultMaxPayload = 8 << 20
