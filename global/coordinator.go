package global

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/global/round"
	"github.com/strata-fl/strata/identity"
	"github.com/strata-fl/strata/mesh"
	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/privacy"
	"github.com/strata-fl/strata/topology"
)

// ErrBudgetExhausted reports that the job stopped because its next round
// would exceed the privacy budget.
var ErrBudgetExhausted = round.ErrBudgetExhausted

// Evaluator scores a model version on held-out data of the clients' domain.
// It gets the coordinator's context, so an evaluation in another process
// ends when the term or the job does.
type Evaluator interface {
	Evaluate(ctx context.Context, theta []float64) (Evaluation, error)
}

// Evaluation is a version's evaluation: the score the gate compares
// (higher is better) and the metrics the ledger records.
type Evaluation = round.Evaluation

// RoundReport is what the coordinator tells its Progress callback after
// each round: the round machine's report, with the committed count read
// from the ledger.
type RoundReport = round.Report

// CoordinatorConfig configures the round coordinator.
type CoordinatorConfig struct {
	// Topology, Node, Conn, Models and Evaluator are required.
	Topology *topology.Topology
	Node     *Node
	Conn     *nats.Conn
	Models   *mesh.ModelStore
	// Initial is θ of model version 0 (the pre-trained starting point);
	// required.
	Initial   []float64
	Evaluator Evaluator
	// Rand is the source of sampling draws and global noise; nil means
	// crypto/rand.Reader.
	Rand io.Reader
	// ConfigHash identifies the topology; a data dir holding another job's
	// ledger refuses to start.
	ConfigHash string
	// PartialGrace is how long after a round's deadline partials are still
	// accepted; default 5s.
	PartialGrace time.Duration
	// AckTimeout bounds how long a region has to acknowledge a round;
	// default 5s. A region that does not is left out of the round. Regions
	// are asked at once, so a slow one delays the round by at most this.
	AckTimeout time.Duration
	// ProbeTimeout bounds how long a region has to answer the ping that
	// precedes each round; default 1s. Regions are pinged at once.
	ProbeTimeout time.Duration
	// Progress, when set, is called after every round.
	Progress func(RoundReport)
	// Logger receives the coordinator's logs; nil means none.
	Logger *slog.Logger
	// PartialLog, when set, is the job's partial log (mesh.OpenPartialLog):
	// a round a previous leader left open is finished from the partials it
	// kept (round.resume), and the coordinator empties it when a round
	// ends. Nil: a round left open is aborted, its cost kept.
	PartialLog *mesh.PartialLog
	// Identities are the public keys enrolled at the start of the job
	// (clients, regions, global nodes; from `strata certs` or the
	// standalone mesh). A job with security.signed on samples only clients
	// with a key and merges only partials signed by their region's key.
	Identities []identity.Entry
}

