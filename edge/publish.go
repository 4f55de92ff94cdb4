package edge

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/strata-fl/strata/identity"
	"github.com/strata-fl/strata/mesh"
	"github.com/strata-fl/strata/mesh/wire"
)

// StreamConfig says how a client sends its update. The zero value sends
// float32 updates, as one message when they fit in ChunkBytes and as a
// stream of chunks otherwise.
type StreamConfig struct {
	// ChunkBytes is the data carried by one chunk, in bytes; default
	// 1 MiB, ≥ 0. It must stay below the server's max payload.
	ChunkBytes int
	// Encoding is wire.EncodingF32 (default), EncodingQ8 or EncodingTopK
	// (EncodingF64 too, which edge-noised rounds use); a compressed
	// encoding always streams.
	Encoding string
	// TopK is the fraction of coordinates EncodingTopK keeps, in (0, 1];
	// default 0.1.
	TopK float64
}

// withDefaults returns a copy of c with zero fields set to their defaults.
func (c StreamConfig) withDefaults() StreamConfig {
	if c.ChunkBytes <= 0 {
		c.ChunkBytes = 1 << 20
	}
	if c.Encoding == "" {
		c.Encoding = wire.EncodingF32
	}
	if c.TopK <= 0 || c.TopK > 1 {
		c.TopK = 0.1
	}
	return c
}

// Validate names the field that is wrong. Zero fields are valid: they take
// their defaults.
func (c StreamConfig) Validate() error {
	if c.Encoding != "" && wire.ElemBytes(c.Encoding) == 0 {
		return fmt.Errorf("%w: StreamConfig.Encoding %q: want %s, %s or %s", ErrConfig, c.Encoding, wire.EncodingF32, wire.EncodingQ8, wire.EncodingTopK)
	}
	if !(c.TopK >= 0 && c.TopK <= 1) {
		return fmt.Errorf("%w: StreamConfig.TopK %v: want a fraction in (0, 1] (0 means 0.1)", ErrConfig, c.TopK)
	}
	if c.ChunkBytes < 0 {
		return fmt.Errorf("%w: StreamConfig.ChunkBytes %d: want > 0 (0 means 1 MiB)", ErrConfig, c.ChunkBytes)
	}
	return nil
}

// Payload is an encoded update, cut into chunks of ChunkElems elements.
type Payload struct {
	Encoding   string
	Total      int       // elements
	ChunkElems int       // elements per chunk
	Data       []byte    // Total·ElemBytes(Encoding) bytes
	Scales     []float32 // q8: one per chunk
	// crc is the stream's CRC-32C (the last chunk's digest), computed once
	// by Encode so that a payload sent again (a retry, or a benchmark's
	// many clients) is not checksummed again; a Payload built otherwise
	// (crcSet false) is checksummed when sent.
	crc    uint32
	crcSet bool
}

// streamCRC is the CRC-32C the last chunk carries: of every chunk's scale
// (q8) and data, in chunk order.
func (p Payload) streamCRC() uint32 {
	if p.crcSet {
		return p.crc
	}
	eb := wire.ElemBytes(p.Encoding)
	crc := uint32(0)
	for i, lo := 0, 0; lo < p.Total; i, lo = i+1, lo+p.ChunkElems {
		hi := min(lo+p.ChunkElems, p.Total)
		var scale float32
		if p.Encoding == wire.EncodingQ8 {
			scale = p.Scales[i]
		}
		crc = wire.ChunkCRC(crc, p.Encoding, scale, p.Data[eb*lo:eb*hi])
	}
	return crc
}

// Digest is the payload digest a stream's signature covers.
func (p Payload) Digest() [32]byte {
	return wire.PayloadDigest(p.Encoding, p.Total, identity.Digest(p.Data), p.Scales)
}

// ErrStreamRefused is returned when the region refuses a stream or one of
// its chunks; the error names the region's reason.
var ErrStreamRefused = errors.New("edge: region refused the update")

