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

// ServerConfig configures an embedded NATS server.
type ServerConfig struct {
	// StoreDir holds JetStream's file store; required.
	StoreDir string
	// Host and Port to listen on; Port 0 picks a free port, -1 disables
	// TCP listening (in-process connections only). Default 127.0.0.1:0.
	Host string
	Port int
	// MaxPayload bounds one message; default DefaultMaxPayload.
	MaxPayload int32
	// Logger receives the server's start-up line; nil is silent.
	Logger *slog.Logger
	// TLS, when set, is required of every TCP connection.
	TLS *tls.Config
	// Users, when set, are the only identities allowed in, each with its
	// subject permissions (see Authorization); nil leaves the server open.
	Users []*server.NkeyUser
}

// StartServer starts an embedded NATS server with JetStream on and waits
// until it accepts connections.
func StartServer(cfg ServerConfig) (*server.Server, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("mesh: ServerConfig.StoreDir is required (JetStream keeps model versions there)")
	}
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.MaxPayload == 0 {
		cfg.MaxPayload = DefaultMaxPayload
	}
	opts := &server.Options{
		ServerName: "strata",
		Host:       cfg.Host,
		Port:       cfg.Port,
		JetStream:  true,
		StoreDir:   filepath.Clean(cfg.StoreDir),
		MaxPayload: cfg.MaxPayload,
		// Simulated meshes open thousands of connections in one process.
		MaxConn:       1 << 20,
		MaxPending:    256 << 20,
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
