package regional

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/strata-fl/strata/identity"
	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/privacy"
	"github.com/strata-fl/strata/topology"
)

// Rejection reasons of the lifecycle: a signed round verifies its senders
// against a registry at least as recent as the one it names, which the
// region fetches after acknowledging the round (doc.go, "The registry").
const (
	// ReasonNoRegistry: the message needs the round's registry to be
	// verified and none as recent as the round names arrived — every
	// request failed, or the round ended first. It is never accepted
	// unverified, nor verified against an older copy (that copy may miss a
	// withdrawal).
	ReasonNoRegistry = "registry_unavailable"
	// ReasonHoldFull: the message arrived while the registry was being
	// fetched and the messages held for it already filled their bound.
	ReasonHoldFull = "registry_hold_full"
)

// Reply is the opaque handle of a message's reply (the runner's reply
// subject). The core never reads it; it only hands it back in the action
// that answers. "" means the sender wants no reply.
type Reply string

// Event is something that happened to a region, with the time it happened
// when that matters: the core reads no clock. The runner turns each NATS
// message, timer firing and registry answer into one and passes it to
// Lifecycle.Step.
type Event interface{ isEvent() }

// OpenArrived is a round.open request on the region's round subject.
type OpenArrived struct {
	Now   time.Time
	Data  []byte
	Reply Reply
}

// UpdateArrived is a message on one of the region's update subjects: a
// whole update, a stream open or a chunk.
type UpdateArrived struct {
	Now   time.Time
	Data  []byte
	Reply Reply
}

// SecAggArrived is a client's secure-aggregation message on Subject, the
// subject NATS let the client publish on (it names the client).
type SecAggArrived struct {
	Now     time.Time
	Subject string
	Data    []byte
}

// RegistryArrived ends a FetchRegistry: the encoded registry the global
// tier answered with, or the request's error.
type RegistryArrived struct {
	Now  time.Time
	Want uint64
	Data []byte
	Err  error
}

// Tick is the timer SetTimer armed firing. A tick before the deadline the
// core waits for only rearms the timer.
type Tick struct{ Now time.Time }

// JobDone is the job's end: the open round is finalized and the core stops.
type JobDone struct{ Now time.Time }

// PingArrived is a liveness check. It is answered by whoever steps the
// core, so a region whose loop is stuck does not look alive.
type PingArrived struct{ Reply Reply }

func (OpenArrived) isEvent()     {}
func (UpdateArrived) isEvent()   {}
func (SecAggArrived) isEvent()   {}
func (RegistryArrived) isEvent() {}
func (Tick) isEvent()            {}
func (JobDone) isEvent()         {}
func (PingArrived) isEvent()     {}

// Action is something the core asks its runner to do, in the order Step
// returns them.
type Action interface{ isAction() }

// RoundOpened reports a round the core opened, before any update of it is
// taken (the runner calls Config.OnRoundOpen).
type RoundOpened struct{ Open wire.RoundOpen }

// AckOpen acknowledges a round.open. The global tier invites the region's
// clients only after it, so no update can overtake its round; it waits a
// few seconds only, and a region that does not answer is left out of a
// round whose privacy cost is already committed. The core therefore
// acknowledges before any slow work (the registry).
type AckOpen struct {
	To    Reply
	Round uint64
}

// FetchRegistry asks for the region's enrolled identities at version Want
// or later; the runner answers with RegistryArrived. At most one is in
// flight.
type FetchRegistry struct{ Want uint64 }

// Grant answers a stream open: a grant (Reason "") or a refusal.
type Grant struct {
	To    Reply
	Grant wire.StreamGrant
}

// AckChunk acknowledges a chunk; a Reason ends the stream.
type AckChunk struct {
	To  Reply
	Ack wire.ChunkAck
}

// SendSecAgg sends one client its secure-aggregation message of Round.
type SendSecAgg struct {
	Round uint64
	Msg   Addressed
}

// PublishPartial publishes a round's noised, signed partial (in one
// message or in chunks, as the connection's payload limit requires),
// Elapsed after the round opened. The core emits it at most once per
// round: its noise is added once (ErrRoundFinalized).
type PublishPartial struct {
	Partial *wire.Partial
	Elapsed time.Duration
}

// SetTimer arms the one timer to deliver a Tick at At, replacing any
// earlier setting; a zero At disarms it.
type SetTimer struct{ At time.Time }

// Pong answers a ping.
type Pong struct{ To Reply }

