package edge

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/strata-fl/strata/identity"
	"github.com/strata-fl/strata/mesh"
	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/secagg"
)

// A client's side of a region's secure-aggregation session (secagg): on
// round.open the session advertises keys and shares them at once, while
// the worker pool trains; the trained update is clipped, edge-noised,
// quantized (secagg.Quantizer, stochastic rounding) and masked, and the
// client answers the region's unmasking request. Keys, seeds and rounding
// coins always come from crypto/rand, never from FleetConfig.Rand.

// trained is a worker's result for a secagg session: the clipped, noised
// update and the adaptive-clipping bit.
type trained struct {
	vec []float64
	bit uint8
	err error
}

// saKey routes a region's messages to the session of one client and round.
type saKey struct {
	client string
	round  uint64
}

// onSecAgg runs on the connection's dispatcher; it never blocks.
func (f *Fleet) onSecAgg(c Client, m *nats.Msg) {
	var d wire.SecAggDown
	if err := wire.Decode(m.Data, wire.TypeSecAggDown, &d); err != nil || d.Job != f.cfg.Job || d.Region != c.Region {
		return
	}
	f.saMu.Lock()
	ch := f.saBoxes[saKey{c.ID, d.Round}]
	f.saMu.Unlock()
	if ch == nil {
		return
	}
	select {
	case ch <- d.Body:
	default:
		f.mu.Lock()
		f.stats.QueueDrops++
		f.mu.Unlock()
	}
}

// runSessions starts one session goroutine per sampled client of a secagg
// round, and joins them all before it returns.
func (f *Fleet) runSessions(ctx context.Context) {
	done := make(chan struct{}, 1)
	n := 0
	defer func() {
		for ; n > 0; n-- {
			<-done
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-done:
			n--
		case t := <-f.saTasks:
			n++
			go func() {
				defer func() { done <- struct{}{} }()
				err := f.secAggSession(ctx, t)
				f.mu.Lock()
				if err != nil {
					f.stats.Failed++
					f.stats.SecAggDropped++
				} else {
					f.stats.Published++
				}
				f.mu.Unlock()
				if err != nil && ctx.Err() == nil {
					f.cfg.Logger.Warn("client left the secagg session", "client", t.client.ID, "round", t.open.Round, "err", err)
				}
			}()
		}
	}
}

// secAggSetup derives the client's session from its round.open, as its
// region does on its own (regional/secaggsetup.go: the same fields).
func secAggSetup(open *wire.RoundOpen) (*secagg.Setup, error) {
	p := open.SecAgg
	if p == nil || p.Infeasible != "" {
		return nil, fmt.Errorf("edge: round %d has no runnable secagg session", open.Round)
	}
	s, err := secagg.NewSetup(secagg.SetupConfig{Names: []string{open.Job, open.Region}, Round: open.Round, Members: open.Sampled,
		Degree: p.Degree, Threshold: p.Threshold, MinSurvivors: p.MinSurvivors, Bits: p.Bits, Dim: open.Dim,
		Clip: open.ClipNorm, Range: p.Range, Scale: p.Scale, Bit: open.ClipBits})
	if err != nil {
		return nil, fmt.Errorf("edge: round %d: secagg plan: %w", open.Round, err)
	}
	return s, nil
}

// errDropped is returned by a session the fault hook made drop out.
var errDropped = errors.New("edge: dropped out of the secagg session (FleetConfig.SecAggDrop)")