// Encode encodes a clipped (and edge-noised) update. Compression never
// raises its L2 norm: top-k keeps a subset of the coordinates; q8 first
// shrinks the vector by T/(T+E), where T is its norm and E bounds the
// rounding error's norm (one quantization step per coordinate), so the
// quantized vector's norm is at most T in the worst case. The sensitivity
// the ledger charges (C) and the region's norm check are thus unchanged.
// u draws the uniforms of stochastic rounding (unbiased given the shrink).
func (c StreamConfig) Encode(delta []float64, u func() float64) Payload {
	c = c.withDefaults()
	eb := wire.ElemBytes(c.Encoding)
	p := Payload{Encoding: c.Encoding, ChunkElems: max(1, c.ChunkBytes/eb)}
	switch c.Encoding {
	case wire.EncodingQ8:
		p.Total = len(delta)
		p.Data, p.Scales = quantize8(delta, p.ChunkElems, u)
	case wire.EncodingTopK:
		k := max(1, int(math.Ceil(c.TopK*float64(len(delta)))))
		k = min(k, len(delta))
		p.Total = k
		p.Data = topK(delta, k)
	case wire.EncodingF64:
		p.Total = len(delta)
		p.Data = wire.AppendFloat64s(make([]byte, 0, 8*len(delta)), delta)
	default:
		p.Total = len(delta)
		p.Data = wire.AppendFloat64sAs32(make([]byte, 0, 4*len(delta)), delta)
	}
	p.crc, p.crcSet = p.streamCRC(), true
	return p
}

func quantize8(x []float64, chunk int, u func() float64) ([]byte, []float32) {
	norm2, err2 := 0.0, 0.0
	for lo := 0; lo < len(x); lo += chunk {
		m := 0.0
		for _, v := range x[lo:min(lo+chunk, len(x))] {
			m = max(m, math.Abs(v))
			norm2 += v * v
		}
		s := m / 127
		err2 += s * s * float64(min(chunk, len(x)-lo))
	}
	t, e := math.Sqrt(norm2), math.Sqrt(err2)
	alpha := 1.0
	if t+e > 0 {
		alpha = t / (t + e)
	}
	data := make([]byte, len(x))
	var scales []float32
	for lo := 0; lo < len(x); lo += chunk {
		part := x[lo:min(lo+chunk, len(x))]
		m := 0.0
		for _, v := range part {
			m = max(m, math.Abs(v))
		}
		s := float32(alpha * m / 127)
		scales = append(scales, s)
		if s == 0 {
			continue
		}
		for i, v := range part {
			y := alpha * v / float64(s) // in [-127, 127] up to rounding
			q := math.Floor(y + u())
			data[lo+i] = byte(int8(max(-127, min(127, q))))
		}
	}
	return data, scales
}

func topK(x []float64, k int) []byte {
	idx := make([]int, len(x))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return math.Abs(x[idx[a]]) > math.Abs(x[idx[b]]) })
	idx = idx[:k]
	sort.Ints(idx)
	out := make([]byte, 0, 8*k)
	for _, i := range idx {
		out = binary.LittleEndian.AppendUint32(out, uint32(i))
		out = binary.LittleEndian.AppendUint32(out, math.Float32bits(float32(x[i])))
	}
	return out
}