// ReportStats carries the core's counters after they changed (the
// runner's own counters — queue drops, partials published — are not in
// it).
type ReportStats struct{ Stats Stats }

// Stop ends the runner: the job is done.
type Stop struct{}

func (RoundOpened) isAction()    {}
func (AckOpen) isAction()        {}
func (FetchRegistry) isAction()  {}
func (Grant) isAction()          {}
func (AckChunk) isAction()       {}
func (SendSecAgg) isAction()     {}
func (PublishPartial) isAction() {}
func (SetTimer) isAction()       {}
func (Pong) isAction()           {}
func (ReportStats) isAction()    {}
func (Stop) isAction()           {}

// LifecycleConfig configures a Lifecycle; zero values mean the defaults.
type LifecycleConfig struct {
	// Job and Region: round.open messages of another job or region are
	// ignored.
	Job, Region string
	// Noise adds each round's regional noise; nil means
	// privacy.NewGaussian(nil), drawing from crypto/rand.
	Noise Noiser
	// Key signs the partials; nil publishes them unsigned.
	Key *identity.Key
	// StreamSlots and StreamWindow as in Config.
	StreamSlots, StreamWindow int
	// RegistryAttempts is how many registry requests a signed round makes
	// before rejecting what needs the registry; default
	// DefaultRegistryAttempts.
	RegistryAttempts int
	// HoldMessages bounds the messages held while a signed round waits for
	// its registry; default DefaultQueueSize. Their bytes are bounded too,
	// per round (holdBytes).
	HoldMessages int
	// Logger, nil meaning silent.
	Logger *slog.Logger
}

// held is a message a signed round keeps until its registry arrives.
type held struct {
	secAgg  bool
	subject string // secagg only
	data    []byte
	reply   Reply
}

// Lifecycle is the round lifecycle of one region: which round is open,
// its streams and secure-aggregation session, the registry it verifies
// against, when it ends and what it publishes. It is a pure,
// single-threaded state machine, as Round is: events in (Step), actions
// out; no NATS, no clock (time arrives in events), no goroutine left
// running. The Runner owns the I/O and feeds it; tests step it directly
// (lifecycle_test.go). The package documentation walks through a round.
type Lifecycle struct {
	cfg   LifecycleConfig
	log   *slog.Logger
	noise Noiser

	cur      *Round
	sa       *SecAggSession
	streams  *Streams         // of cur, made at its first stream message
	replies  map[string]Reply // queued stream client → reply of its open
	openedAt time.Time
	last     uint64 // the last round opened here
	opened   bool   // whether last is set

	reg       *identity.Registry // the newest registry received
	fetching  bool               // a FetchRegistry is in flight
	attempts  int                // registry requests made for cur
	waitReg   bool               // cur is signed and its registry has not arrived
	noReg     bool               // cur gave up on its registry
	held      []held
	heldBytes int
	holdBytes int // bound on heldBytes for cur

	armed   time.Time // what the timer is set to; zero: disarmed
	stats   Stats
	dirty   bool // stats changed since the last ReportStats
	stopped bool
	out     []Action
}

// NewLifecycle returns the lifecycle of a region with no round open.
func NewLifecycle(cfg LifecycleConfig) (*Lifecycle, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.StreamWindow == 0 {
		cfg.StreamWindow = DefaultStreamWindow
	}
	if cfg.RegistryAttempts == 0 {
		cfg.RegistryAttempts = DefaultRegistryAttempts
	}
	if cfg.HoldMessages == 0 {
		cfg.HoldMessages = DefaultQueueSize
	}
	l := &Lifecycle{cfg: cfg, log: cfg.Logger, noise: cfg.Noise,
		stats: Stats{Rejected: map[string]int{}, SecAggFailed: map[string]int{}}}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	if l.noise == nil {
		l.noise = privacy.NewGaussian(nil)
	}
	return l, nil
}

// Validate names the first field that cannot work (a *ConfigError, as
// Config's): the job and region are subject tokens, and counts are not
// negative (0 means the default).
func (c LifecycleConfig) Validate() error {
	if err := topology.ValidToken(c.Job); err != nil {
		return &ConfigError{Field: "LifecycleConfig.Job", Problem: err.Error()}
	}
	if err := topology.ValidToken(c.Region); err != nil {
		return &ConfigError{Field: "LifecycleConfig.Region", Problem: err.Error()}
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"StreamSlots", c.StreamSlots}, {"StreamWindow", c.StreamWindow}, {"RegistryAttempts", c.RegistryAttempts}, {"HoldMessages", c.HoldMessages}} {
		if f.v < 0 {
			return &ConfigError{Field: "LifecycleConfig." + f.name, Problem: fmt.Sprintf("%d is negative (0 means the default)", f.v)}
		}
	}
	return nil
}