// withDefaults returns a copy with every unset field defaulted.
func (c CoordinatorConfig) withDefaults() CoordinatorConfig {
	if c.Rand == nil {
		c.Rand = rand.Reader
	}
	if c.AckTimeout == 0 {
		c.AckTimeout = 5 * time.Second
	}
	if c.ProbeTimeout == 0 {
		c.ProbeTimeout = time.Second
	}
	if c.PartialGrace == 0 {
		c.PartialGrace = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate names the first field that cannot work.
func (c CoordinatorConfig) Validate() error {
	switch {
	case c.Topology == nil:
		return errors.New("global: CoordinatorConfig.Topology is required")
	case c.Node == nil:
		return errors.New("global: CoordinatorConfig.Node is required")
	case c.Conn == nil:
		return errors.New("global: CoordinatorConfig.Conn is required")
	case c.Models == nil:
		return errors.New("global: CoordinatorConfig.Models is required")
	case c.Evaluator == nil:
		return errors.New("global: CoordinatorConfig.Evaluator is required")
	case len(c.Initial) == 0:
		return errors.New("global: CoordinatorConfig.Initial (model version 0) is empty")
	case c.PartialGrace < 0:
		return fmt.Errorf("global: CoordinatorConfig.PartialGrace %v is negative", c.PartialGrace)
	case c.AckTimeout < 0:
		return fmt.Errorf("global: CoordinatorConfig.AckTimeout %v is negative", c.AckTimeout)
	case c.ProbeTimeout < 0:
		return fmt.Errorf("global: CoordinatorConfig.ProbeTimeout %v is negative", c.ProbeTimeout)
	}
	return nil
}

// Coordinator runs the job's rounds on the raft leader: the runner of a
// round.Machine. The machine decides; the coordinator commits through
// raft, talks to the regions over NATS, reads and writes the model store,
// evaluates, adds the global noise, and feeds each result back as an event.
type Coordinator struct {
	cfg      CoordinatorConfig
	top      *topology.Topology
	noise    *privacy.Gaussian
	partials chan *nats.Msg
	gate     *canaryGate
	timer    *time.Timer
	// logged carries the partial log's messages while a resumed round
	// collects (unfollow stops them): the log has every message the core
	// subscription brings then, so that one's are dropped.
	logged   chan mesh.LoggedPartial
	unfollow func()

	mu sync.Mutex // guards m: Theta may be called from another goroutine
	m  *round.Machine
}

// NewCoordinator checks the configuration.
func NewCoordinator(cfg CoordinatorConfig) (*Coordinator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return &Coordinator{cfg: cfg, top: cfg.Topology, noise: privacy.NewGaussian(cfg.Rand)}, nil
}

// Run drives the job to its end: it resumes from the ledger, runs the
// remaining rounds, and finishes the job. It returns nil when the job is
// finished (now or before).
func (c *Coordinator) Run(ctx context.Context) error {
	subj, err := mesh.PartialWildcard(c.top.Job)
	if err != nil {
		return err
	}
	c.partials = make(chan *nats.Msg, 4*len(c.top.Regions)+16)
	sub, err := c.cfg.Conn.ChanSubscribe(subj, c.partials)
	if err != nil {
		return fmt.Errorf("global: subscribe %s: %w", subj, err)
	}
	defer sub.Unsubscribe()
	m, err := c.startOrResume(ctx)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.m = m
	c.mu.Unlock()
	defer c.stopTimer()
	defer c.stopFollowing()
	return c.drive(ctx)
}

// drive feeds the machine until it stops: each action it asks for is run
// and answered by an event; a machine that asks for nothing is either
// between rounds (Next) or collecting partials.
func (c *Coordinator) drive(ctx context.Context) error {
	ev, err := c.firstEvent(ctx)
	if err != nil {
		return err
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		acts := c.step(ev)
		ev = nil
		for _, a := range acts {
			if stop, ok := a.(round.Stop); ok {
				return stop.Err
			}
			e, err := c.do(ctx, a)
			if err != nil {
				return err
			}
			if e != nil {
				ev = e
			}
		}
		until, collecting := c.m.Collecting()
		if !collecting {
			c.stopTimer()
		}
		if ev != nil {
			continue
		}
		switch {
		case collecting:
			if ev, err = c.await(ctx, until); err != nil {
				return err
			}
		case c.m.Idle():
			if ev, err = c.nextEvent(); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%w: the round machine asked for nothing", round.ErrUnexpected)
		}
	}
}

func (c *Coordinator) step(ev round.Event) []round.Action {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m.Step(ev)
}

// nextEvent is Next with the ledger as it is now.
func (c *Coordinator) nextEvent() (round.Event, error) {
	v, err := c.view()
	if err != nil {
		return nil, err
	}
	return round.Next{View: v}, nil
}

func (c *Coordinator) view() (*round.View, error) {
	var v *round.View
	var err error
	c.cfg.Node.Read(func(l *ledger.Ledger) { v, err = round.ViewOf(l) })
	if err != nil {
		return nil, fmt.Errorf("global: reading the ledger: %w", err)
	}
	return v, nil
}

// do runs one action and returns the event that answers it (nil for
// actions nothing answers).
func (c *Coordinator) do(ctx context.Context, a round.Action) (round.Event, error) {
	switch a := a.(type) {
	case round.Log:
		c.cfg.Logger.Log(ctx, a.Level, a.Msg, a.Args...)
	case round.Progress:
		c.stopFollowing()
		c.purgeLog(ctx)
		c.progress(a.Report)
	case round.Announce:
		return nil, c.announceDone(a.Reason)
	case round.Wait:
		return c.wait(ctx, a.For)
	case round.Probe:
		alive := c.liveRegions(ctx)
		v, err := c.view()
		if err != nil {
			return nil, err
		}
		return round.Probed{Alive: alive, View: v, Now: time.Now()}, nil
	case round.LoadModel:
		theta, vel, err := c.loadModel(ctx, a.Version, a.Hash)
		return round.ModelLoaded{Version: a.Version, Theta: theta, Velocity: vel, Err: err}, nil
	case round.Draw:
		u, err := c.draw(a.N)
		return round.Drawn{U: u, Err: err}, nil
	case round.Propose:
		res, err := c.cfg.Node.Apply(ctx, a.Cmd)
		return round.Applied{Result: res, Err: err}, nil
	case round.OpenRegions:
		return c.openRegions(ctx, a), nil
	case round.Collect:
		c.stopTimer()
		c.timer = time.NewTimer(time.Until(a.Until))
	case round.AddNoise:
		return round.Noised{Err: c.noise.AddTo64On(a.Values, a.Sigma, a.Lattice)}, nil
	case round.StoreModel:
		hash, err := c.storeModel(ctx, a)
		return round.Stored{Hash: hash, Err: err}, nil
	case round.Evaluate:
		ev, err := c.cfg.Evaluator.Evaluate(ctx, a.Theta)
		return round.Evaluated{Evaluation: ev, Err: err}, nil
	case round.CanaryGate:
		reason, err := c.canaryGateReason(ctx, a.Theta, a.Base)
		return round.GateChecked{Reason: reason, Err: err}, nil
	default:
		return nil, fmt.Errorf("%w: action %T", round.ErrUnexpected, a)
	}
	return nil, nil
}

// await waits for the next partial or the collection's deadline. While a
// resumed round collects, partials come from the partial log, with the
// time the NATS server received them; the core subscription's copies are
// dropped.
func (c *Coordinator) await(ctx context.Context, until time.Time) (round.Event, error) {
	if c.timer == nil {
		c.timer = time.NewTimer(time.Until(until))
	}
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case now := <-c.timer.C:
			c.timer = nil
			return round.Deadline{At: now}, nil
		case msg := <-c.partials:
			if c.unfollow != nil {
				continue
			}
			return round.PartialMsg{Data: msg.Data, At: time.Now()}, nil
		case p := <-c.logged:
			return round.PartialMsg{Data: p.Data, At: p.At}, nil
		}
	}
}