// PublishStream streams an encoded update to a region: it asks for a slot
// (waiting, up to ctx's deadline, for the region to grant one), then sends
// the chunks keeping at most the granted window unacknowledged, and returns
// once the region acknowledged the last chunk — nil if it accepted the
// update, an ErrStreamRefused naming the reason otherwise. Flow control is
// thus end to end: a client never has more than a window of chunks in the
// server or the region.
func PublishStream(ctx context.Context, nc *nats.Conn, subj string, open wire.StreamOpen, p Payload) error {
	eb := wire.ElemBytes(p.Encoding)
	if eb == 0 || len(p.Data) != eb*p.Total || p.ChunkElems <= 0 {
		return fmt.Errorf("edge: stream payload of %d bytes for %d %q elements", len(p.Data), p.Total, p.Encoding)
	}
	open.Encoding, open.Total = p.Encoding, p.Total
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return fmt.Errorf("edge: stream inbox: %w", err)
	}
	defer sub.Unsubscribe()
	sub.SetPendingLimits(-1, -1)
	ob, err := wire.Encode(wire.TypeStreamOpen, &open)
	if err != nil {
		return err
	}
	if err := nc.PublishMsg(&nats.Msg{Subject: subj, Reply: inbox, Data: ob}); err != nil {
		return fmt.Errorf("edge: stream open: %w", err)
	}
	m, err := sub.NextMsgWithContext(ctx)
	if err != nil {
		return fmt.Errorf("edge: waiting for a stream grant: %w", err)
	}
	var g wire.StreamGrant
	if err := wire.Decode(m.Data, wire.TypeStreamGrant, &g); err != nil {
		return fmt.Errorf("edge: stream grant: %w", err)
	}
	if g.Reason != "" {
		return fmt.Errorf("%w: %s", ErrStreamRefused, g.Reason)
	}
	window := max(1, g.Window)
	bp := chunkBufs.Get().(*[]byte)
	defer chunkBufs.Put(bp)
	buf := *bp
	defer func() { *bp = buf[:0] }()
	outstanding, sent := 0, 0
	nchunks := (p.Total + p.ChunkElems - 1) / p.ChunkElems
	if nchunks == 0 {
		nchunks = 1 // an empty stream still sends its last chunk
	}
	for acked := 0; acked < nchunks; {
		if sent < nchunks && outstanding < window {
			lo := sent * p.ChunkElems
			hi := min(lo+p.ChunkElems, p.Total)
			h := wire.ChunkHeader{Job: open.Job, Round: open.Round, Client: open.Client, Offset: lo, Total: p.Total}
			if p.Encoding == wire.EncodingQ8 {
				h.Scale = p.Scales[sent]
			}
			data := p.Data[eb*lo : eb*hi]
			if sent == nchunks-1 {
				h.Last, h.Digest = true, p.streamCRC()
			}
			if buf, err = wire.AppendChunk(buf[:0], &h, data); err != nil {
				return err
			}
			if err := nc.PublishMsg(&nats.Msg{Subject: subj, Reply: inbox, Data: buf}); err != nil {
				return fmt.Errorf("edge: chunk %d: %w", sent, err)
			}
			sent++
			outstanding++
			continue
		}
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return fmt.Errorf("edge: waiting for chunk acks (%d of %d): %w", acked, nchunks, err)
		}
		var a wire.ChunkAck
		if err := wire.Decode(m.Data, wire.TypeChunkAck, &a); err != nil {
			return fmt.Errorf("edge: chunk ack: %w", err)
		}
		if a.Reason != "" {
			return fmt.Errorf("%w: %s", ErrStreamRefused, a.Reason)
		}
		outstanding--
		acked++
	}
	return nil
}

// chunkBufs recycles the buffers chunks are encoded into (one per
// stream in flight), so a client does not allocate a chunk per stream.
var chunkBufs = sync.Pool{New: func() any { return new([]byte) }}

// streams reports whether an update of dim values goes as a stream: a
// compressed one always, a float32 or float64 one when it does not fit a
// chunk.
func (c StreamConfig) streams(dim int) bool {
	c = c.withDefaults()
	switch c.Encoding {
	case wire.EncodingF32, wire.EncodingF64:
		return wire.ElemBytes(c.Encoding)*dim > c.ChunkBytes
	}
	return true
}

// publishStream sends one client's update as a stream, within the round's
// deadline.
func (f *Fleet) publishStream(ctx context.Context, t task, sc StreamConfig, delta []float64, unclipped uint8) error {
	subj, err := mesh.UpdateSubject(f.cfg.Job, t.client.Region, t.client.ID)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithDeadline(ctx, time.UnixMilli(t.open.DeadlineUnixMs))
	defer cancel()
	p := sc.Encode(delta, rand.Float64)
	open := wire.StreamOpen{
		Job: f.cfg.Job, Round: t.open.Round, Region: t.client.Region, Client: t.client.ID,
		ModelVersion: t.open.ModelVersion, Dim: len(delta), Unclipped: unclipped,
	}
	d := p.Digest()
	if open.Sig, err = f.sign(t, unclipped, d); err != nil {
		return err
	}
	open.Digest = d[:]
	if err := PublishStream(ctx, f.conns[t.client.ID], subj, open, p); err != nil {
		return err
	}
	f.cfg.Logger.Debug("update streamed", "client", t.client.ID, "round", t.open.Round, "encoding", p.Encoding, "bytes", len(p.Data))
	return nil
}
