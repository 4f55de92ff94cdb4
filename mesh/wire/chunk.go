package wire

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/strata-fl/strata/internal/msgcheck"
)

// Streamed updates. An update too large for one message travels as a
// stream: the client asks the region for a slot (StreamOpen, request/reply),
// the region answers with a StreamGrant when it has room, and the client then
// sends Chunks, keeping at most Window of them unacknowledged; the region
// acknowledges each chunk (ChunkAck) once it has consumed it. The last chunk
// carries a CRC-32C digest of the data of every chunk in order.
const (
	TypeStreamOpen  Type = 10
	TypeStreamGrant Type = 11
	TypeChunk       Type = 12
	TypeChunkAck    Type = 13
	// TypePartialChunk carries a slice of a partial too large for one
	// message (PartialChunkHeader, then the slice as bin).
	TypePartialChunk Type = 14
)

// MaxDim bounds the dimension of a streamed model (2³⁰ parameters).
const MaxDim = 1 << 30

// Encodings of a streamed vector.
const (
	// EncodingF32 is little-endian float32, 4 bytes per element.
	EncodingF32 = "f32"
	// EncodingQ8 is int8, 1 byte per element; element = Scale·q, with one
	// Scale per chunk (stochastic rounding makes it unbiased).
	EncodingQ8 = "q8"
	// EncodingTopK is (uint32 index, float32 value) little-endian pairs,
	// 8 bytes per entry, indices strictly increasing across the stream.
	EncodingTopK = "topk"
	// EncodingF64 is little-endian float64, 8 bytes per element: how an
	// edge-noised update travels, its values exact multiples of the
	// round's lattice, so that no rounding sits between the edge noise and
	// the noise the region adds (docs/privacy-model.md).
	EncodingF64 = "f64"
)

// ElemBytes returns the bytes per element of an encoding, or 0 when the
// encoding is unknown.
func ElemBytes(encoding string) int {
	switch encoding {
	case EncodingF32:
		return 4
	case EncodingQ8:
		return 1
	case EncodingTopK, EncodingF64:
		return 8
	}
	return 0
}

// StreamOpen asks a region for a slot to stream one client's update.
type StreamOpen struct {
	Job          string `msgpack:"job"`
	Round        uint64 `msgpack:"round"`
	Region       string `msgpack:"region"`
	Client       string `msgpack:"client"`
	ModelVersion uint64 `msgpack:"model_version"`
	// Dim is the model dimension; Total the number of elements the stream
	// carries (Dim for f32 and q8, k for topk).
	Dim      int    `msgpack:"dim"`
	Total    int    `msgpack:"total"`
	Encoding string `msgpack:"encoding"`
	// Unclipped is the adaptive-clipping bit, as in Update.
	Unclipped uint8 `msgpack:"unclipped,omitempty"`
	// Digest is PayloadDigest of the stream's data, which the client signs
	// (Sig) at the open; the region checks the data against it before the
	// update counts.
	Digest []byte `msgpack:"digest,omitempty"`
	Sig    []byte `msgpack:"sig,omitempty"`
}

// StreamGrant answers a StreamOpen: Reason is empty when the stream may
// start, with at most Window chunks unacknowledged; otherwise it names why
// the stream is refused.
type StreamGrant struct {
	Round  uint64 `msgpack:"round"`
	Client string `msgpack:"client"`
	Window int    `msgpack:"window"`
	Reason string `msgpack:"reason"`
}

// ChunkAck acknowledges the chunk at Offset once the region consumed it.
// A non-empty Reason ends the stream: the update is rejected.
type ChunkAck struct {
	Round  uint64 `msgpack:"round"`
	Client string `msgpack:"client"`
	Offset int    `msgpack:"offset"`
	Reason string `msgpack:"reason"`
}

// ChunkHeader describes one chunk; its data follows it on the wire as a
// msgpack bin that the receiver reads in place.
type ChunkHeader struct {
	Job    string `msgpack:"job"`
	Round  uint64 `msgpack:"round"`
	Client string `msgpack:"client"`
	// Offset and Total count elements of the stream's encoding.
	Offset int `msgpack:"offset"`
	Total  int `msgpack:"total"`
	// Scale multiplies the int8 values of a q8 chunk.
	Scale float32 `msgpack:"scale,omitempty"`
	// Last marks the final chunk, which carries Digest: the CRC-32C
	// (Castagnoli) of the data of every chunk of the stream, in order. It
	// guards against loss, reordering and corruption; authenticity is the
	// signature's job, not the digest's. In a signed round the region
	// checks the data against the digest the client signed instead, a
	// stronger check of the same bytes, and ignores the CRC.
	Last   bool   `msgpack:"last,omitempty"`
	Digest uint32 `msgpack:"digest,omitempty"`
}

