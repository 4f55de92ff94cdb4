package regional

import (
	"fmt"
	"hash/crc32"

	"github.com/nats-io/nats.go"

	"github.com/strata-fl/strata/mesh"
	"github.com/strata-fl/strata/mesh/wire"
)

// respond publishes a reply of type t. A failed reply is logged, not
// fatal: the client times out and the round goes on without it.
func (r *Runner) respond(reply Reply, t wire.Type, v any) {
	if reply == "" {
		return
	}
	b, err := wire.Encode(t, v)
	if err == nil {
		err = r.cfg.Conn.Publish(string(reply), b)
	}
	if err != nil {
		r.cfg.Logger.Warn("stream reply failed", "err", err)
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

// publish sends a signed partial, in one message when it fits the
// server's max payload and in PartialChunks otherwise.
func (r *Runner) publish(p *wire.Partial) error {
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
	r.cfg.Logger.Debug("partial published", "round", p.Round, "count", p.Count)
	return nil
}

// partialChunkBytes is the largest slice of a partial sent in one message:
// the server's max payload less room for the header.
func partialChunkBytes(nc *nats.Conn) int {
	return max(8, int(nc.MaxPayload())-(64<<10)) &^ 7
}

// publishChunked sends a partial too large for one message as
// PartialChunks of at most the server's max payload, encoding one at a
// time into one buffer: the partial is never held twice.
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
	r.cfg.Logger.Debug("partial published in chunks", "round", p.Round, "count", p.Count, "bytes", len(p.Sum))
	return nil
}