func (c *Coordinator) stopTimer() {
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
}

// wait sleeps d (or until ctx ends), then asks the machine for Next.
func (c *Coordinator) wait(ctx context.Context, d time.Duration) (round.Event, error) {
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
		}
	}
	return c.nextEvent()
}

// draw reads n uniform draws in [0, 1) with 53 bits each from the secure
// source, 8 bytes a draw.
func (c *Coordinator) draw(n int) ([]float64, error) {
	buf := make([]byte, 8*n)
	if _, err := io.ReadFull(c.cfg.Rand, buf); err != nil {
		return nil, err
	}
	u := make([]float64, n)
	for i := range u {
		u[i] = float64(binary.LittleEndian.Uint64(buf[8*i:])>>11) / (1 << 53)
	}
	return u, nil
}

// liveRegions counts the regions that answer a ping, asking all at once.
func (c *Coordinator) liveRegions(ctx context.Context) int {
	var alive atomic.Int64
	var wg sync.WaitGroup
	for _, r := range c.top.Regions {
		subj, err := mesh.PingSubject(c.top.Job, r.ID)
		if err != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rctx, cancel := context.WithTimeout(ctx, c.cfg.ProbeTimeout)
			defer cancel()
			if _, err := c.cfg.Conn.RequestWithContext(rctx, subj, nil); err == nil {
				alive.Add(1)
			}
		}()
	}
	wg.Wait()
	return int(alive.Load())
}

