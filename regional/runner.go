package regional

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/strata-fl/strata/identity"
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
}

// Runner runs a regional aggregator over NATS.
type Runner struct {
	cfg   Config
	noise *privacy.Gaussian
	msgs  chan *nats.Msg
	mu    sync.Mutex
	stats Stats
	ready chan struct{}
	sr    streamRun
	reg   *identity.Registry // enrolled identities, refreshed as rounds ask
}

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
	return &Runner{cfg: cfg, noise: privacy.NewGaussian(cfg.Rand), msgs: make(chan *nats.Msg, cfg.QueueSize), stats: Stats{Rejected: map[string]int{}, SecAggFailed: map[string]int{}}, ready: make(chan struct{})}, nil
}

// Stats returns a copy of the counters.
func (r *Runner) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stats
	s.SlowConsumerDrops = r.dropped()
	s.Queued = len(r.msgs)
	s.Rejected = map[string]int{}
	for k, v := range r.stats.Rejected {
		s.Rejected[k] = v
	}
	s.SecAggFailed = map[string]int{}
	for k, v := range r.stats.SecAggFailed {
		s.SecAggFailed[k] = v
	}
	return s
}

// Run subscribes and aggregates rounds until ctx ends or the job is done.
func (r *Runner) Run(ctx context.Context) error {
	roundSubj, err := mesh.RoundSubject(r.cfg.Job, r.cfg.Region)
	if err != nil {
		return err
	}
	updSubj, err := mesh.UpdateWildcard(r.cfg.Job, r.cfg.Region)
	if err != nil {
		return err
	}
	doneSubj, err := mesh.DoneSubject(r.cfg.Job)
	if err != nil {
		return err
	}
	saSubj, err := mesh.SecAggWildcard(r.cfg.Job, r.cfg.Region)
	if err != nil {
		return err
	}
	var subs []*nats.Subscription
	defer func() {
		for _, s := range subs {
			s.Unsubscribe()
		}
	}()
	for _, subj := range []string{roundSubj, updSubj, doneSubj, saSubj} {
		s, err := r.cfg.Conn.Subscribe(subj, r.enqueue)
		if err != nil {
			return fmt.Errorf("regional %s: subscribe %s: %w", r.cfg.Region, subj, err)
		}
		s.SetPendingLimits(-1, 512<<20)
		subs = append(subs, s)
	}
	r.mu.Lock()
	r.sr.subs = subs
	r.mu.Unlock()
	pingSubj, err := mesh.PingSubject(r.cfg.Job, r.cfg.Region)
	if err != nil {
		return err
	}
	ps, err := r.cfg.Conn.Subscribe(pingSubj, func(m *nats.Msg) { m.Respond([]byte("ok")) })
	if err != nil {
		return fmt.Errorf("regional %s: subscribe %s: %w", r.cfg.Region, pingSubj, err)
	}
	subs = append(subs, ps)
	if err := r.cfg.Conn.Flush(); err != nil {
		return fmt.Errorf("regional %s: %w", r.cfg.Region, err)
	}
	close(r.ready)
	return r.loop(ctx, roundSubj, doneSubj, saSubj)
}

// enqueue never blocks the NATS reader: a full queue drops and counts.
func (r *Runner) enqueue(m *nats.Msg) {
	select {
	case r.msgs <- m:
	default:
		r.mu.Lock()
		r.stats.QueueDrops++
		r.mu.Unlock()
	}
}

