// Package edge is the client agent: it learns of rounds, fetches the model
// version the ledger committed, runs the trainer, and then does everything
// privacy-critical itself — clipping, edge noise, publishing — whatever the
// trainer did.
package edge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/strata-fl/strata/identity"
	"github.com/strata-fl/strata/mesh"
	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/privacy"
	"github.com/strata-fl/strata/secagg"
)

// Trainer computes a client's model delta from θ. The agent never trusts it
// with privacy: what it returns is clipped and noised afterwards.
type Trainer interface {
	Train(ctx context.Context, client string, round uint64, theta, delta []float64) (examples int, err error)
}

// Client identifies one edge client.
type Client struct {
	ID     string
	Region string
}

// ErrConfig is wrapped by every error about a FleetConfig.
var ErrConfig = errors.New("edge: invalid configuration")

// FleetConfig configures a set of edge clients run by one process. Each
// client has its own NATS connection, as separate devices would. Zero
// fields take the defaults given with each.
type FleetConfig struct {
	// Job names the job whose rounds the clients serve; required, a valid
	// subject token.
	Job string
	// Dialer connects each client to NATS (as itself, with Keys).
	Dialer mesh.Dialer
	// Clients are the clients to run, each with a distinct ID and a
	// region (both valid subject tokens); default none.
	Clients []Client
	// Trainer computes the clients' deltas; required.
	Trainer Trainer
	// Models fetches model versions; simulated clients in one process share
	// one verified cache of it. Required.
	Models *mesh.ModelStore
	// Workers bounds concurrent local training; default 2, ≥ 0.
	Workers int
	// Rand is the edge-noise source; nil means crypto/rand.Reader.
	Rand io.Reader
	// Logger receives the fleet's warnings; nil is silent.
	Logger *slog.Logger
	// Stream says how updates are encoded and when they are streamed in
	// chunks (edge/publish.go); the zero value streams float32 updates
	// larger than 1 MiB. It must pass StreamConfig.Validate.
	Stream StreamConfig
	// Canaries maps canary clients (topology audit.canaries) to their unit
	// directions. A sampled canary never trains: its update is its
	// direction scaled to twice the round's clip norm, which clipping
	// brings to exactly C; everything after (edge noise, publishing) is as
	// for any client. Each must be one of Clients, its direction non-empty
	// and finite; default none.
	Canaries map[string][]float64
	// Keys holds each client's identity: it authenticates the client's
	// connection and signs its updates. A signed round refuses a client
	// without one. Default none.
	Keys map[string]*identity.Key
	// SecAggDrop, when set, is asked at each stage of a secure-aggregation
	// session whether the client vanishes there (it then sends nothing
	// more in that round): fault injection for tests and benchmarks of
	// dropout recovery. Nil: no client drops.
	SecAggDrop func(client string, round uint64, stage secagg.Stage) bool
}

// Validate names the field that is wrong. Zero fields are valid where they
// have a default.
func (c FleetConfig) Validate() error {
	switch {
	case c.Trainer == nil:
		return fmt.Errorf("%w: FleetConfig.Trainer is required", ErrConfig)
	case c.Models == nil:
		return fmt.Errorf("%w: FleetConfig.Models is required", ErrConfig)
	case c.Workers < 0:
		return fmt.Errorf("%w: FleetConfig.Workers %d: want ≥ 1 (0 means 2)", ErrConfig, c.Workers)
	}
	if _, err := mesh.DoneSubject(c.Job); err != nil {
		return fmt.Errorf("%w: FleetConfig.Job: %v", ErrConfig, err)
	}
	ids := make(map[string]bool, len(c.Clients))
	for i, cl := range c.Clients {
		if _, err := mesh.InviteSubject(c.Job, cl.Region, cl.ID); err != nil {
			return fmt.Errorf("%w: FleetConfig.Clients[%d] (%q of region %q): %v", ErrConfig, i, cl.ID, cl.Region, err)
		}
		if ids[cl.ID] {
			return fmt.Errorf("%w: FleetConfig.Clients[%d]: client %q is listed twice", ErrConfig, i, cl.ID)
		}
		ids[cl.ID] = true
	}
	if err := c.Stream.Validate(); err != nil {
		return err // names StreamConfig's field
	}
	for id, dir := range c.Canaries {
		switch {
		case !ids[id]:
			return fmt.Errorf("%w: FleetConfig.Canaries: canary %q is not one of the fleet's clients", ErrConfig, id)
		case len(dir) == 0:
			return fmt.Errorf("%w: FleetConfig.Canaries: canary %q has no direction", ErrConfig, id)
		}
		for _, x := range dir {
			if math.IsNaN(x) || math.IsInf(x, 0) {
				return fmt.Errorf("%w: FleetConfig.Canaries: canary %q has a non-finite direction", ErrConfig, id)
			}
		}
	}
	return nil
}

