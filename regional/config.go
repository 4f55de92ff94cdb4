package regional

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/strata-fl/strata/identity"
	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/topology"
)

// Defaults of Config's optional fields.
const (
	// DefaultQueueSize bounds the messages waiting for a runner's loop.
	DefaultQueueSize = 4096
	// DefaultRegistryTimeout is how long one registry request waits for an
	// answer. The request runs beside the round, never before its
	// acknowledgement, so it may take longer than the global tier's
	// acknowledgement timeout (5 s).
	DefaultRegistryTimeout = 5 * time.Second
	// DefaultRegistryAttempts is how many registry requests a round makes
	// before the updates that need the registry are rejected
	// (ReasonNoRegistry).
	DefaultRegistryAttempts = 3
)

// Config configures a regional aggregator. The zero value of every
// optional field means its default; NewRunner applies the defaults to its
// own copy and never changes the caller's.
type Config struct {
	// Job and Region name the job and this region: valid subject tokens
	// (letters, digits, '-' and '_'). Required.
	Job    string
	Region string
	// Conn is the runner's NATS connection. Required.
	Conn *nats.Conn
	// Rand is the noise source; nil means crypto/rand.Reader.
	Rand io.Reader
	// QueueSize bounds the messages waiting for the runner's loop; default
	// DefaultQueueSize (4096). When full, further messages are dropped and
	// counted (Stats.QueueDrops). It also bounds the messages a signed
	// round holds while its registry is being fetched.
	QueueSize int
	// StreamSlots bounds the streamed updates staged at once (each holds
	// up to 4·d bytes); default DefaultStreamSlots (3; 2 above LargeDim
	// parameters). StreamWindow is the
	// number of unacknowledged chunks a client may send; default
	// DefaultStreamWindow (4).
	StreamSlots  int
	StreamWindow int
	// RegistryTimeout is how long one request for the region's enrolled
	// identities waits; default DefaultRegistryTimeout (5 s).
	// RegistryAttempts is how many requests a signed round makes before
	// giving up on a registry as recent as it names; default
	// DefaultRegistryAttempts (3).
	RegistryTimeout  time.Duration
	RegistryAttempts int
	// OnPartial, when set, is called after the runner publishes a round's
	// partial, with how long the round was open here; it must not block
	// (the metrics package observes aggregation latency through it).
	OnPartial func(p *wire.Partial, elapsed time.Duration)
	// OnRoundOpen, when set, is called with each round the runner opens,
	// before any update of it is taken; it must not block. A process that
	// runs one region sizes its memory limit through it (MemoryLimit).
	OnRoundOpen func(wire.RoundOpen)
	// Logger receives the runner's logs under the key "region"; nil means
	// silent.
	Logger *slog.Logger
	// Key is the region's identity: it signs the region's partials. A
	// signed round's partial from a region without one is refused upstream.
	Key *identity.Key
}

// ErrInvalidConfig is what every Validate error matches (errors.Is).
var ErrInvalidConfig = errors.New("regional: invalid config")

// ConfigError names the Config field that Validate refused and why.
type ConfigError struct {
	Field   string
	Problem string
}

func (e *ConfigError) Error() string {
	if strings.Contains(e.Field, ".") { // another config's field, named with its type
		return fmt.Sprintf("regional: %s: %s", e.Field, e.Problem)
	}
	return fmt.Sprintf("regional: Config.%s: %s", e.Field, e.Problem)
}

// Is makes every ConfigError match ErrInvalidConfig.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

// Validate checks the configuration as given, zero values standing for
// their defaults, and names the first field it refuses.
func (c Config) Validate() error {
	bad := func(field, format string, args ...any) error {
		return &ConfigError{Field: field, Problem: fmt.Sprintf(format, args...)}
	}
	if c.Conn == nil {
		return bad("Conn", "required")
	}
	if err := topology.ValidToken(c.Job); err != nil {
		return bad("Job", "%v", err)
	}
	if err := topology.ValidToken(c.Region); err != nil {
		return bad("Region", "%v", err)
	}
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"QueueSize", int64(c.QueueSize)},
		{"StreamSlots", int64(c.StreamSlots)},
		{"StreamWindow", int64(c.StreamWindow)},
		{"RegistryTimeout", int64(c.RegistryTimeout)},
		{"RegistryAttempts", int64(c.RegistryAttempts)},
	} {
		if f.v < 0 {
			return bad(f.name, "%d is negative (0 means the default)", f.v)
		}
	}
	return nil
}

// withDefaults returns a copy of c with every unset optional field set to
// its default.
func (c Config) withDefaults() Config {
	if c.QueueSize == 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.StreamWindow == 0 {
		c.StreamWindow = DefaultStreamWindow
	}
	if c.RegistryTimeout == 0 {
		c.RegistryTimeout = DefaultRegistryTimeout
	}
	if c.RegistryAttempts == 0 {
		c.RegistryAttempts = DefaultRegistryAttempts
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}