// openRegions announces the round to every region at once; each region,
// once it has acknowledged, has its sampled clients invited. A region that
// does not acknowledge within AckTimeout is left out of the round, and a
// slow one delays the others by nothing.
func (c *Coordinator) openRegions(ctx context.Context, a round.OpenRegions) round.Acked {
	var registry uint64
	c.cfg.Node.Read(func(l *ledger.Ledger) { registry = l.RegistryVersion })
	acked := make([]bool, len(a.Regions))
	errs := make([]error, len(a.Regions))
	var wg sync.WaitGroup
	for i, ro := range a.Regions {
		// The region's registry copy must be at least as recent as the
		// ledger now is (a consent withdrawn since the round was planned).
		ro.Open.Registry = max(ro.Open.Registry, registry)
		wg.Add(1)
		go func() {
			defer wg.Done()
			acked[i], errs[i] = c.openRegion(ctx, a.Round, ro)
		}()
	}
	wg.Wait()
	var out round.Acked
	for i, ro := range a.Regions {
		if acked[i] {
			out.Regions = append(out.Regions, ro.Region)
		}
	}
	out.Err = errors.Join(errs...)
	return out
}

// openRegion asks one region to hold the round and, once it has, invites
// each of its sampled clients on the client's own subject. It reports
// whether the region acknowledged.
func (c *Coordinator) openRegion(ctx context.Context, rnd uint64, ro round.RegionOpen) (bool, error) {
	b, err := wire.Encode(wire.TypeRoundOpen, &ro.Open)
	if err != nil {
		return false, err
	}
	subj, err := mesh.RoundSubject(c.top.Job, ro.Region)
	if err != nil {
		return false, err
	}
	// The region must hold the round before its clients hear of it;
	// otherwise a fast client's update could reach the region first.
	rctx, cancel := context.WithTimeout(ctx, c.cfg.AckTimeout)
	defer cancel()
	if _, err := c.cfg.Conn.RequestWithContext(rctx, subj, b); err != nil {
		c.cfg.Logger.Warn("region did not acknowledge round", "region", ro.Region, "round", rnd, "err", err)
		return false, nil
	}
	ib, err := wire.Encode(wire.TypeRoundOpen, &ro.Invite)
	if err != nil {
		return true, err
	}
	for _, id := range ro.Clients {
		isubj, err := mesh.InviteSubject(c.top.Job, ro.Region, id)
		if err != nil {
			return true, err
		}
		if err := c.cfg.Conn.Publish(isubj, ib); err != nil {
			return true, fmt.Errorf("global: invite %s to round %d: %w", id, rnd, err)
		}
	}
	return true, nil
}

// startOrResume starts the job in the ledger (or finds it there), enrols
// the topology, aborts a round a previous coordinator left open, and
// returns a machine holding the serving model.
func (c *Coordinator) startOrResume(ctx context.Context) (*round.Machine, error) {
	t := c.top
	res, err := c.cfg.Node.Apply(ctx, &ledger.StartJob{Job: ledger.Job{
		Name: t.Job, ConfigHash: c.cfg.ConfigHash, Delta: t.Privacy.Delta, Budget: t.Privacy.Budget,
		Population: t.Population(), PlannedRounds: t.Train.Rounds, Accountant: t.Privacy.Accountant,
		Orders: privacy.Orders(), StartedUnixMs: time.Now().UnixMilli(), Signed: t.Security.Signed(),
		ClientBudgets: true,
	}})
	if err != nil {
		return nil, err
	}
	if res.Err != nil {
		if errors.Is(res.Err, ledger.ErrJobExists) {
			return nil, fmt.Errorf("%w: a data dir holds one job's ledger for good; use another --data for a changed topology", res.Err)
		}
		return nil, res.Err
	}
	if err := c.enrollTopology(ctx); err != nil {
		return nil, err
	}
	if c.cfg.PartialLog == nil {
		if err := c.abortLeftOpen(ctx); err != nil {
			return nil, err
		}
	}
	initial := roundTo32(append([]float64(nil), c.cfg.Initial...))
	blob := wire.AppendFloat64sAs32(nil, initial)
	if _, err := c.cfg.Models.Put(ctx, "model", 0, blob); err != nil {
		return nil, err
	}
	base, err := c.cfg.Evaluator.Evaluate(ctx, initial)
	if err != nil {
		return nil, fmt.Errorf("global: evaluate the checkpoint: %w", err)
	}
	var version uint64
	var hash string
	c.cfg.Node.Read(func(l *ledger.Ledger) {
		version = l.ServingVersion()
		if m, ok := l.ServingModel(); ok {
			hash = m.Hash
		}
	})
	theta, vel, err := c.loadModel(ctx, version, hash)
	if err != nil {
		return nil, fmt.Errorf("global: resuming from model v%d: %w", version, err)
	}
	return round.New(round.Config{Topology: t, Pricer: Pricer(), Theta: theta, Velocity: vel, Version: version,
		Hash0: mesh.Hash(blob), Base: base, PartialGrace: c.cfg.PartialGrace})
}