// Castagnoli is the CRC-32C table of stream digests.
var Castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ChunkCRC extends a stream's CRC-32C (ChunkHeader.Digest) with one
// chunk: its scale (q8 only) and its data.
func ChunkCRC(crc uint32, encoding string, scale float32, data []byte) uint32 {
	if encoding == EncodingQ8 {
		var sb [4]byte
		binary.LittleEndian.PutUint32(sb[:], math.Float32bits(scale))
		crc = crc32.Update(crc, Castagnoli, sb[:])
	}
	return crc32.Update(crc, Castagnoli, data)
}

// PartialChunkHeader describes a slice [Offset, Offset+n) of a region's
// partial sum of Total values (little-endian float64); the last slice
// carries the CRC-32C of all slices' data, as ChunkHeader does.
type PartialChunkHeader struct {
	Job      string         `msgpack:"job"`
	Round    uint64         `msgpack:"round"`
	Region   string         `msgpack:"region"`
	Count    int            `msgpack:"count"`
	Rejected map[string]int `msgpack:"rejected"`
	BitSum   float64        `msgpack:"bit_sum,omitempty"`
	Offset   int            `msgpack:"offset"`
	Total    int            `msgpack:"total"`
	Last     bool           `msgpack:"last,omitempty"`
	Digest   uint32         `msgpack:"digest,omitempty"`
	// Sig, on the last slice, is the region's signature over the whole
	// partial, as in Partial.
	Sig []byte `msgpack:"sig,omitempty"`
}

// AppendChunk appends the encoded chunk (type header, msgpack header, data
// as msgpack bin) to dst.
func AppendChunk(dst []byte, h *ChunkHeader, data []byte) ([]byte, error) {
	return appendFramed(dst, TypeChunk, h, data)
}

// AppendPartialChunk appends an encoded slice of a partial to dst.
func AppendPartialChunk(dst []byte, h *PartialChunkHeader, data []byte) ([]byte, error) {
	return appendFramed(dst, TypePartialChunk, h, data)
}

// DecodePartialChunk decodes a slice of a partial; data aliases b.
func DecodePartialChunk(b []byte) (PartialChunkHeader, []byte, error) {
	var h PartialChunkHeader
	data, err := decodeFramed(b, TypePartialChunk, &h)
	return h, data, err
}

func appendFramed(dst []byte, t Type, h any, data []byte) ([]byte, error) {
	hb, err := msgpack.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("wire: encode %v: %w", t, err)
	}
	if need := len(dst) + 2 + len(hb) + 5 + len(data); cap(dst) < need {
		nb := make([]byte, len(dst), need)
		copy(nb, dst)
		dst = nb
	}
	dst = append(dst, byte(t), Version)
	dst = append(dst, hb...)
	dst = append(dst, 0xc6) // bin 32
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(data)))
	return append(dst, data...), nil
}

// DecodeChunk decodes a chunk; the returned data aliases b (no copy).
func DecodeChunk(b []byte) (ChunkHeader, []byte, error) {
	var h ChunkHeader
	data, err := decodeFramed(b, TypeChunk, &h)
	return h, data, err
}

func decodeFramed(b []byte, want Type, h any) ([]byte, error) {
	if len(b) > MaxMessage {
		return nil, fmt.Errorf("%w: %d bytes > %d", ErrTooLarge, len(b), MaxMessage)
	}
	t, err := Peek(b)
	if err != nil {
		return nil, err
	}
	if t != want {
		return nil, fmt.Errorf("%w: got %v, want %v", ErrType, t, want)
	}
	if b[1] != Version {
		return nil, fmt.Errorf("%w: %v version %d, this node speaks %d", ErrVersion, t, b[1], Version)
	}
	// The header's claimed lengths must fit in the message before the
	// decoder allocates them (msgcheck walks the header only: the first
	// msgpack value).
	if err := msgcheck.Validate(b[2:]); err != nil {
		return nil, fmt.Errorf("%w: %v header: %v", ErrMalformed, t, err)
	}
	r := bytes.NewReader(b[2:])
	dec := msgpack.NewDecoder(r)
	if err := dec.Decode(h); err != nil {
		return nil, fmt.Errorf("%w: %v header: %v", ErrMalformed, t, err)
	}
	off := len(b) - r.Len()
	rest := b[off:]
	var n, hl int
	switch {
	case len(rest) >= 2 && rest[0] == 0xc4:
		n, hl = int(rest[1]), 2
	case len(rest) >= 3 && rest[0] == 0xc5:
		n, hl = int(binary.BigEndian.Uint16(rest[1:])), 3
	case len(rest) >= 5 && rest[0] == 0xc6:
		n, hl = int(binary.BigEndian.Uint32(rest[1:])), 5
	default:
		return nil, fmt.Errorf("%w: %v data is not a msgpack bin", ErrMalformed, t)
	}
	if n != len(rest)-hl {
		return nil, fmt.Errorf("%w: %v data of %d bytes, message holds %d", ErrMalformed, t, n, len(rest)-hl)
	}
	return rest[hl:], nil
}
