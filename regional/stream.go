package regional

import (
	"encoding/binary"
	"hash"
	"math"

	"github.com/strata-fl/strata/identity"
	"github.com/strata-fl/strata/internal/accum"
	"github.com/strata-fl/strata/mesh/wire"
)

// Rejection reasons of streamed updates.
const (
	ReasonIncomplete = "incomplete_stream" // the deadline came before the last chunk
	ReasonDigest     = "digest_mismatch"
	ReasonChunk      = "bad_chunk" // out of order, wrong total, wrong length, bad index or scale
	ReasonEncoding   = "bad_encoding"
	ReasonBusy       = "stream_already_open"
)

// DefaultStreamSlots is how many streams a region stages at once; above
// LargeDim parameters the default is 2, so that the sum and the staged
// streams (16·d bytes) leave the garbage collector room under 24·d.
const DefaultStreamSlots = 3

// LargeDim is the dimension above which a region stages 2 streams by
// default rather than DefaultStreamSlots.
const LargeDim = 4 << 20

// DefaultStreamWindow is how many chunks a client may send unacknowledged.
const DefaultStreamWindow = 4

// Streams stages the streamed updates of one Round. It is pure and
// single-threaded like Round; the runner feeds it and does the I/O.
//
// Memory. A stream's chunks are retained as they arrive (the bytes NATS
// delivered, no copy) while their norm, finiteness and digest are checked
// incrementally; only when the last chunk verifies are they added to the
// round's float64 sum, with the accum kernel. An incomplete or failed stream
// is thus discarded whole, exactly: nothing of it ever touched the sum.
// At most Slots streams are staged at once, and each client keeps at most a
// window of chunks unacknowledged, so a region holds the sum (8·d bytes)
// plus Slots staged updates (4·d bytes each for float32, d for q8, 8·k for
// top-k) whatever the number of clients N: with the default 3 slots (2
// above LargeDim), at most 20·d bytes (16·d) for float32 updates.
//
// Clients beyond the slots wait in FIFO order for a grant; flow control is
// thus by admission (slots) and by acknowledgement (window), and a burst of
// large updates queues at the clients, never in the server's or the
// region's buffers. Grants are staggered: a queued stream is admitted
// only while fewer than slots−1 staged streams are still ramping up (a
// stream in its tail — its client may already send all it has left — does
// not count), so streams follow each other through the pipe rather than
// finishing together and leaving it empty while the next ones start.
type Streams struct {
	r       *Round
	slots   int
	window  int
	active  map[string]*stream
	waiting []string
	queued  map[string]wire.StreamOpen
}

type stream struct {
	open    wire.StreamOpen
	next    int // next expected element offset
	chunks  [][]byte
	offsets []int
	scales  []float32
	sumsq   float64
	crc     uint32
	lastIdx int64     // topk: last index seen
	chunkN  int       // elements in the last chunk received
	hash    hash.Hash // identity.Digest of the data, for the signed digest
}

// newStream stages o. In a signed round the data is hashed as it arrives
// and checked against the digest the client signed, which subsumes the
// last chunk's CRC (a stronger check of the same bytes), so the CRC pass is
// skipped; otherwise the CRC is what verifies the stream.
func newStream(o wire.StreamOpen, signed bool) *stream {
	st := &stream{open: o, lastIdx: -1}
	if signed {
		st.hash = identity.NewDigest()
	}
	return st
}

// tail reports whether the client may already send everything it has left.
func (st *stream) tail(window int) bool {
	return st.chunkN > 0 && st.next+window*st.chunkN >= st.open.Total
}

// NewStreams stages streams for r with the given number of slots and the
// clients' window of unacknowledged chunks (0 means the defaults).
func NewStreams(r *Round, slots, window int) *Streams {
	slots = streamSlots(slots, r.open.Dim)
	if window <= 0 {
		window = DefaultStreamWindow
	}
	return &Streams{r: r, slots: slots, window: window, active: map[string]*stream{}, queued: map[string]wire.StreamOpen{}}
}

// streamSlots returns the slots a region stages for rounds of dim
// parameters when configured with slots (0: the default).
func streamSlots(slots, dim int) int {
	switch {
	case slots > 0:
		return slots
	case dim > LargeDim:
		return 2
	}
	return DefaultStreamSlots
}