// Step applies one event and returns the actions it calls for, in order.
// An error is fatal to the region (its noise source failed): the runner
// stops with it. After JobDone the core ignores every event.
func (l *Lifecycle) Step(ev Event) ([]Action, error) {
	if l.stopped {
		return nil, nil
	}
	var err error
	switch ev := ev.(type) {
	case OpenArrived:
		err = l.open(ev)
	case UpdateArrived:
		err = l.update(ev.Now, ev.Data, ev.Reply)
	case SecAggArrived:
		err = l.secAgg(ev.Now, ev.Subject, ev.Data)
	case RegistryArrived:
		err = l.registry(ev)
	case Tick:
		err = l.tick(ev.Now)
	case JobDone:
		if err = l.finalize(ev.Now); err == nil {
			l.stopped = true
			l.flushStats()
			l.emit(Stop{})
		}
	case PingArrived:
		l.emit(Pong{To: ev.Reply})
	default:
		err = fmt.Errorf("regional: unknown event %T", ev)
	}
	l.flushStats()
	out := l.out
	l.out = nil
	return out, err
}

// Stats returns a copy of the core's counters.
func (l *Lifecycle) Stats() Stats {
	s := l.stats
	s.Rejected = make(map[string]int, len(l.stats.Rejected))
	for k, v := range l.stats.Rejected {
		s.Rejected[k] = v
	}
	s.SecAggFailed = make(map[string]int, len(l.stats.SecAggFailed))
	for k, v := range l.stats.SecAggFailed {
		s.SecAggFailed[k] = v
	}
	return s
}

func (l *Lifecycle) emit(a Action) { l.out = append(l.out, a) }

// flushStats reports the counters if they changed. Finalize calls it
// before the partial goes out, so that whoever sees the partial sees the
// counts of the updates in it.
func (l *Lifecycle) flushStats() {
	if l.dirty {
		l.dirty = false
		l.emit(ReportStats{Stats: l.Stats()})
	}
}

// arm sets the timer to at (zero: disarm) unless it is set so already.
func (l *Lifecycle) arm(at time.Time) {
	if at.Equal(l.armed) {
		return
	}
	l.armed = at
	l.emit(SetTimer{At: at})
}

// count records one message's verdict: accepted ("") or rejected.
func (l *Lifecycle) count(reason string) {
	l.dirty = true
	if reason == "" {
		l.stats.Accepted++
		return
	}
	l.stats.Rejected[reason]++
}

func (l *Lifecycle) grant(to Reply, g wire.StreamGrant) {
	if to != "" {
		l.emit(Grant{To: to, Grant: g})
	}
}

func (l *Lifecycle) ackChunk(to Reply, a wire.ChunkAck) {
	if to != "" {
		l.emit(AckChunk{To: to, Ack: a})
	}
}

// open handles a round.open. A newer round supersedes an unfinished one:
// it is finalized (published with what it has) or, while its
// secure-aggregation session is unfinished, discarded. The same round
// announced again is only acknowledged again: a round is opened, and its
// noise added, once.
func (l *Lifecycle) open(ev OpenArrived) error {
	var open wire.RoundOpen
	if err := wire.Decode(ev.Data, wire.TypeRoundOpen, &open); err != nil || open.Job != l.cfg.Job || open.Region != l.cfg.Region {
		l.log.Warn("round.open ignored", "err", err, "job", open.Job, "for_region", open.Region)
		return nil
	}
	if l.opened && open.Round == l.last {
		l.log.Debug("round.open repeated: acknowledged again", "round", open.Round)
		l.ack(ev.Reply, open.Round)
		return nil
	}
	if err := l.finalize(ev.Now); err != nil {
		return err
	}
	nr, err := NewRound(open)
	if err != nil {
		l.log.Warn("round.open rejected", "round", open.Round, "err", err)
		return nil
	}
	l.cur, l.openedAt, l.last, l.opened = nr, ev.Now, open.Round, true
	l.emit(RoundOpened{Open: open})
	l.ack(ev.Reply, open.Round)
	if open.Signed {
		l.awaitRegistry()
	}
	if open.SecAgg != nil && len(open.Sampled) > 0 {
		// The session's stages, not the round's deadline, close a
		// secure-aggregation round.
		sa, err := NewSecAggSession(nr, ev.Now)
		if err != nil {
			l.saFail(secAggReason(err), err)
			return nil
		}
		l.sa = sa
		l.arm(sa.Deadline())
		return nil
	}
	l.arm(time.UnixMilli(open.DeadlineUnixMs))
	if nr.Complete() { // nobody sampled: publish the noise-only partial now
		return l.finalize(ev.Now)
	}
	return nil
}

