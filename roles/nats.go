package roles

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/strata-fl/strata/mesh"
)

// NATSConfig configures the NATS server a mesh runs over.
type NATSConfig struct {
	// StoreDir holds JetStream's file store (model versions); required.
	StoreDir string
	// Host and Port to listen on: Port 0 picks a free port, -1 serves
	// in-process connections only. Default 127.0.0.1:0.
	Host string
	Port int
	// MaxPayload bounds one message; default mesh.DefaultMaxPayload.
	MaxPayload int32
	// Secrets, when set, is the secrets dir of `strata certs`: the server
	// serves TLS and admits only its identities, each with its role's
	// permissions for Job. Empty leaves the server open (unsigned jobs).
	Secrets string
	Job     string
	// Cluster, when set, makes this server one of a NATS cluster
	// (JetStream clustered; see mesh.ClusterConfig): its ServerName,
	// route Listen address and the other servers' Routes. Not with
	// Secrets (routes would be in the clear).
	Cluster *mesh.ClusterConfig
	Logger  *slog.Logger
	// LeafListen, when set (HOST:PORT), opens the hub's leafnode listener
	// for consortium sites (mesh.ServerConfig.LeafListen); with Secrets,
	// each site comes with its leaf certificate and key.
	LeafListen string
	// LeafOf, when set, runs this server as site LeafRegion's leaf node of
	// the hub at that URL (its leafnode listener): no JetStream; with
	// Secrets it admits only the site's identities and connects with the
	// site's leaf credentials (mesh.SecuredLeaf).
	LeafOf     string
	LeafRegion string
}

// Validate names the field that is wrong.
func (c NATSConfig) Validate() error {
	switch {
	case c.StoreDir == "" && c.LeafOf == "":
		return fmt.Errorf("%w: NATSConfig.StoreDir is required (JetStream keeps model versions there)", ErrConfig)
	case c.LeafOf != "" && c.LeafListen != "":
		return fmt.Errorf("%w: NATSConfig.LeafOf and LeafListen are both set: a site's leaf node connects to the hub, only the hub listens for leaf nodes", ErrConfig)
	case c.LeafOf != "" && c.Secrets != "" && c.LeafRegion == "":
		return fmt.Errorf("%w: NATSConfig.LeafRegion is required with LeafOf and Secrets (the site's leaf credentials are its region's)", ErrConfig)
	case c.Secrets != "" && c.Job == "":
		return fmt.Errorf("%w: NATSConfig.Job is required with Secrets (permissions name the job's subjects)", ErrConfig)
	case c.Port < -1 || c.Port > 65535:
		return fmt.Errorf("%w: NATSConfig.Port %d: want 0..65535, or -1 for in-process only", ErrConfig, c.Port)
	case c.Cluster != nil && c.Secrets != "":
		return fmt.Errorf("%w: NATSConfig.Cluster with Secrets: routes between servers are in the clear, so a secured mesh cannot be clustered yet", ErrConfig)
	}
	if c.Cluster != nil {
		if err := (mesh.ServerConfig{StoreDir: c.StoreDir, Port: c.Port, Cluster: c.Cluster}).Validate(); err != nil {
			return fmt.Errorf("%w: NATSConfig.Cluster: %v", ErrConfig, err)
		}
	}
	return nil
}

// NATS is a running NATS server.
type NATS struct {
	Server *server.Server
	// Operator connects as the secrets' operator ("admin") over TLS, or
	// in the clear to an open server.
	Operator mesh.Dialer
	// Users is how many identities the server admits (0: open).
	Users int
}

// StartNATS starts the server and waits until it accepts connections.
func StartNATS(cfg NATSConfig) (*NATS, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	sc := mesh.ServerConfig{StoreDir: cfg.StoreDir, Host: cfg.Host, Port: cfg.Port, MaxPayload: cfg.MaxPayload, Cluster: cfg.Cluster, Logger: cfg.Logger,
		LeafListen: cfg.LeafListen}
	op := mesh.Dialer{}
	var err error
	switch {
	case cfg.LeafOf != "" && cfg.Secrets != "":
		sc, op, err = mesh.SecuredLeaf(sc, cfg.Secrets, cfg.Job, cfg.LeafRegion, cfg.LeafOf)
	case cfg.LeafOf != "":
		sc.LeafOf = &mesh.LeafRemote{URL: cfg.LeafOf}
	case cfg.Secrets != "":
		sc, op, err = mesh.Secured(sc, cfg.Secrets, cfg.Job)
	}
	if err != nil {
		return nil, err
	}
	s, err := mesh.StartServer(sc)
	if err != nil {
		return nil, err
	}
	op.Server = s
	op.URL = s.ClientURL()
	return &NATS{Server: s, Operator: op, Users: len(sc.Users)}, nil
}

// Run serves until ctx ends, then shuts the server down.
func (n *NATS) Run(ctx context.Context) error {
	<-ctx.Done()
	n.Close()
	return nil
}

// Close shuts the server down and waits for it.
func (n *NATS) Close() {
	n.Server.Shutdown()
	n.Server.WaitForShutdown()
}
