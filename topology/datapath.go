package topology

import "fmt"

// DataPath says how updates travel from clients to their region: in chunks
// of what size, with what flow control, and whether compressed. The zero
// value is the default: float32 updates, streamed in 1 MiB chunks when
// larger than one chunk, 3 streams staged per region, 4 chunks in flight
// per client.
//
// Compression never changes the privacy accounting. Clients clip to C
// first; top-k then keeps the k largest coordinates (the norm can only
// drop), and q8 (stochastic int8, one scale per chunk) first shrinks the
// clipped vector by T/(T+E) — T its norm, E the largest norm the rounding
// error can have — so the quantized vector's norm is at most T in the worst
// case. Regions check every update against the same bound as a float32
// update, so the sensitivity of a region's sum stays C and the noise
// multipliers mean what they mean without compression. Rounding is
// unbiased for the shrunk vector; shrinking and top-k are biased, like
// clipping.
type DataPath struct {
	// ChunkBytes is the update data per chunk; default 1 MiB, at most the
	// NATS max payload less 64 KiB.
	ChunkBytes int `yaml:"chunk_bytes,omitempty"`
	// Compression is "none" (default), "q8" or "topk".
	Compression string `yaml:"compression,omitempty"`
	// TopK is the fraction of coordinates top-k keeps, in (0, 1]; default 0.1.
	TopK float64 `yaml:"top_k,omitempty"`
	// StreamSlots bounds the streams a region stages at once (each up to
	// 4·d bytes); default 3. StreamWindow is the chunks a client may have
	// unacknowledged; default 4.
	StreamSlots  int `yaml:"stream_slots,omitempty"`
	StreamWindow int `yaml:"stream_window,omitempty"`
}

// Encoding returns the wire encoding name of the compression.
func (d DataPath) Encoding() string {
	switch d.Compression {
	case "q8":
		return "q8"
	case "topk":
		return "topk"
	}
	return "f32"
}

// Compressed reports whether updates are compressed (q8 or top-k) before
// they leave the client.
func (d DataPath) Compressed() bool { return d.Compression == "q8" || d.Compression == "topk" }

// Validate names the field that is wrong and how to fix it.
func (d DataPath) Validate() error {
	switch d.Compression {
	case "", "none", "q8", "topk":
	default:
		return fmt.Errorf("%w: data_path.compression %q: want none, q8 or topk", ErrInvalid, d.Compression)
	}
	if d.TopK < 0 || d.TopK > 1 {
		return fmt.Errorf("%w: data_path.top_k %v: want a fraction in (0, 1]", ErrInvalid, d.TopK)
	}
	if d.ChunkBytes < 0 || d.ChunkBytes > 8<<20-64<<10 {
		return fmt.Errorf("%w: data_path.chunk_bytes %d: want 1..%d (0 means 1 MiB)", ErrInvalid, d.ChunkBytes, 8<<20-64<<10)
	}
	if d.StreamSlots < 0 || d.StreamWindow < 0 {
		return fmt.Errorf("%w: data_path.stream_slots/stream_window %d/%d: want ≥ 1 (0 means the default)", ErrInvalid, d.StreamSlots, d.StreamWindow)
	}
	return nil
}
