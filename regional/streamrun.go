package regional

import (
	"fmt"
	"hash/crc32"

	"github.com/nats-io/nats.go"

	"github.com/strata-fl/strata/mesh"
	"github.com/strata-fl/strata/mesh/wire"
)

// streamRun is the runner's side of streamed updates: the Streams of the
// current round and where to send grants to queued clients.
type streamRun struct {
	s       *Streams
	replies map[string]string // queued client → reply subject of its StreamOpen
	subs    []*nats.Subscription
}

// onStream handles a StreamOpen or Chunk message and reports whether m was
// one. It never blocks: grants and acks are published, not awaited.
func (r *Runner) onStream(cur *Round, m *nats.Msg) bool {
	t, err := wire.Peek(m.Data)
	if err != nil || (t != wire.TypeStreamOpen && t != wire.TypeChunk) {
		return false
	}
	if cur == nil {
		r.count(ReasonNoRound)
		r.respond(m.Reply, wire.TypeStreamGrant, &wire.StreamGrant{Reason: ReasonNoRound})
		return true
	}
	if r.sr.s == nil || r.sr.s.Round() != cur {
		r.sr.s = NewStreams(cur, r.cfg.StreamSlots, r.cfg.StreamWindow)
		r.sr.replies = map[string]string{}
	}
	switch t {
	case wire.TypeStreamOpen:
		var o wire.StreamOpen
		if err := wire.Decode(m.Data, wire.TypeStreamOpen, &o); err != nil {
			cur.rejected[ReasonMalformed]++
			r.count(ReasonMalformed)
			r.respond(m.Reply, wire.TypeStreamGrant, &wire.StreamGrant{Reason: ReasonMalformed})
			return true
		}
		granted, reason := r.sr.s.Open(o)
		switch {
		case reason != "":
			r.count(reason)
			r.respond(m.Reply, wire.TypeStreamGrant, &wire.StreamGrant{Round: o.Round, Client: o.Client, Reason: reason})
		case granted:
			r.respond(m.Reply, wire.TypeStreamGrant, &wire.StreamGrant{Round: o.Round, Client: o.Client, Window: r.cfg.StreamWindow})
		default:
			r.sr.replies[o.Client] = m.Reply
		}
	case wire.TypeChunk:
		h, data, err := wire.DecodeChunk(m.Data)
		if err != nil {
			r.stray()
			r.respond(m.Reply, wire.TypeChunkAck, &wire.ChunkAck{Reason: ReasonMalformed})
			return true
		}
		reason, done, ok, grants := r.sr.s.Chunk(h, data)
		if !ok {
			r.stray()
			r.respond(m.Reply, wire.TypeChunkAck, &wire.ChunkAck{Round: h.Round, Client: h.Client, Offset: h.Offset, Reason: ReasonNoRound})
			return true
		}
		if done {
			r.count(reason)
		}
		r.respond(m.Reply, wire.TypeChunkAck, &wire.ChunkAck{Round: h.Round, Client: h.Client, Offset: h.Offset, Reason: reason})
		for _, c := range grants {
			r.respond(r.sr.replies[c], wire.TypeStreamGrant, &wire.StreamGrant{Round: cur.open.Round, Client: c, Window: r.cfg.StreamWindow})
			delete(r.sr.replies, c)
		}
	}
	return true
}

// abortStreams discards the staged and queued streams of the round about to
// be finalized and tells queued clients their stream is refused.
func (r *Runner) abortStreams(cur *Round) {
	if r.sr.s == nil || r.sr.s.Round() != cur {
		return
	}
	for _, c := range r.sr.s.Abort() {
		r.count(ReasonIncomplete)
		r.respond(r.sr.replies[c], wire.TypeStreamGrant, &wire.StreamGrant{Round: cur.open.Round, Client: c, Reason: ReasonIncomplete})
	}
	r.sr.s, r.sr.replies = nil, nil
}

func (r *Runner) respond(reply string, t wire.Type, v any) {
	if reply == "" {
		return
	}
	b, err := wire.Encode(t, v)
	if err == nil {
		err = r.cfg.Conn.Publish(reply, b)
	}
	if err != nil {
		r.cfg.Logger.Warn("stream reply failed", "err", err)
	}
}

func (r *Runner) stray() {
	r.mu.Lock()
	r.stats.StrayChunks++
	r.mu.Unlock()
}

// dropped returns the messages NATS dropped from the runner's
// subscriptions because the runner fell behind (slow consumer).
func (r *Runner) dropped() int {
	n := 0
	for _, s := range r.sr.subs {
		if d, err := s.Dropped(); err == nil {
			n += d
		}
	}
	return n
}

// partialChunkBytes is the largest slice of a partial sent in one message:
// the server's max payload less room for the header.
func partialChunkBytes(nc *nats.Conn) int {
	return max(8, int(nc.MaxPayload())-(64<<10)) &^ 7
}

// publishChunked sends a partial too large for one message as
// PartialChunks of at most the server's max payload.
func (r *Runner) publishChunked(p *wire.Partial) error {
	subj, err := mesh.PartialSubject(r.cfg.Job, r.cfg.Region)
	if err != nil {
		return err
	}
	step := partialChunkBytes(r.cfg.Conn)
	total := len(p.Sum) / 8
	crc := uint32(0)
	var buf []byte
	for lo := 0; lo < len(p.Sum); lo += step {
		hi := min(lo+step, len(p.Sum))
		crc = crc32.Update(crc, wire.Castagnoli, p.Sum[lo:hi])
		h := wire.PartialChunkHeader{Job: p.Job, Round: p.Round, Region: p.Region, Count: p.Count, Rejected: p.Rejected,
			BitSum: p.BitSum, Offset: lo / 8, Total: total, Last: hi == len(p.Sum)}
		if h.Last {
			h.Digest, h.Sig = crc, p.Sig
		}
		if buf, err = wire.AppendPartialChunk(buf[:0], &h, p.Sum[lo:hi]); err != nil {
			return err
		}
		if err := r.cfg.Conn.Publish(subj, buf); err != nil {
			return fmt.Errorf("regional %s: publish partial chunk: %w", r.cfg.Region, err)
		}
		// Pace on the server so a large partial never piles up in our
		// outbound buffer.
		if err := r.cfg.Conn.Flush(); err != nil {
			return fmt.Errorf("regional %s: publish partial chunk: %w", r.cfg.Region, err)
		}
	}
	r.mu.Lock()
	r.stats.Partials++
	r.mu.Unlock()
	r.cfg.Logger.Debug("partial published in chunks", "round", p.Round, "count", p.Count, "bytes", len(p.Sum))
	return nil
}