func (l *Lifecycle) ack(to Reply, round uint64) {
	if to != "" {
		l.emit(AckOpen{To: to, Round: round})
	}
}

// awaitRegistry gives the signed round just opened the registry it names,
// or asks for it: until it arrives, the round holds what needs it.
func (l *Lifecycle) awaitRegistry() {
	want := l.cur.open.Registry
	if l.reg != nil && l.reg.Version >= want {
		l.cur.UseRegistry(l.reg)
		return
	}
	l.waitReg, l.attempts = true, 0
	// Bytes held are bounded as the staged streams are: none is staged
	// before the registry arrives (a stream is granted only once its open
	// verifies), so the slots' memory is free; at least 16 MiB, so that a
	// small model's updates are not refused for want of room.
	elem := int64(4)
	if l.cur.exact() {
		elem = 8
	}
	l.holdBytes = int(max(16<<20, int64(streamSlots(l.cfg.StreamSlots, l.cur.open.Dim))*elem*int64(l.cur.open.Dim)))
	if !l.fetching {
		l.fetch(want)
	}
}

func (l *Lifecycle) fetch(want uint64) {
	l.fetching = true
	l.attempts++
	l.emit(FetchRegistry{Want: want})
}

// registry takes a registry answer. A registry newer than the one held is
// kept for later rounds whatever the open round needs; the open round
// uses it only if it is at least as recent as the round names.
func (l *Lifecycle) registry(ev RegistryArrived) error {
	l.fetching = false
	err := ev.Err
	if err == nil {
		reg, derr := identity.DecodeRegistry(ev.Data)
		switch {
		case derr != nil:
			err = derr
		case reg.Version < ev.Want:
			err = fmt.Errorf("registry version %d, asked for %d", reg.Version, ev.Want)
		}
		if derr == nil && (l.reg == nil || reg.Version > l.reg.Version) {
			l.reg = reg
			l.log.Debug("registry received", "version", reg.Version, "entries", reg.Len())
		}
	}
	if err != nil {
		l.stats.RegistryFailures++
		l.dirty = true
		l.log.Warn("registry request failed", "want", ev.Want, "attempt", l.attempts, "err", err)
	}
	if !l.waitReg {
		return nil
	}
	want := l.cur.open.Registry
	if l.reg != nil && l.reg.Version >= want {
		l.cur.UseRegistry(l.reg)
		l.waitReg = false
		return l.replay(ev.Now)
	}
	if l.attempts < l.cfg.RegistryAttempts {
		l.fetch(want)
		return nil
	}
	l.log.Warn("no registry for the round: what needs one is rejected", "round", l.cur.open.Round, "want", want, "reason", ReasonNoRegistry)
	l.waitReg, l.noReg = false, true
	l.dropHeld(ReasonNoRegistry)
	return nil
}

// hold keeps a message until the round's registry arrives, within the
// bounds: beyond them it is rejected (ReasonHoldFull).
func (l *Lifecycle) hold(h held) {
	if len(l.held) >= l.cfg.HoldMessages || l.heldBytes+len(h.data) > l.holdBytes {
		l.refuse(h, ReasonHoldFull)
		return
	}
	l.held = append(l.held, h)
	l.heldBytes += len(h.data)
	l.stats.RegistryWaiting = len(l.held)
	l.dirty = true
}