// firstEvent is what the machine is told first: Resume when the ledger
// holds a round a previous leader left open and there is a partial log to
// finish it from, Next otherwise.
func (c *Coordinator) firstEvent(ctx context.Context) (round.Event, error) {
	var open round.LeftOpen
	var isOpen bool
	c.cfg.Node.Read(func(l *ledger.Ledger) { open, isOpen = round.LeftOpenOf(l) })
	if !isOpen || c.cfg.PartialLog == nil {
		c.purgeLog(ctx)
		return c.nextEvent()
	}
	v, err := c.view()
	if err != nil {
		return nil, err
	}
	ev := round.Resume{View: v, Open: open}
	if !c.top.Round.Resumes() {
		ev.Now = time.Now()
		return ev, nil
	}
	stored, last, err := c.cfg.PartialLog.Load(ctx)
	if err != nil {
		// The log is unreadable: without what was delivered the round
		// cannot be finished as it would have been.
		ev.LogErr, ev.Now = err, time.Now()
		return ev, nil
	}
	var records [][]byte
	for _, p := range stored {
		if c.cfg.PartialLog.IsRecord(p) {
			records = append(records, p.Data)
			continue
		}
		ev.Stored = append(ev.Stored, round.PartialMsg{Data: p.Data, At: p.At})
	}
	if ev.Candidate, ev.Adopt, err = c.storedCandidate(ctx, open.Round, v.Latest+1, records); err != nil {
		return nil, err
	}
	if !ev.Candidate && open.ModelVersion == c.m.Version() {
		if err := c.follow(ctx, last); err != nil {
			c.cfg.Logger.Warn("cannot follow the partial log; the resumed round takes only what it holds", "round", open.Round, "err", err)
		}
	}
	ev.Now = time.Now()
	return ev, nil
}

// storedCandidate says whether the model store holds a model blob of
// version v: a previous leader drew round rnd's global noise and stored
// its candidate before it died. With the record of what it merged (the
// last of records naming the round, the version and the blob's hash) and
// its optimizer state, the candidate is returned to be adopted.
func (c *Coordinator) storedCandidate(ctx context.Context, rnd, v uint64, records [][]byte) (bool, *round.Adopted, error) {
	blob, err := c.cfg.Models.Get(ctx, "model", v, "")
	switch {
	case errors.Is(err, jetstream.ErrObjectNotFound):
		return false, nil, nil
	case err != nil:
		return false, nil, fmt.Errorf("global: is a candidate v%d stored: %w", v, err)
	}
	var rec *round.Merged
	for _, b := range records {
		m, err := decodeMerged(b)
		if err != nil {
			c.cfg.Logger.Warn("unreadable record in the partial log", "err", err)
			continue
		}
		if m.Round == rnd && m.Version == v && m.Hash == mesh.Hash(blob) {
			rec = &m
		}
	}
	if rec == nil {
		return true, nil, nil
	}
	theta, err := decode64(blob, len(c.cfg.Initial))
	if err != nil {
		return true, nil, fmt.Errorf("global: stored candidate v%d: %w", v, err)
	}
	vb, err := c.cfg.Models.Get(ctx, "opt", v, "")
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return true, nil, nil // recorded only once both blobs are in: not this candidate's
	}
	if err != nil {
		return true, nil, fmt.Errorf("global: optimizer state of the stored candidate v%d: %w", v, err)
	}
	vel, err := decode64(vb, len(c.cfg.Initial))
	if err != nil {
		return true, nil, fmt.Errorf("global: optimizer state of the stored candidate v%d: %w", v, err)
	}
	return true, &round.Adopted{Merged: *rec, Theta: theta, Velocity: vel}, nil
}