// withDefaults returns a copy of c with zero fields set to their defaults.
func (c FleetConfig) withDefaults() FleetConfig {
	if c.Workers == 0 {
		c.Workers = 2
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Fleet runs simulated edge clients.
type Fleet struct {
	cfg   FleetConfig
	noise *privacy.Gaussian
	tasks chan task
	conns map[string]*nats.Conn

	mu      sync.Mutex
	cache   map[uint64][]float64
	stats   FleetStats
	noiseMu sync.Mutex
	ready   chan struct{}

	saTasks chan task // sampled clients of secagg rounds
	saMu    sync.Mutex
	saBoxes map[saKey]chan []byte
}

// Ready is closed once every client is connected and subscribed.
func (f *Fleet) Ready() <-chan struct{} { return f.ready }

// FleetStats counts what the fleet did.
type FleetStats struct {
	Published  int
	Failed     int
	QueueDrops int
	// SecAggDropped counts clients that left a secagg session before its
	// end (failed training, a deadline, SecAggDrop); they are in Failed too.
	SecAggDropped int
}

type task struct {
	client Client
	open   wire.RoundOpen
	out    chan<- trained // set for a secagg session: the update goes there
}

// NewFleet checks the configuration (Validate); Run connects the clients.
func NewFleet(cfg FleetConfig) (*Fleet, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return &Fleet{cfg: cfg, noise: privacy.NewGaussian(cfg.Rand), tasks: make(chan task, len(cfg.Clients)+1), saTasks: make(chan task, len(cfg.Clients)+1), saBoxes: map[saKey]chan []byte{}, conns: map[string]*nats.Conn{}, cache: map[uint64][]float64{}, ready: make(chan struct{})}, nil
}

// Stats returns a copy of the counters.
func (f *Fleet) Stats() FleetStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats
}

// Run connects every client and serves rounds until ctx ends or the job is
// done. It closes every connection it opened before returning.
func (f *Fleet) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer func() {
		for _, nc := range f.conns {
			nc.Close()
		}
	}()
	doneSubj, err := mesh.DoneSubject(f.cfg.Job)
	if err != nil {
		return err
	}
	for _, c := range f.cfg.Clients {
		if err := f.connect(c, doneSubj, cancel); err != nil {
			return err
		}
	}
	close(f.ready)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		f.runSessions(ctx)
	}()
	for range f.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.work(ctx)
		}()
	}
	wg.Wait()
	return nil
}

func (f *Fleet) connect(c Client, doneSubj string, cancel func()) error {
	nc, err := f.cfg.Dialer.As(f.cfg.Keys[c.ID]).Connect("edge-" + c.ID)
	if err != nil {
		return fmt.Errorf("edge %s: %w", c.ID, err)
	}
	f.conns[c.ID] = nc
	subj, err := mesh.InviteSubject(f.cfg.Job, c.Region, c.ID)
	if err != nil {
		return err
	}
	if _, err := nc.Subscribe(subj, func(m *nats.Msg) { f.onRound(c, m) }); err != nil {
		return fmt.Errorf("edge %s: subscribe: %w", c.ID, err)
	}
	if _, err := nc.Subscribe(doneSubj, func(*nats.Msg) { cancel() }); err != nil {
		return fmt.Errorf("edge %s: subscribe: %w", c.ID, err)
	}
	saSubj, err := mesh.SecAggToSubject(f.cfg.Job, c.Region, c.ID)
	if err != nil {
		return err
	}
	if _, err := nc.Subscribe(saSubj, func(m *nats.Msg) { f.onSecAgg(c, m) }); err != nil {
		return fmt.Errorf("edge %s: subscribe: %w", c.ID, err)
	}
	return nc.Flush()
}