// MemoryLimit is the heap a region needs for rounds of dim parameters with
// the given stream slots (0: the default) of elem bytes per element (0:
// float32's 4; an edge-noised round's float64 takes 8): the float64 sum
// (8·dim bytes), the staged streams (at most elem·dim each), 4·dim of room for garbage
// between collections (retired chunks; the partial is encoded in the sum's
// own memory) and 32 MiB for everything else. A process
// that runs one region sets it as its soft memory limit, so that the
// garbage collector keeps the process near what the region holds rather
// than letting the heap double between collections (at 10⁸ parameters
// that would be gigabytes).
func MemoryLimit(dim, slots, elem int) int64 {
	d := int64(dim)
	if elem <= 0 {
		elem = 4
	}
	return 8*d + int64(elem)*d*int64(streamSlots(slots, dim)) + 4*d + 32<<20
}

// admit reports whether a queued stream may start now: when a slot is
// free and fewer than slots−1 (at least one) staged streams are still
// ramping up. Streams in their tail do not count, so grants are staggered;
// and one client that stalls mid-stream cannot hold up the others (its
// stream is discarded at the deadline).
func (s *Streams) admit() bool {
	if len(s.active) >= s.slots {
		return false
	}
	ramping := 0
	for _, st := range s.active {
		if !st.tail(s.window) {
			ramping++
		}
	}
	return ramping < max(1, s.slots-1)
}

// Round returns the round the streams feed.
func (s *Streams) Round() *Round { return s.r }

// Active returns the number of streams being staged.
func (s *Streams) Active() int { return len(s.active) }

// Open verifies a stream request. It returns a rejection reason, or "" and
// whether the stream is granted now (false: queued until a slot frees).
func (s *Streams) Open(o wire.StreamOpen) (granted bool, reason string) {
	reason = s.checkOpen(o)
	if reason != "" {
		s.r.rejected[reason]++
		return false, reason
	}
	if len(s.waiting) == 0 && s.admit() {
		s.active[o.Client] = newStream(o, s.r.open.Signed)
		return true, ""
	}
	s.queued[o.Client] = o
	s.waiting = append(s.waiting, o.Client)
	return false, ""
}

func (s *Streams) checkOpen(o wire.StreamOpen) string {
	r := s.r
	if r.finalized {
		return ReasonWrongRound
	}
	if reason := r.checkSender(o.Job, o.Region, o.Round, o.ModelVersion, o.Client); reason != "" {
		return reason
	}
	switch {
	case s.active[o.Client] != nil:
		return ReasonBusy
	case o.Dim != r.open.Dim:
		return ReasonWrongDim
	case wire.ElemBytes(o.Encoding) == 0, r.exact() != (o.Encoding == wire.EncodingF64):
		return ReasonEncoding
	case o.Unclipped > 1:
		return ReasonMalformed
	}
	if _, ok := s.queued[o.Client]; ok {
		return ReasonBusy
	}
	if o.Encoding == wire.EncodingTopK {
		if o.Total < 0 || o.Total > o.Dim {
			return ReasonChunk
		}
	} else if o.Total != o.Dim {
		return ReasonWrongDim
	}
	if r.open.Signed {
		if len(o.Digest) != 32 {
			return ReasonBadSignature
		}
		return r.checkSignature(o.Client, o.Unclipped, [32]byte(o.Digest), o.Sig)
	}
	return ""
}

// Chunk consumes one chunk of client's stream. It returns a rejection
// reason ("" when the chunk was taken), whether the stream ended (accepted
// when reason is ""), and the clients granted a slot this chunk freed.
// A chunk of a client with no stream staged is ignored with ok false.
func (s *Streams) Chunk(h wire.ChunkHeader, data []byte) (reason string, done, ok bool, grants []string) {
	st := s.active[h.Client]
	if st == nil || h.Job != s.r.open.Job || h.Round != s.r.open.Round || s.r.finalized {
		return "", false, false, nil
	}
	reason = s.take(st, h, data)
	if reason == "" && !h.Last {
		return "", false, true, s.promote()
	}
	if reason == "" {
		reason = s.commit(st)
	}
	if reason != "" {
		s.r.rejected[reason]++
	}
	delete(s.active, h.Client)
	return reason, true, true, s.promote()
}

// promote grants queued streams the free slots.
func (s *Streams) promote() []string {
	var grants []string
	for len(s.waiting) > 0 && s.admit() {
		c := s.waiting[0]
		s.waiting = s.waiting[1:]
		o := s.queued[c]
		delete(s.queued, c)
		s.active[c] = newStream(o, s.r.open.Signed)
		grants = append(grants, c)
	}
	return grants
}