func (r *Runner) loop(ctx context.Context, roundSubj, doneSubj, saSubj string) error {
	var cur *Round
	var sa *SecAggSession // the round's secure-aggregation session, if any
	var openedAt time.Time
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	saTimer := time.NewTimer(time.Hour)
	saTimer.Stop()
	defer saTimer.Stop()
	saPrefix := strings.TrimSuffix(saSubj, "*")
	// saFail ends a session without a sum: the round contributes nothing.
	saFail := func(reason string, err error) {
		r.mu.Lock()
		r.stats.SecAggFailed[reason]++
		r.mu.Unlock()
		if cur != nil {
			r.cfg.Logger.Warn("secagg session failed: the region contributes nothing to the round", "round", cur.open.Round, "reason", reason, "err", err)
			r.abortStreams(cur)
		}
		cur, sa = nil, nil
		saTimer.Stop()
	}
	finalize := func() error {
		if cur == nil {
			return nil
		}
		if sa != nil && !sa.Done() {
			saFail(SecAggSuperseded, errors.New("round ended before the session"))
			return nil
		}
		sa = nil
		r.abortStreams(cur)
		p, err := cur.Finalize(r.noise)
		cur = nil
		timer.Stop()
		if err != nil {
			return err
		}
		if err := r.publish(p); err != nil {
			return err
		}
		if r.cfg.OnPartial != nil {
			r.cfg.OnPartial(p, time.Since(openedAt))
		}
		return nil
	}
	// advance closes the session's stage; after the last it publishes the
	// partial.
	advance := func() error {
		for sa != nil && !sa.Done() {
			out, err := sa.Advance()
			if err != nil {
				saFail(secAggReason(err), err)
				return nil
			}
			for _, a := range out {
				if err := r.sendSecAgg(cur.open.Round, a); err != nil {
					return err
				}
			}
			if sa.Done() {
				r.mu.Lock()
				r.stats.SecAggSessions++
				r.mu.Unlock()
				return finalize()
			}
			if !sa.StageComplete() { // an empty stage closes at once
				saTimer.Reset(time.Until(sa.Deadline()))
				return nil
			}
		}
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-saTimer.C:
			if err := advance(); err != nil {
				return err
			}
		case <-timer.C:
			if err := finalize(); err != nil {
				return err
			}
		case m := <-r.msgs:
			switch m.Subject {
			case doneSubj:
				if err := finalize(); err != nil {
					return err
				}
				return nil
			case roundSubj:
				var open wire.RoundOpen
				if err := wire.Decode(m.Data, wire.TypeRoundOpen, &open); err != nil || open.Job != r.cfg.Job || open.Region != r.cfg.Region {
					r.cfg.Logger.Warn("round.open ignored", "err", err)
					continue
				}
				if cur != nil {
					// A newer round supersedes an unfinished one.
					if err := finalize(); err != nil {
						return err
					}
				}
				nr, err := NewRound(open)
				if err != nil {
					r.cfg.Logger.Warn("round.open rejected", "err", err)
					continue
				}
				cur, openedAt = nr, time.Now()
				if r.cfg.OnRoundOpen != nil {
					r.cfg.OnRoundOpen(open)
				}
				if open.Signed {
					r.refreshRegistry(ctx, open.Registry)
					cur.UseRegistry(r.reg)
				}
				if m.Reply != "" {
					// The coordinator tells clients only after this ack, so no
					// update can overtake the round it belongs to.
					if err := m.Respond([]byte("ok")); err != nil {
						r.cfg.Logger.Warn("round.open ack failed", "err", err)
					}
				}
				if open.SecAgg != nil && len(open.Sampled) > 0 {
					// The session's stages, not the round's deadline, close
					// a secure-aggregation round.
					if sa, err = NewSecAggSession(cur, openedAt); err != nil {
						saFail(secAggReason(err), err)
						continue
					}
					saTimer.Reset(time.Until(sa.Deadline()))
					continue
				}
				timer.Reset(time.Until(time.UnixMilli(open.DeadlineUnixMs)))
				if cur.Complete() { // nobody sampled: publish the noise-only partial now
					if err := finalize(); err != nil {
						return err
					}
				}
			default:
				if strings.HasPrefix(m.Subject, saPrefix) {
					if sa == nil {
						r.count(ReasonNoRound)
						continue
					}
					if reason := sa.Handle(m.Subject, m.Data); reason != "" {
						r.count(reason)
						r.cfg.Logger.Debug("secagg message rejected", "reason", reason)
						continue
					}
					r.mu.Lock()
					r.stats.SecAggMessages++
					r.mu.Unlock()
					if sa.StageComplete() {
						if err := advance(); err != nil {
							return err
						}
					}
					continue
				}
				if r.onStream(cur, m) {
					if cur != nil && cur.Complete() {
						if err := finalize(); err != nil {
							return err
						}
					}
					continue
				}
				if cur == nil {
					r.count(ReasonNoRound)
					r.cfg.Logger.Debug("update rejected", "reason", ReasonNoRound)
					continue
				}
				reason := cur.Add(m.Data)
				r.count(reason)
				if reason != "" {
					r.cfg.Logger.Debug("update rejected", "reason", reason)
				}
				if cur.Complete() {
					if err := finalize(); err != nil {
						return err
					}
				}
			}
		}
	}
}