// decodeMerged reads a record of what a stored candidate merged.
func decodeMerged(b []byte) (round.Merged, error) {
	var m round.Merged
	if err := json.Unmarshal(b, &m); err != nil {
		return round.Merged{}, fmt.Errorf("global: merge record: %w", err)
	}
	if m.Round == 0 || m.Version == 0 || m.Hash == "" {
		return round.Merged{}, fmt.Errorf("global: merge record names round %d, v%d, hash %q", m.Round, m.Version, m.Hash)
	}
	for i, p := range m.Partials {
		if p.Region == "" || p.Count < 0 || (i > 0 && m.Partials[i-1].Region >= p.Region) {
			return round.Merged{}, fmt.Errorf("global: merge record: partial %d (region %q, count %d) out of order or invalid", i, p.Region, p.Count)
		}
	}
	return m, nil
}

// follow delivers the partial log's messages after sequence after to
// logged until stopFollowing.
func (c *Coordinator) follow(ctx context.Context, after uint64) error {
	c.logged = make(chan mesh.LoggedPartial, 4*len(c.top.Regions)+64)
	done := make(chan struct{})
	stop, err := c.cfg.PartialLog.Follow(ctx, after, func(p mesh.LoggedPartial) {
		select {
		case c.logged <- p:
		case <-done:
		}
	})
	if err != nil {
		c.logged = nil
		return err
	}
	c.unfollow = func() { close(done); stop() }
	return nil
}

// stopFollowing ends a resumed round's following of the partial log, and
// drops the core subscription's copies of its partials.
func (c *Coordinator) stopFollowing() {
	if c.unfollow == nil {
		return
	}
	c.unfollow()
	c.unfollow, c.logged = nil, nil
	for {
		select {
		case <-c.partials:
		default:
			return
		}
	}
}

// purgeLog empties the partial log once a round has ended (or when a
// leader finds none open), so that the next leader reads only its own
// round's partials. A failure costs nothing but a later resume's
// rejected (late) partials, and is logged.
func (c *Coordinator) purgeLog(ctx context.Context) {
	if c.cfg.PartialLog == nil {
		return
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := c.cfg.PartialLog.Purge(pctx); err != nil && ctx.Err() == nil {
		c.cfg.Logger.Warn("cannot purge the partial log", "err", err)
	}
}

// abortLeftOpen aborts a round a previous coordinator left open: its spend
// is recorded and stays; what its clients and regions did is not guessed.
func (c *Coordinator) abortLeftOpen(ctx context.Context) error {
	var open ledger.RoundEntry
	var isOpen bool
	c.cfg.Node.Read(func(l *ledger.Ledger) { open, isOpen = l.OpenRoundEntry() })
	if !isOpen {
		return nil
	}
	c.cfg.Logger.Warn("aborting round left open by a previous coordinator", "round", open.Round)
	res, err := c.cfg.Node.Apply(ctx, &ledger.AbortRound{Round: open.Round, Reason: "coordinator restarted mid-round; spend kept"})
	if err != nil {
		return err
	}
	if res.Err != nil {
		return fmt.Errorf("global: aborting round %d left open: %w", open.Round, res.Err)
	}
	return nil
}

// loadModel loads a model version (and its optimizer state) from the model
// store, verifying the model against the ledger's hash. Version 0 is the
// checkpoint. A version whose optimizer state is missing restarts the
// momentum (and says so); any other failure to read it is an error.
func (c *Coordinator) loadModel(ctx context.Context, version uint64, hash string) (theta, velocity []float64, err error) {
	dim := len(c.cfg.Initial)
	if version == 0 {
		return roundTo32(append([]float64(nil), c.cfg.Initial...)), make([]float64, dim), nil
	}
	blob, err := c.cfg.Models.Get(ctx, "model", version, hash)
	if err != nil {
		return nil, nil, err
	}
	if theta, err = decode64(blob, dim); err != nil {
		return nil, nil, fmt.Errorf("global: model v%d: %w", version, err)
	}
	vb, err := c.cfg.Models.Get(ctx, "opt", version, "")
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		c.cfg.Logger.Warn("no optimizer state stored for the serving model: momentum restarts from zero", "version", version)
		return theta, make([]float64, dim), nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("global: optimizer state of v%d: %w", version, err)
	}
	if velocity, err = decode64(vb, dim); err != nil {
		return nil, nil, fmt.Errorf("global: optimizer state of v%d: %w", version, err)
	}
	return theta, velocity, nil
}