// replay feeds the held messages, in their order of arrival, to the round
// that now has its registry.
func (l *Lifecycle) replay(now time.Time) error {
	hs := l.held
	l.held, l.heldBytes = nil, 0
	l.stats.RegistryWaiting = 0
	l.dirty = true
	for _, h := range hs {
		var err error
		if h.secAgg {
			err = l.secAgg(now, h.subject, h.data)
		} else {
			err = l.update(now, h.data, h.reply)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// dropHeld rejects every held message with reason.
func (l *Lifecycle) dropHeld(reason string) {
	for _, h := range l.held {
		l.refuse(h, reason)
	}
	l.held, l.heldBytes = nil, 0
	if l.stats.RegistryWaiting != 0 {
		l.stats.RegistryWaiting = 0
		l.dirty = true
	}
}

// refuse rejects a message the round never verified, counting it where a
// verified one would be counted and telling a stream's client.
func (l *Lifecycle) refuse(h held, reason string) {
	l.count(reason)
	if h.secAgg {
		return
	}
	if l.cur != nil {
		l.cur.rejected[reason]++
	}
	if t, err := wire.Peek(h.data); err == nil && t == wire.TypeStreamOpen {
		var o wire.StreamOpen
		_ = wire.Decode(h.data, wire.TypeStreamOpen, &o) // for its round and client only
		l.grant(h.reply, wire.StreamGrant{Round: o.Round, Client: o.Client, Reason: reason})
	}
}

// update handles a message on an update subject.
func (l *Lifecycle) update(now time.Time, data []byte, reply Reply) error {
	t, perr := wire.Peek(data)
	if perr == nil && (t == wire.TypeUpdate || t == wire.TypeStreamOpen) {
		// Verifying it needs the registry (its sender's key and consent);
		// a chunk belongs to a stream whose open was verified already.
		switch {
		case l.waitReg:
			l.hold(held{data: data, reply: reply})
			return nil
		case l.noReg:
			l.refuse(held{data: data, reply: reply}, ReasonNoRegistry)
			return nil
		}
	}
	if perr == nil && (t == wire.TypeStreamOpen || t == wire.TypeChunk) {
		l.onStream(t, data, reply)
	} else {
		if l.cur == nil {
			l.count(ReasonNoRound)
			l.log.Debug("update rejected", "reason", ReasonNoRound)
			return nil
		}
		reason := l.cur.Add(data)
		l.count(reason)
		if reason != "" {
			l.log.Debug("update rejected", "reason", reason)
		}
	}
	if l.cur != nil && l.cur.Complete() {
		return l.finalize(now)
	}
	return nil
}

// onStream handles a StreamOpen or a Chunk. Grants and acks are actions:
// nothing waits for a client.
func (l *Lifecycle) onStream(t wire.Type, data []byte, reply Reply) {
	cur := l.cur
	if cur == nil {
		// Refused as the kind of message it is (a chunk's client reads a
		// ChunkAck), naming what of it decodes.
		l.count(ReasonNoRound)
		if t == wire.TypeChunk {
			h, _, _ := wire.DecodeChunk(data)
			l.ackChunk(reply, wire.ChunkAck{Round: h.Round, Client: h.Client, Offset: h.Offset, Reason: ReasonNoRound})
		} else {
			var o wire.StreamOpen
			_ = wire.Decode(data, wire.TypeStreamOpen, &o)
			l.grant(reply, wire.StreamGrant{Round: o.Round, Client: o.Client, Reason: ReasonNoRound})
		}
		return
	}
	if l.streams == nil {
		l.streams = NewStreams(cur, l.cfg.StreamSlots, l.cfg.StreamWindow)
		l.replies = map[string]Reply{}
	}
	s := l.streams
	switch t {
	case wire.TypeStreamOpen:
		var o wire.StreamOpen
		if err := wire.Decode(data, wire.TypeStreamOpen, &o); err != nil {
			cur.rejected[ReasonMalformed]++
			l.count(ReasonMalformed)
			l.grant(reply, wire.StreamGrant{Reason: ReasonMalformed})
			return
		}
		granted, reason := s.Open(o)
		switch {
		case reason != "":
			l.count(reason)
			l.grant(reply, wire.StreamGrant{Round: o.Round, Client: o.Client, Reason: reason})
		case granted:
			l.grant(reply, wire.StreamGrant{Round: o.Round, Client: o.Client, Window: l.cfg.StreamWindow})
		default:
			l.replies[o.Client] = reply
		}
	case wire.TypeChunk:
		h, cdata, err := wire.DecodeChunk(data)
		if err != nil {
			l.stray()
			l.ackChunk(reply, wire.ChunkAck{Reason: ReasonMalformed})
			return
		}
		reason, done, ok, grants := s.Chunk(h, cdata)
		if !ok {
			l.stray()
			l.ackChunk(reply, wire.ChunkAck{Round: h.Round, Client: h.Client, Offset: h.Offset, Reason: ReasonNoRound})
			return
		}
		if done {
			l.count(reason)
		}
		l.ackChunk(reply, wire.ChunkAck{Round: h.Round, Client: h.Client, Offset: h.Offset, Reason: reason})
		for _, c := range grants {
			l.grant(l.replies[c], wire.StreamGrant{Round: cur.open.Round, Client: c, Window: l.cfg.StreamWindow})
			delete(l.replies, c)
		}
	}
}

func (l *Lifecycle) stray() {
	l.stats.StrayChunks++
	l.dirty = true
}

// abortStreams discards the staged and queued streams of the round about
// to end and tells queued clients their stream is refused.
func (l *Lifecycle) abortStreams() {
	if l.streams == nil {
		return
	}
	for _, c := range l.streams.Abort() {
		l.count(ReasonIncomplete)
		l.grant(l.replies[c], wire.StreamGrant{Round: l.cur.open.Round, Client: c, Reason: ReasonIncomplete})
	}
	l.streams, l.replies = nil, nil
}

// secAgg handles a client's secure-aggregation message.
func (l *Lifecycle) secAgg(now time.Time, subj string, data []byte) error {
	switch {
	case l.sa == nil:
		l.count(ReasonNoRound)
		return nil
	case l.waitReg:
		l.hold(held{secAgg: true, subject: subj, data: data})
		return nil
	case l.noReg:
		l.refuse(held{secAgg: true, subject: subj, data: data}, ReasonNoRegistry)
		return nil
	}
	if reason := l.sa.Handle(subj, data); reason != "" {
		l.count(reason)
		l.log.Debug("secagg message rejected", "reason", reason)
		return nil
	}
	l.stats.SecAggMessages++
	l.dirty = true
	if l.sa.StageComplete() {
		return l.advance(now)
	}
	return nil
}

// advance closes the session's stage; after the last it publishes the
// partial. An empty stage closes at once.
func (l *Lifecycle) advance(now time.Time) error {
	for l.sa != nil && !l.sa.Done() {
		out, err := l.sa.Advance()
		if err != nil {
			l.saFail(secAggReason(err), err)
			return nil
		}
		for _, a := range out {
			l.emit(SendSecAgg{Round: l.cur.open.Round, Msg: a})
		}
		if l.sa.Done() {
			l.stats.SecAggSessions++
			l.dirty = true
			return l.finalize(now)
		}
		if !l.sa.StageComplete() {
			l.arm(l.sa.Deadline())
			return nil
		}
	}
	return nil
}

// tick closes what is due at now: the session's stage, or the round.
func (l *Lifecycle) tick(now time.Time) error {
	l.armed = time.Time{} // the timer fired: it is no longer set
	switch {
	case l.sa != nil:
		if now.Before(l.sa.Deadline()) {
			l.arm(l.sa.Deadline())
			return nil
		}
		return l.advance(now)
	case l.cur != nil:
		if d := time.UnixMilli(l.cur.open.DeadlineUnixMs); now.Before(d) {
			l.arm(d)
			return nil
		}
		return l.finalize(now)
	}
	return nil
}

// endRound forgets the open round and everything that belongs to it.
func (l *Lifecycle) endRound() {
	l.cur, l.sa = nil, nil
	l.waitReg, l.noReg = false, false
	l.arm(time.Time{})
}

// saFail ends a session without a sum: the round contributes nothing.
func (l *Lifecycle) saFail(reason string, err error) {
	l.stats.SecAggFailed[reason]++
	l.dirty = true
	if l.cur != nil {
		l.log.Warn("secagg session failed: the region contributes nothing to the round", "round", l.cur.open.Round, "reason", reason, "err", err)
		l.abortStreams()
		l.dropHeld(ReasonNoRegistry)
	}
	l.endRound()
}

// finalize ends the open round: streams still staged and messages still
// held are rejected, the noise is added (once: Round.Finalize), and the
// signed partial is published. A round whose secure-aggregation session is
// unfinished is discarded instead.
func (l *Lifecycle) finalize(now time.Time) error {
	cur := l.cur
	if cur == nil {
		return nil
	}
	if l.sa != nil && !l.sa.Done() {
		l.saFail(SecAggSuperseded, errors.New("round ended before the session"))
		return nil
	}
	l.abortStreams()
	l.dropHeld(ReasonNoRegistry)
	l.endRound()
	p, err := cur.Finalize(l.noise)
	if err != nil {
		return err
	}
	if l.cfg.Key != nil {
		p.Sig = l.cfg.Key.Sign(identity.PartialMessage(p.Job, p.Round, p.Region, p.Count, p.BitSum, identity.Digest(p.Sum)))
	}
	l.flushStats()
	l.emit(PublishPartial{Partial: p, Elapsed: now.Sub(l.openedAt)})
	return nil
}
