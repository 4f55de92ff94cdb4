// Package mesh is where NATS lives: the embedded server, connections,
// subjects and the model object store. The tiers talk only through what this
// package offers, so that one process (strata up) and many hosts behave alike.
package mesh

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
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
	return nil
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
	if err := leafOptions(cfg, opts); err != nil {
		return nil, err
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("mesh: nats server: %w", err)
	}
	s.Start()
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

// DefaultMaxPayload is the largest NATS message a mesh server takes unless
// configured otherwise (8 MiB).
const DefaultMaxPayload = 8 << 20