func (r *Runner) count(reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if reason == "" {
		r.stats.Accepted++
		return
	}
	r.stats.Rejected[reason]++
}

// refreshRegistry fetches the region's enrolled identities from the
// global tier when the round announces a newer version than the copy held.
// On failure the old copy stays: updates of unknown senders are rejected,
// never accepted unverified.
func (r *Runner) refreshRegistry(ctx context.Context, want uint64) {
	if r.reg != nil && r.reg.Version >= want {
		return
	}
	subj, err := mesh.RegistrySubject(r.cfg.Job, r.cfg.Region)
	if err != nil {
		r.cfg.Logger.Error("registry subject", "err", err)
		return
	}
	for attempt := 0; attempt < r.cfg.RegistryAttempts; attempt++ {
		rctx, cancel := context.WithTimeout(ctx, r.cfg.RegistryTimeout)
		m, err := r.cfg.Conn.RequestWithContext(rctx, subj, binary.BigEndian.AppendUint64(nil, want))
		cancel()
		if err == nil {
			reg, derr := identity.DecodeRegistry(m.Data)
			if derr == nil && reg.Version >= want {
				r.reg = reg
				r.cfg.Logger.Debug("registry refreshed", "version", reg.Version, "entries", reg.Len())
				return
			}
			err = derr
			if err == nil {
				err = fmt.Errorf("registry version %d, round needs %d", reg.Version, want)
			}
		}
		r.cfg.Logger.Warn("registry refresh failed", "attempt", attempt+1, "err", err)
		if ctx.Err() != nil {
			return
		}
	}
}

// sendSecAgg sends one client its session message.
func (r *Runner) sendSecAgg(round uint64, a Addressed) error {
	subj, err := mesh.SecAggToSubject(r.cfg.Job, r.cfg.Region, a.Client)
	if err != nil {
		return err
	}
	b, err := wire.Encode(wire.TypeSecAggDown, &wire.SecAggDown{Job: r.cfg.Job, Round: round, Region: r.cfg.Region, Body: a.Body})
	if err != nil {
		return err
	}
	if err := r.cfg.Conn.Publish(subj, b); err != nil {
		return fmt.Errorf("regional %s: secagg to %s: %w", r.cfg.Region, a.Client, err)
	}
	return nil
}

// sign signs a partial with the region's key (unsigned without one).
func (r *Runner) sign(p *wire.Partial) {
	if r.cfg.Key == nil {
		return
	}
	p.Sig = r.cfg.Key.Sign(identity.PartialMessage(p.Job, p.Round, p.Region, p.Count, p.BitSum, identity.Digest(p.Sum)))
}

func (r *Runner) publish(p *wire.Partial) error {
	r.sign(p)
	if len(p.Sum) > partialChunkBytes(r.cfg.Conn) {
		return r.publishChunked(p)
	}
	b, err := wire.Encode(wire.TypePartial, p)
	if err != nil {
		return err
	}
	subj, err := mesh.PartialSubject(r.cfg.Job, r.cfg.Region)
	if err != nil {
		return err
	}
	if err := r.cfg.Conn.Publish(subj, b); err != nil {
		return fmt.Errorf("regional %s: publish partial: %w", r.cfg.Region, err)
	}
	r.mu.Lock()
	r.stats.Partials++
	r.mu.Unlock()
	r.cfg.Logger.Debug("partial published", "round", p.Round, "count", p.Count)
	return nil
}
