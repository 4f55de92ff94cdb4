package round

import (
	"fmt"
	"hash/crc32"
	"log/slog"
	"sort"

	"github.com/strata-fl/strata/identity"
	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/topology"
)

// collection gathers one partial per acknowledged region for a round and
// counts every one it refuses, by region and reason.
type collection struct {
	job    string
	round  uint64
	dim    int
	signed bool
	keys   map[string]string
	known  map[string]bool
	parts  map[string]*accepted
	chunks map[string]*partialAssembly
	// broken marks a region whose chunked partial failed: its remaining
	// chunks are dropped without being counted again.
	broken   map[string]bool
	rejected map[[2]string]int
}

// accepted is a verified partial and the digest of its sum (computed once:
// the signature covers it and the ledger's provenance records it).
type accepted struct {
	p      *wire.Partial
	digest [32]byte
}

func newCollection(t *topology.Topology, round uint64, dim int, keys map[string]string) collection {
	known := map[string]bool{}
	for _, r := range t.Regions {
		known[r.ID] = true
	}
	return collection{job: t.Job, round: round, dim: dim, signed: t.Security.Signed(), keys: keys, known: known,
		parts: map[string]*accepted{}, chunks: map[string]*partialAssembly{}, broken: map[string]bool{}, rejected: map[[2]string]int{}}
}

// check says why a partial of (job, round, region) is not wanted now ("" if
// it is); late marks a message that arrived after the deadline and grace.
func (c *collection) check(job string, round uint64, region string, acked map[string]bool, late bool) string {
	switch {
	case job != c.job:
		return ReasonWrongJob
	case round < c.round || (round == c.round && late):
		return ReasonLate
	case round > c.round:
		return ReasonWrongRound
	case !c.known[region]:
		return ReasonUnknownRegion
	case !acked[region]:
		return ReasonNotAcknowledged
	case c.parts[region] != nil:
		return ReasonDuplicate
	}
	return ""
}

// reject counts one refused partial; the region is named only if the
// topology has it, so that labels stay bounded whatever arrives.
func (c *collection) reject(region, reason string) Log {
	label := region
	if !c.known[region] {
		label = ""
	}
	c.rejected[[2]string{label, reason}]++
	level := slog.LevelWarn
	if reason == ReasonLate || reason == ReasonWrongRound {
		level = slog.LevelDebug
	}
	return Log{Level: level, Msg: "partial rejected", Args: []any{"reason", reason, "region", region, "round", c.round}}
}

// receive takes one message: a whole partial, or one chunk of one. It
// returns the log lines of what it refused.
func (c *collection) receive(b []byte, acked map[string]bool, late bool) []Action {
	var p *wire.Partial
	if typ, _ := wire.Peek(b); typ == wire.TypePartialChunk {
		var acts []Action
		if p, acts = c.chunk(b, acked, late); p == nil {
			return acts
		}
	} else {
		p = &wire.Partial{}
		if err := wire.Decode(b, wire.TypePartial, p); err != nil {
			return []Action{c.reject("", ReasonMalformed)}
		}
	}
	if reason := c.check(p.Job, p.Round, p.Region, acked, late); reason != "" {
		return []Action{c.reject(p.Region, reason)}
	}
	if len(p.Sum) != 8*c.dim || p.Count < 0 {
		return []Action{c.reject(p.Region, ReasonWrongDim)}
	}
	a := &accepted{p: p, digest: identity.Digest(p.Sum)}
	if c.signed {
		if err := c.verify(a); err != nil {
			l := c.reject(p.Region, ReasonBadSignature)
			l.Args = append(l.Args, "err", err)
			return []Action{l}
		}
	}
	c.parts[p.Region] = a
	return nil
}