// onRound runs on the connection's dispatcher; it never blocks.
func (f *Fleet) onRound(c Client, m *nats.Msg) {
	var open wire.RoundOpen
	if err := wire.Decode(m.Data, wire.TypeRoundOpen, &open); err != nil {
		f.cfg.Logger.Warn("round.open ignored", "client", c.ID, "err", err)
		return
	}
	// An invitation on the client's own subject is its sampling decision;
	// under secure aggregation it also lists the session's members, which
	// must include the client.
	if open.Job != f.cfg.Job || open.Region != c.Region || (open.SecAgg != nil && !slices.Contains(open.Sampled, c.ID)) {
		return
	}
	f.cfg.Logger.Debug("sampled", "client", c.ID, "round", open.Round)
	queue := f.tasks
	if open.SecAgg != nil {
		if open.SecAgg.Infeasible != "" {
			return // no session this round: the client sends nothing
		}
		queue = f.saTasks
	}
	select {
	case queue <- task{client: c, open: open}:
	default:
		f.mu.Lock()
		f.stats.QueueDrops++
		f.mu.Unlock()
	}
}

func (f *Fleet) work(ctx context.Context) {
	var delta []float64
	for {
		select {
		case <-ctx.Done():
			return
		case t := <-f.tasks:
			if len(delta) != t.open.Dim {
				delta = make([]float64, t.open.Dim)
			}
			err := f.serve(ctx, t, delta)
			if t.out != nil {
				if err != nil {
					t.out <- trained{err: err}
				}
				continue // the session counts the outcome
			}
			f.mu.Lock()
			if err != nil {
				f.stats.Failed++
			} else {
				f.stats.Published++
			}
			f.mu.Unlock()
			if err != nil && ctx.Err() == nil {
				f.cfg.Logger.Warn("client round failed", "client", t.client.ID, "round", t.open.Round, "err", err)
			}
		}
	}
}

func (f *Fleet) model(ctx context.Context, open wire.RoundOpen) ([]float64, error) {
	f.mu.Lock()
	theta, ok := f.cache[open.ModelVersion]
	f.mu.Unlock()
	if ok {
		return theta, nil
	}
	blob, err := f.cfg.Models.Get(ctx, "model", open.ModelVersion, open.ModelHash)
	if err != nil {
		return nil, err
	}
	v, err := wire.Float32s(blob)
	if err != nil {
		return nil, err
	}
	if len(v) != open.Dim {
		return nil, fmt.Errorf("edge: model v%d has %d parameters, round says %d", open.ModelVersion, len(v), open.Dim)
	}
	theta = make([]float64, len(v))
	for i, x := range v {
		theta[i] = float64(x)
	}
	f.mu.Lock()
	for k := range f.cache {
		if k+2 < open.ModelVersion {
			delete(f.cache, k)
		}
	}
	f.cache[open.ModelVersion] = theta
	f.mu.Unlock()
	return theta, nil
}

