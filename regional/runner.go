package regional

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/strata-fl/strata/mesh"
	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/privacy"
)

// Stats are cumulative counters of a runner.
type Stats struct {
	Accepted   int
	Rejected   map[string]int
	Partials   int
	QueueDrops int
	// StrayChunks counts chunks of no staged stream (e.g. in flight when
	// their stream failed); SlowConsumerDrops counts messages NATS dropped
	// because the runner fell behind.
	StrayChunks       int
	SlowConsumerDrops int
	// Queued is how many messages wait in the runner's queue now.
	Queued int
	// SecAggMessages counts secure-aggregation messages accepted;
	// SecAggFailed counts sessions that ended without a sum, by reason
	// (SecAggTooFew, ...): the region contributed nothing to those rounds.
	SecAggMessages int
	SecAggFailed   map[string]int
	// SecAggSessions counts sessions that delivered their sum.
	SecAggSessions int
	// RegistryWaiting is how many messages a signed round holds now until
	// its registry arrives; RegistryFailures counts registry requests that
	// failed (no answer in time, or an unusable one).
	RegistryWaiting  int
	RegistryFailures int
	// PingDrops counts liveness checks dropped because the runner's loop
	// had not taken the ones before: the region looked dead to them.
	PingDrops int
}

// Runner runs a regional aggregator over NATS. It is the thin half of the
// region: it owns the subscriptions, the bounded queue they push into, the
// timer and the registry requests, turns each into an Event for the
// region's Lifecycle and carries out the Actions it returns. All of the
// round's logic is in the core (doc.go).
type Runner struct {
	cfg   Config
	core  *Lifecycle   // used only by Run's goroutine
	msgs  chan inbound // bounded: NATS handlers never block
	pings chan Reply   // bounded, apart so a flood of updates cannot starve them
	ready chan struct{}

	mu         sync.Mutex
	coreStats  Stats // the core's counters, as last reported
	partials   int
	queueDrops int
	pingDrops  int
	subs       []*nats.Subscription
}

// pingQueue bounds the liveness checks waiting for the loop; checks come
// seconds apart, so a few suffice.
const pingQueue = 16

// inbound is a message as a subscription handler queues it.
type inbound struct {
	kind inboundKind
	m    *nats.Msg
}

type inboundKind uint8

const (
	inRound inboundKind = iota
	inUpdate
	inSecAgg
	inDone
)

// Ready is closed once the runner is subscribed.
func (r *Runner) Ready() <-chan struct{} { return r.ready }

