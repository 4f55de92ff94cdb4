package roles

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/strata-fl/strata/identity"
	"github.com/strata-fl/strata/mesh"
	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/observe/metrics"
	"github.com/strata-fl/strata/regional"
	"github.com/strata-fl/strata/topology"
)

// RegionalConfig configures one regional aggregator.
type RegionalConfig struct {
	// Region is the region's id in the topology; required.
	Region string
	// Dialer connects to NATS as the region (Key); required.
	Dialer mesh.Dialer
	// Key signs the region's partials; a signed job needs it.
	Key      *identity.Key
	Topology *topology.Topology
	// Rand is the noise source; nil: crypto/rand.
	Rand io.Reader
	// QueueSize bounds the messages waiting for the aggregator; default
	// regional's (4096).
	QueueSize int
	// SizeMemory sets this process's Go memory limit to what the region
	// holds at each round's dimension (regional.MemoryLimit), unless
	// GOMEMLIMIT is set: for a process that runs this one region.
	SizeMemory bool
	Logger     *slog.Logger
}

// Validate names the field that is wrong.
func (c RegionalConfig) Validate() error {
	switch {
	case c.Topology == nil:
		return fmt.Errorf("%w: RegionalConfig.Topology is required", ErrConfig)
	case !hasRegion(c.Topology, c.Region):
		return fmt.Errorf("%w: RegionalConfig.Region %q is not in the topology (regions: %v)", ErrConfig, c.Region, regionIDs(c.Topology))
	case c.QueueSize < 0:
		return fmt.Errorf("%w: RegionalConfig.QueueSize %d: want ≥ 1 (0 means the default)", ErrConfig, c.QueueSize)
	case c.Topology.Security.Signed() && c.Key == nil:
		return fmt.Errorf("%w: RegionalConfig.Key: the job is signed and region %s has no key (strata certs makes one)", ErrConfig, c.Region)
	}
	return nil
}

// Regional is a running regional aggregator.
type Regional struct {
	cfg     RegionalConfig
	conn    *nats.Conn
	runner  *regional.Runner
	metrics *metrics.Regional
	once    sync.Once
}

// NewRegional connects the region and prepares its runner.
func NewRegional(cfg RegionalConfig) (*Regional, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	nc, err := cfg.Dialer.As(cfg.Key).Connect("regional-" + cfg.Region)
	if err != nil {
		return nil, err
	}
	rc := metrics.NewRegional(cfg.Region, nc)
	t := cfg.Topology
	rcfg := regional.Config{Job: t.Job, Region: cfg.Region, Conn: nc, Rand: cfg.Rand, Logger: cfg.Logger.With("tier", "regional"),
		StreamSlots: t.DataPath.StreamSlots, StreamWindow: t.DataPath.StreamWindow, OnPartial: rc.OnPartial, Key: cfg.Key, QueueSize: cfg.QueueSize}
	if cfg.SizeMemory {
		rcfg.OnRoundOpen = memoryLimit(t.DataPath.StreamSlots, cfg.Logger)
	}
	r, err := regional.NewRunner(rcfg)
	if err != nil {
		nc.Close()
		return nil, err
	}
	rc.SetRunner(r)
	return &Regional{cfg: cfg, conn: nc, runner: r, metrics: rc}, nil
}

// Runner is the region's aggregator.
func (r *Regional) Runner() *regional.Runner { return r.runner }

// Metrics is the region's Prometheus collector.
func (r *Regional) Metrics() *metrics.Regional { return r.metrics }

// Run aggregates rounds until the job is done or ctx ends, then closes the
// region's connection.
func (r *Regional) Run(ctx context.Context) error {
	defer r.Close()
	return r.runner.Run(ctx)
}

// Close closes the region's connection (Run does when it returns).
func (r *Regional) Close() { r.once.Do(func() { r.conn.Drain() }) }

// memoryLimit sizes this process's soft memory limit to what its one
// region holds for each round's dimension and encoding
// (regional.MemoryLimit), so that its RSS stays near the region's O(d)
// bound instead of doubling between collections. A limit the operator set
// (GOMEMLIMIT) stands.
func memoryLimit(slots int, logger *slog.Logger) func(wire.RoundOpen) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return nil
	}
	dim, elem := 0, 0
	return func(o wire.RoundOpen) {
		if e := wire.ElemBytes(o.Encoding); o.Dim == dim && e == elem {
			return
		}
		dim, elem = o.Dim, wire.ElemBytes(o.Encoding)
		limit := regional.MemoryLimit(dim, slots, elem)
		debug.SetMemoryLimit(limit)
		logger.Info("memory limit set for the round's dimension", "dim", dim, "limit_mib", limit>>20)
	}
}

func hasRegion(t *topology.Topology, id string) bool {
	for _, r := range t.Regions {
		if r.ID == id {
			return true
		}
	}
	return false
}

func regionIDs(t *topology.Topology) []string {
	var ids []string
	for _, r := range t.Regions {
		ids = append(ids, r.ID)
	}
	return ids
}