// chunk adds one chunk to its region's assembly; it returns the partial
// once its last chunk is in. A chunked partial that is refused is counted
// once (at its first chunk, or when its chunks fail to add up).
func (c *collection) chunk(b []byte, acked map[string]bool, late bool) (*wire.Partial, []Action) {
	h, data, err := wire.DecodePartialChunk(b)
	if err != nil {
		return nil, []Action{c.reject("", ReasonMalformed)}
	}
	if reason := c.check(h.Job, h.Round, h.Region, acked, late); reason != "" {
		if h.Offset != 0 {
			return nil, nil
		}
		return nil, []Action{c.reject(h.Region, reason)}
	}
	a := c.chunks[h.Region]
	if h.Offset == 0 {
		a = &partialAssembly{}
		c.chunks[h.Region] = a
		delete(c.broken, h.Region)
	} else if a == nil {
		if c.broken[h.Region] {
			return nil, nil
		}
		a = &partialAssembly{} // it rejects a chunk that does not start the partial
		c.chunks[h.Region] = a
	}
	full, err := a.add(h, data, c.dim)
	if err != nil {
		delete(c.chunks, h.Region)
		c.broken[h.Region] = true
		l := c.reject(h.Region, ReasonMalformed)
		l.Msg, l.Args = "chunked partial rejected", append(l.Args, "err", err)
		return nil, []Action{l}
	}
	if full != nil {
		delete(c.chunks, h.Region)
	}
	return full, nil
}

// verify checks a partial against its region's enrolled key, once.
func (c *collection) verify(a *accepted) error {
	key, ok := c.keys[a.p.Region]
	if !ok {
		return fmt.Errorf("%w: region %q has no enrolled key", identity.ErrUnknown, a.p.Region)
	}
	p := a.p
	return identity.Verify(key, identity.PartialMessage(p.Job, p.Round, p.Region, p.Count, p.BitSum, a.digest), p.Sig)
}

// rejections lists the counts, sorted by region and reason.
func (c *collection) rejections() []Rejection {
	out := make([]Rejection, 0, len(c.rejected))
	for k, n := range c.rejected {
		out = append(out, Rejection{Region: k[0], Reason: k[1], Count: n})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Region != out[j].Region {
			return out[i].Region < out[j].Region
		}
		return out[i].Reason < out[j].Reason
	})
	return out
}

// regions lists the regions whose partial was accepted, sorted.
func (c *collection) regions() []string {
	out := make([]string, 0, len(c.parts))
	for id := range c.parts {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

// partial handles one message while collecting; the collection closes
// when every acknowledged region has reported, or when a message arrives
// after the deadline and grace.
func (m *Machine) partial(e PartialMsg) []Action {
	r := m.r
	late := !e.At.Before(r.until)
	acts := r.collect.receive(e.Data, r.acked, late)
	if late || len(r.collect.parts) == len(r.acked) {
		return append(acts, m.closeCollection()...)
	}
	return acts
}

// partialAssembly rebuilds one region's partial that arrived in chunks
// (partials larger than one NATS message). Chunks of one region arrive in
// order; anything out of order, oversized or failing the digest discards the
// assembly, and the region counts as not having reported.
type partialAssembly struct {
	head wire.PartialChunkHeader
	sum  []byte
	next int // next expected offset, in values
	crc  uint32
}

// add takes one chunk; it returns the complete partial after the last one.
func (a *partialAssembly) add(h wire.PartialChunkHeader, data []byte, dim int) (*wire.Partial, error) {
	switch {
	case h.Total != dim:
		return nil, fmt.Errorf("partial of %d values, the model has %d", h.Total, dim)
	case len(data)%8 != 0 || h.Offset != a.next || h.Offset+len(data)/8 > dim:
		return nil, fmt.Errorf("chunk at %d of %d bytes does not continue the partial at %d", h.Offset, len(data), a.next)
	}
	if a.sum == nil {
		a.head = h
		a.sum = make([]byte, 8*dim)
	}
	copy(a.sum[8*h.Offset:], data)
	a.crc = crc32.Update(a.crc, wire.Castagnoli, data)
	a.next += len(data) / 8
	if !h.Last {
		return nil, nil
	}
	if a.next != dim || h.Digest != a.crc {
		return nil, fmt.Errorf("partial ends at %d of %d values with digest %08x, computed %08x", a.next, dim, h.Digest, a.crc)
	}
	return &wire.Partial{Job: a.head.Job, Round: a.head.Round, Region: a.head.Region, Count: a.head.Count,
		Rejected: a.head.Rejected, BitSum: h.BitSum, Sum: a.sum, Sig: h.Sig}, nil
}