func (f *Fleet) serve(ctx context.Context, t task, delta []float64) error {
	theta, err := f.model(ctx, t.open)
	if err != nil {
		return err
	}
	if dir, ok := f.cfg.Canaries[t.client.ID]; ok {
		if len(dir) != len(delta) {
			return fmt.Errorf("edge: canary %s has a %d-dimensional direction, the model %d", t.client.ID, len(dir), len(delta))
		}
		for i, u := range dir {
			delta[i] = 2 * t.open.ClipNorm * u
		}
	} else if _, err = f.cfg.Trainer.Train(ctx, t.client.ID, t.open.Round, theta, delta); err != nil {
		return fmt.Errorf("trainer: %w", err)
	}
	unclipped, err := ClipBit(delta, t.open.ClipNorm, len(delta))
	if err != nil {
		return err
	}
	if !t.open.ClipBits {
		// The bit is data: a region would read it in clear. It leaves the
		// client only when the round asks for it (and is accounted).
		unclipped = 0
	}
	if s := t.open.EdgeNoise * t.open.ClipNorm; s > 0 {
		f.noiseMu.Lock()
		if t.open.Lattice > 0 {
			err = f.noise.AddTo64On(delta, s, t.open.Lattice)
		} else {
			err = f.noise.AddTo64(delta, s)
		}
		f.noiseMu.Unlock()
		if err != nil {
			return fmt.Errorf("edge noise: %w", err)
		}
	}
	if t.out != nil {
		t.out <- trained{vec: append([]float64(nil), delta...), bit: unclipped}
		return nil
	}
	stream := f.cfg.Stream
	if t.open.Encoding != "" {
		stream.Encoding = t.open.Encoding // the round's: float64 on the lattice
	}
	if stream.streams(len(delta)) {
		return f.publishStream(ctx, t, stream, delta, unclipped)
	}
	enc := stream.withDefaults().Encoding
	u := wire.Update{
		Job: f.cfg.Job, Round: t.open.Round, Region: t.client.Region, Client: t.client.ID,
		ModelVersion: t.open.ModelVersion, Unclipped: unclipped,
	}
	if enc == wire.EncodingF64 {
		u.Encoding, u.Vec = enc, wire.AppendFloat64s(make([]byte, 0, 8*len(delta)), delta)
	} else {
		enc, u.Vec = wire.EncodingF32, wire.AppendFloat64sAs32(make([]byte, 0, 4*len(delta)), delta)
	}
	if u.Sig, err = f.sign(t, unclipped, wire.PayloadDigest(enc, len(delta), identity.Digest(u.Vec), nil)); err != nil {
		return err
	}
	b, err := wire.Encode(wire.TypeUpdate, &u)
	if err != nil {
		return err
	}
	subj, err := mesh.UpdateSubject(f.cfg.Job, t.client.Region, t.client.ID)
	if err != nil {
		return err
	}
	nc := f.conns[t.client.ID]
	if err := nc.Publish(subj, b); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	f.cfg.Logger.Debug("update published", "client", t.client.ID, "round", t.open.Round)
	return nil
}

// ErrNoKey is returned when a signed round samples a client the fleet has
// no key for.
var ErrNoKey = errors.New("edge: no identity key for the client; enrol it (strata enroll) or give the fleet its keys")

// sign signs an update's message with the client's key; a round that is
// not signed takes unsigned updates from clients without a key.
func (f *Fleet) sign(t task, unclipped uint8, digest [32]byte) ([]byte, error) {
	k := f.cfg.Keys[t.client.ID]
	if k == nil {
		if t.open.Signed {
			return nil, fmt.Errorf("%w: %s", ErrNoKey, t.client.ID)
		}
		return nil, nil
	}
	return k.Sign(identity.UpdateMessage(f.cfg.Job, t.open.Round, t.open.ModelVersion, t.client.Region, t.client.ID, unclipped, digest)), nil
}

// ClipBit clips v to a norm safely below c (ClipTarget) and returns the
// adaptive-clipping bit: 1 when v was already within c.
func ClipBit(v []float64, c float64, dim int) (uint8, error) {
	n := 0.0
	for _, x := range v {
		n += x * x
	}
	if err := Clip(v, ClipTarget(c, dim)); err != nil {
		return 0, err
	}
	if math.Sqrt(n) <= c {
		return 1, nil
	}
	return 0, nil
}

// ClipTarget is the norm a client clips to so that what it sends stays
// within c however it is encoded: float32 narrowing raises a norm by a
// relative 2⁻²⁴ at most, and the float64 arithmetic of clipping and of the
// norm by (d+2)·2⁻⁵² — the sensitivity the ledger charges is then exactly
// c, with no uncharged rounding.
func ClipTarget(c float64, dim int) float64 {
	return c * (1 - 0x1p-22 - float64(dim+2)*0x1p-52)
}

// ErrNonFinite reports a trainer result with NaN or ±Inf.
var ErrNonFinite = errors.New("edge: update has a non-finite value")

// Clip scales v in place so that its L2 norm is at most c. The float32
// rounding on the wire can add a relative 1e-7; regions allow for it.
func Clip(v []float64, c float64) error {
	n := 0.0
	for _, x := range v {
		n += x * x
	}
	n = math.Sqrt(n)
	if math.IsNaN(n) || math.IsInf(n, 0) {
		return ErrNonFinite
	}
	if n > c {
		s := c / n
		for i := range v {
			v[i] *= s
		}
	}
	return nil
}