// NewRunner checks the configuration (Config.Validate) and prepares a
// runner with the defaults applied to its own copy of it.
func NewRunner(cfg Config) (*Runner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	cfg.Logger = cfg.Logger.With("region", cfg.Region)
	core, err := NewLifecycle(LifecycleConfig{Job: cfg.Job, Region: cfg.Region, Noise: privacy.NewGaussian(cfg.Rand), Key: cfg.Key,
		StreamSlots: cfg.StreamSlots, StreamWindow: cfg.StreamWindow, RegistryAttempts: cfg.RegistryAttempts,
		HoldMessages: cfg.QueueSize, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	return &Runner{cfg: cfg, core: core, msgs: make(chan inbound, cfg.QueueSize), pings: make(chan Reply, pingQueue), ready: make(chan struct{}),
		coreStats: core.Stats()}, nil
}

// Stats returns a copy of the counters.
func (r *Runner) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.coreStats
	s.Rejected = make(map[string]int, len(r.coreStats.Rejected))
	for k, v := range r.coreStats.Rejected {
		s.Rejected[k] = v
	}
	s.SecAggFailed = make(map[string]int, len(r.coreStats.SecAggFailed))
	for k, v := range r.coreStats.SecAggFailed {
		s.SecAggFailed[k] = v
	}
	s.Partials, s.QueueDrops, s.PingDrops = r.partials, r.queueDrops, r.pingDrops
	s.SlowConsumerDrops = r.dropped()
	s.Queued = len(r.msgs)
	return s
}

// Run subscribes and aggregates rounds until ctx ends or the job is done.
// It owns every goroutine it starts (the registry requests) and returns
// only once they have ended. A runner runs once.
func (r *Runner) Run(ctx context.Context) error {
	job, region := r.cfg.Job, r.cfg.Region
	var subjects [4]string // by inboundKind
	var err error
	if subjects[inRound], err = mesh.RoundSubject(job, region); err != nil {
		return err
	}
	if subjects[inUpdate], err = mesh.UpdateWildcard(job, region); err != nil {
		return err
	}
	if subjects[inSecAgg], err = mesh.SecAggWildcard(job, region); err != nil {
		return err
	}
	if subjects[inDone], err = mesh.DoneSubject(job); err != nil {
		return err
	}
	pingSubj, err := mesh.PingSubject(job, region)
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait() // last: the registry requests end once ctx is cancelled
	defer cancel()
	var subs []*nats.Subscription
	defer func() {
		for _, s := range subs {
			s.Unsubscribe()
		}
	}()
	for _, kind := range []inboundKind{inRound, inUpdate, inDone, inSecAgg} {
		s, err := r.cfg.Conn.Subscribe(subjects[kind], r.enqueuer(kind))
		if err != nil {
			return fmt.Errorf("regional %s: subscribe %s: %w", region, subjects[kind], err)
		}
		s.SetPendingLimits(-1, 512<<20)
		subs = append(subs, s)
	}
	r.mu.Lock()
	r.subs = append([]*nats.Subscription(nil), subs...)
	r.mu.Unlock()
	// The loop answers pings, not this handler: a region whose loop is
	// stuck must not look alive to the global tier, which opens a round
	// (and charges its cost) only when enough regions answer.
	ps, err := r.cfg.Conn.Subscribe(pingSubj, func(m *nats.Msg) {
		select {
		case r.pings <- Reply(m.Reply):
		default:
			r.mu.Lock()
			r.pingDrops++
			r.mu.Unlock()
		}
	})
	if err != nil {
		return fmt.Errorf("regional %s: subscribe %s: %w", region, pingSubj, err)
	}
	subs = append(subs, ps)
	if err := r.cfg.Conn.Flush(); err != nil {
		return fmt.Errorf("regional %s: %w", region, err)
	}
	close(r.ready)
	return r.loop(ctx, &wg)
}

// enqueuer returns the handler of one subscription: it never blocks the
// NATS reader; a full queue drops and counts.
func (r *Runner) enqueuer(kind inboundKind) nats.MsgHandler {
	return func(m *nats.Msg) {
		select {
		case r.msgs <- inbound{kind, m}:
		default:
			r.mu.Lock()
			r.queueDrops++
			r.mu.Unlock()
		}
	}
}

// loop feeds the core one event at a time and carries out its actions.
func (r *Runner) loop(ctx context.Context, wg *sync.WaitGroup) error {
	x := executor{r: r, ctx: ctx, wg: wg, timer: time.NewTimer(time.Hour), fetched: make(chan RegistryArrived, 1)}
	x.timer.Stop()
	defer x.timer.Stop()
	for {
		var ev Event
		select {
		case <-ctx.Done():
			return nil
		case in := <-r.msgs:
			ev = in.event(time.Now())
		case to := <-r.pings:
			ev = PingArrived{Reply: to}
		case res := <-x.fetched:
			res.Now = time.Now()
			ev = res
		case <-x.timer.C:
			ev = Tick{Now: time.Now()}
		}
		acts, err := r.core.Step(ev)
		for _, a := range acts {
			stop, xerr := x.do(a)
			if xerr != nil {
				return xerr
			}
			if stop {
				return nil
			}
		}
		if err != nil {
			return err
		}
	}
}

// event is the core's view of a queued message.
func (in inbound) event(now time.Time) Event {
	m := in.m
	switch in.kind {
	case inRound:
		return OpenArrived{Now: now, Data: m.Data, Reply: Reply(m.Reply)}
	case inSecAgg:
		return SecAggArrived{Now: now, Subject: m.Subject, Data: m.Data}
	case inDone:
		return JobDone{Now: now}
	}
	return UpdateArrived{Now: now, Data: m.Data, Reply: Reply(m.Reply)}
}

// executor carries out the core's actions for the loop.
type executor struct {
	r       *Runner
	ctx     context.Context
	wg      *sync.WaitGroup
	timer   *time.Timer
	fetched chan RegistryArrived // capacity 1: the core has one request in flight
}

// do carries out one action; stop reports the end of the job.
func (x *executor) do(a Action) (stop bool, err error) {
	r := x.r
	switch a := a.(type) {
	case RoundOpened:
		if r.cfg.OnRoundOpen != nil {
			r.cfg.OnRoundOpen(a.Open)
		}
	case AckOpen:
		// The coordinator tells clients only after this ack, so no update
		// can overtake the round it belongs to.
		if err := r.cfg.Conn.Publish(string(a.To), []byte("ok")); err != nil {
			r.cfg.Logger.Warn("round.open ack failed", "round", a.Round, "err", err)
		}
	case FetchRegistry:
		x.wg.Add(1)
		go func() {
			defer x.wg.Done()
			res := r.fetchRegistry(x.ctx, a.Want)
			select {
			case x.fetched <- res:
			case <-x.ctx.Done():
			}
		}()
	case Grant:
		r.respond(a.To, wire.TypeStreamGrant, &a.Grant)
	case AckChunk:
		r.respond(a.To, wire.TypeChunkAck, &a.Ack)
	case SendSecAgg:
		return false, r.sendSecAgg(a.Round, a.Msg)
	case PublishPartial:
		if err := r.publish(a.Partial); err != nil {
			return false, err
		}
		r.mu.Lock()
		r.partials++
		r.mu.Unlock()
		if r.cfg.OnPartial != nil {
			r.cfg.OnPartial(a.Partial, a.Elapsed)
		}
	case SetTimer:
		if a.At.IsZero() {
			x.timer.Stop()
		} else {
			x.timer.Reset(time.Until(a.At))
		}
	case Pong:
		if a.To == "" {
			break
		}
		if err := r.cfg.Conn.Publish(string(a.To), []byte("ok")); err != nil {
			r.cfg.Logger.Warn("ping reply failed", "err", err)
		}
	case ReportStats:
		r.mu.Lock()
		r.coreStats = a.Stats
		r.mu.Unlock()
	case Stop:
		return true, nil
	}
	return false, nil
}

// fetchRegistry makes one request for the region's enrolled identities at
// version want or later (the core decides whether to ask again). It runs
// beside the loop: a slow global tier delays the updates that need the
// registry, never the round's acknowledgement.
func (r *Runner) fetchRegistry(ctx context.Context, want uint64) RegistryArrived {
	res := RegistryArrived{Want: want}
	subj, err := mesh.RegistrySubject(r.cfg.Job, r.cfg.Region)
	if err != nil {
		res.Err = err
		return res
	}
	rctx, cancel := context.WithTimeout(ctx, r.cfg.RegistryTimeout)
	defer cancel()
	m, err := r.cfg.Conn.RequestWithContext(rctx, subj, binary.BigEndian.AppendUint64(nil, want))
	if err != nil {
		res.Err = err
		return res
	}
	res.Data = m.Data
	return res
}

// dropped returns the messages NATS dropped from the runner's
// subscriptions because the runner fell behind (slow consumer). r.mu is
// held.
func (r *Runner) dropped() int {
	n := 0
	for _, s := range r.subs {
		if d, err := s.Dropped(); err == nil {
			n += d
		}
	}
	return n
}