func (f *Fleet) secAggSession(ctx context.Context, t task) error {
	ctx, cancel := context.WithDeadline(ctx, time.UnixMilli(t.open.DeadlineUnixMs))
	defer cancel()
	c := t.client
	setup, err := secAggSetup(&t.open)
	if err != nil {
		return err
	}
	id, ok := setup.ID(c.ID)
	if !ok {
		return fmt.Errorf("edge %s: not a member of round %d's session", c.ID, t.open.Round)
	}
	cl, err := secagg.NewClient(secagg.ClientConfig{ID: id, Session: setup.Session, Params: setup.Params})
	if err != nil {
		return err
	}
	key := saKey{c.ID, t.open.Round}
	box := make(chan []byte, 8)
	f.saMu.Lock()
	f.saBoxes[key] = box
	f.saMu.Unlock()
	defer func() {
		f.saMu.Lock()
		delete(f.saBoxes, key)
		f.saMu.Unlock()
	}()
	drop := func(st secagg.Stage) bool { return f.cfg.SecAggDrop != nil && f.cfg.SecAggDrop(c.ID, t.open.Round, st) }

	// Train meanwhile, in the worker pool.
	res := make(chan trained, 1)
	t.out = res
	select {
	case f.tasks <- t:
	default:
		return fmt.Errorf("edge %s: training queue full", c.ID)
	}
	if drop(secagg.DropBeforeAdvertise) {
		return errDropped
	}
	adv, err := cl.AdvertiseKeys()
	if err != nil {
		return err
	}
	if err := f.sendSecAgg(t, adv); err != nil {
		return err
	}
	nk, err := await[*secagg.NeighbourKeys](ctx, box)
	if err != nil {
		return fmt.Errorf("waiting for neighbour keys: %w", err)
	}
	if drop(secagg.DropBeforeShareKeys) {
		return errDropped
	}
	sk, err := cl.ShareKeys(nk)
	if err != nil {
		return err
	}
	if err := f.sendSecAgg(t, sk); err != nil {
		return err
	}
	var tr trained
	select {
	case tr = <-res:
	case <-ctx.Done():
		return fmt.Errorf("waiting for training: %w", ctx.Err())
	}
	if tr.err != nil {
		return tr.err
	}
	x, err := setup.Encode(tr.vec, tr.bit)
	if err != nil {
		return err
	}
	sb, err := await[*secagg.ShareBundle](ctx, box)
	if err != nil {
		return fmt.Errorf("waiting for the share bundle: %w", err)
	}
	if drop(secagg.DropBeforeMaskedInput) {
		return errDropped
	}
	mi, err := cl.MaskInput(sb, x)
	if err != nil {
		return err
	}
	if err := f.sendSecAgg(t, mi); err != nil {
		return err
	}
	if drop(secagg.DropBeforeUnmask) {
		return errDropped
	}
	ur, err := await[*secagg.UnmaskRequest](ctx, box)
	if err != nil {
		return fmt.Errorf("waiting for the unmask request: %w", err)
	}
	resp, err := cl.Unmask(ur)
	if err != nil {
		return err
	}
	return f.sendSecAgg(t, resp)
}

// await returns the next message of type M from the region, skipping
// anything else (a malformed or out-of-turn message is the region's error,
// and the session's state machine would refuse it anyway).
func await[M secagg.Message](ctx context.Context, box <-chan []byte) (M, error) {
	var zero M
	for {
		select {
		case <-ctx.Done():
			return zero, ctx.Err()
		case b := <-box:
			m, err := secagg.Decode(b)
			if err != nil {
				continue
			}
			if mm, ok := m.(M); ok {
				return mm, nil
			}
		}
	}
}

// sendSecAgg wraps and signs one secagg message and sends it to the region.
func (f *Fleet) sendSecAgg(t task, m secagg.Message) error {
	body, err := m.MarshalBinary()
	if err != nil {
		return err
	}
	c := t.client
	env := wire.SecAggUp{Job: f.cfg.Job, Round: t.open.Round, Region: c.Region, Client: c.ID, Body: body}
	if k := f.cfg.Keys[c.ID]; k != nil {
		env.Sig = k.Sign(identity.SecAggMessage(f.cfg.Job, t.open.Round, c.Region, c.ID, identity.Digest(body)))
	} else if t.open.Signed {
		return fmt.Errorf("%w: %s", ErrNoKey, c.ID)
	}
	b, err := wire.Encode(wire.TypeSecAggUp, &env)
	if err != nil {
		return err
	}
	nc := f.conns[c.ID]
	if max := nc.MaxPayload(); int64(len(b)) > max {
		return fmt.Errorf("edge %s: secagg message of %d bytes exceeds the server's max payload %d: a model of %d parameters is too large for secure aggregation on this server (raise max_payload)", c.ID, len(b), max, t.open.Dim)
	}
	subj, err := mesh.SecAggSubject(f.cfg.Job, c.Region, c.ID)
	if err != nil {
		return err
	}
	if err := nc.Publish(subj, b); err != nil {
		return fmt.Errorf("edge %s: secagg publish: %w", c.ID, err)
	}
	return nil
}