// storeModel puts a new version's parameters and optimizer state into the
// model store and returns the parameters' hash.
func (c *Coordinator) storeModel(ctx context.Context, a round.StoreModel) (string, error) {
	hash, err := c.cfg.Models.Put(ctx, "model", a.Version, wire.AppendFloat64sAs32(nil, a.Theta))
	if err != nil {
		return "", err
	}
	if _, err := c.cfg.Models.Put(ctx, "opt", a.Version, wire.AppendFloat64sAs32(nil, a.Velocity)); err != nil {
		return "", err
	}
	if c.cfg.PartialLog != nil {
		// With both blobs in, what the candidate merged: a next leader
		// commits this candidate rather than draw the noise again. Without
		// the record it would abort the round, so a failure is only logged.
		rec := a.Merged
		rec.Hash = hash
		b, err := json.Marshal(rec)
		if err == nil {
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err = c.cfg.PartialLog.Record(rctx, b)
			cancel()
		}
		if err != nil {
			c.cfg.Logger.Warn("cannot record the stored candidate in the partial log", "version", a.Version, "err", err)
		}
	}
	return hash, nil
}

func decode64(b []byte, dim int) ([]float64, error) {
	v, err := wire.Float32s(b)
	if err != nil {
		return nil, err
	}
	if len(v) != dim {
		return nil, fmt.Errorf("has %d parameters, the model needs %d", len(v), dim)
	}
	out := make([]float64, dim)
	for i, x := range v {
		out[i] = float64(x)
	}
	return out, nil
}

func roundTo32(v []float64) []float64 {
	for i, x := range v {
		v[i] = float64(float32(x))
	}
	return v
}

// progress reports a round: the log, this node's partial counts (what the
// metrics read), and the Progress callback.
func (c *Coordinator) progress(r RoundReport) {
	c.cfg.Node.Read(func(l *ledger.Ledger) { r.Committed = l.CommittedRounds() })
	c.cfg.Node.partials.record(r)
	metric, value := r.Eval.Primary()
	c.cfg.Logger.Info("round done", "round", r.Round, "participants", r.Participants, metric, value, "epsilon", r.Epsilon.Public, "aborted", r.Aborted)
	if c.cfg.Progress != nil {
		c.cfg.Progress(r)
	}
}

// Theta returns a copy of the current model parameters (model version 0's
// before Run has resumed the job).
func (c *Coordinator) Theta() []float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		return roundTo32(append([]float64(nil), c.cfg.Initial...))
	}
	return c.m.Theta()
}

func (c *Coordinator) announceDone(reason string) error {
	subj, err := mesh.DoneSubject(c.top.Job)
	if err != nil {
		return err
	}
	b, err := wire.Encode(wire.TypeJobDone, &wire.JobDone{Job: c.top.Job, Reason: reason})
	if err != nil {
		return err
	}
	if err := c.cfg.Conn.Publish(subj, b); err != nil {
		return fmt.Errorf("global: publish done: %w", err)
	}
	return c.cfg.Conn.Flush()
}