func (s *Streams) take(st *stream, h wire.ChunkHeader, data []byte) string {
	eb := wire.ElemBytes(st.open.Encoding)
	n := len(data) / eb
	switch {
	case h.Offset != st.next, h.Total != st.open.Total, len(data)%eb != 0,
		n == 0 && st.open.Total > 0, n > st.open.Total-h.Offset,
		h.Last != (h.Offset+n == st.open.Total):
		return ReasonChunk
	}
	var sq float64
	switch st.open.Encoding {
	case wire.EncodingF32:
		sq, _ = accum.SumSquares(data)
	case wire.EncodingF64:
		v, err := wire.Float64s(data)
		if err != nil {
			return ReasonChunk
		}
		if reason := s.r.checkValues64(v, st.sumsq); reason != "" {
			return reason
		}
		for _, x := range v {
			sq += x * x
		}
	case wire.EncodingQ8:
		sc := float64(h.Scale)
		if !(sc >= 0) || math.IsInf(sc, 0) {
			return ReasonChunk
		}
		var q2 int64
		for _, b := range data {
			q := int64(int8(b))
			q2 += q * q
		}
		sq = sc * sc * float64(q2)
	case wire.EncodingTopK:
		for i := 0; i < n; i++ {
			idx := int64(binary.LittleEndian.Uint32(data[8*i:]))
			if idx <= st.lastIdx || idx >= int64(st.open.Dim) {
				return ReasonChunk
			}
			st.lastIdx = idx
			x := float64(math.Float32frombits(binary.LittleEndian.Uint32(data[8*i+4:])))
			sq += x * x
		}
	}
	st.sumsq += sq
	if math.IsNaN(st.sumsq) || math.IsInf(st.sumsq, 0) {
		return ReasonNonFinite
	}
	if math.Sqrt(st.sumsq) > s.r.normBound {
		return ReasonNorm
	}
	if st.hash != nil {
		st.hash.Write(data)
	} else {
		st.crc = wire.ChunkCRC(st.crc, st.open.Encoding, h.Scale, data)
	}
	st.chunks = append(st.chunks, data)
	st.offsets = append(st.offsets, h.Offset)
	st.scales = append(st.scales, h.Scale)
	st.next += n
	st.chunkN = n
	if h.Last && !st.verified(h.Digest) {
		return ReasonDigest
	}
	return ""
}

// verified reports whether a complete stream's data is what its client
// sent: the signed digest in a signed round, the last chunk's CRC else.
func (st *stream) verified(crc uint32) bool {
	if st.hash != nil {
		return st.signedDigestMatches()
	}
	return crc == st.crc
}

// signedDigestMatches compares the data received with the digest the
// client signed at the open.
func (st *stream) signedDigestMatches() bool {
	var data [32]byte
	st.hash.Sum(data[:0])
	var scales []float32
	if st.open.Encoding == wire.EncodingQ8 {
		scales = st.scales
	}
	d := wire.PayloadDigest(st.open.Encoding, st.open.Total, data, scales)
	return string(d[:]) == string(st.open.Digest)
}

// commit adds a verified stream to the round's sum; under a top-up cap
// already reached it is refused instead.
func (s *Streams) commit(st *stream) string {
	r := s.r
	if r.open.TopUpCap > 0 && r.count >= r.open.TopUpCap {
		return ReasonOverCap
	}
	for i, data := range st.chunks {
		off := st.offsets[i]
		switch st.open.Encoding {
		case wire.EncodingF32:
			accum.Add(r.sum[off:off+len(data)/4], data)
		case wire.EncodingF64:
			v, _ := wire.Float64s(data) // checked in take
			dst := r.sum[off : off+len(v)]
			for j, x := range v {
				dst[j] += x
			}
		case wire.EncodingQ8:
			sc := float64(st.scales[i])
			dst := r.sum[off : off+len(data)]
			for j, b := range data {
				dst[j] += sc * float64(int8(b))
			}
		case wire.EncodingTopK:
			for j := 0; j+8 <= len(data); j += 8 {
				idx := binary.LittleEndian.Uint32(data[j:])
				r.sum[idx] += float64(math.Float32frombits(binary.LittleEndian.Uint32(data[j+4:])))
			}
		}
	}
	r.accept(st.open.Client, st.open.Unclipped)
	return ""
}

// Abort discards every staged and queued stream, counting each as
// incomplete, and returns the queued clients (to be told their stream is
// refused). The runner calls it before finalizing the round.
func (s *Streams) Abort() (refused []string) {
	for c := range s.active {
		s.r.rejected[ReasonIncomplete]++
		delete(s.active, c)
	}
	for _, c := range s.waiting {
		s.r.rejected[ReasonIncomplete]++
		delete(s.queued, c)
		refused = append(refused, c)
	}
	s.waiting = nil
	return refused
}
