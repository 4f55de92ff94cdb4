// Package wire defines the messages that cross NATS between the tiers, and
// their encoding: a two-byte header (message type, version) followed by a
// msgpack body. Vectors travel as msgpack bin holding little-endian float32,
// so decoding them is a reinterpretation of bytes, never a per-element parse.
package wire

import (
	"errors"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/strata-fl/strata/internal/msgcheck"
)

// Type identifies a message on the wire.
type Type uint8

// Message types. Values are part of the wire format: never reuse one.
const (
	TypeRoundOpen Type = 1
	TypeUpdate    Type = 2
	TypePartial   Type = 3
	TypeJobDone   Type = 4
)

func (t Type) String() string {
	switch t {
	case TypeRoundOpen:
		return "round.open"
	case TypeUpdate:
		return "update"
	case TypePartial:
		return "partial"
	case TypeJobDone:
		return "job.done"
	case TypeSecAggUp:
		return "secagg.up"
	case TypeSecAggDown:
		return "secagg.down"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Version is the current version of every message body.
const Version = 1

// MaxMessage bounds a message we will decode (64 MiB).
const MaxMessage = 64 << 20

// Errors returned by Decode; callers count rejections by them.
var (
	ErrMalformed = errors.New("wire: malformed message")
	ErrType      = errors.New("wire: unexpected message type")
	ErrVersion   = errors.New("wire: unsupported message version")
	ErrTooLarge  = errors.New("wire: message too large")
)

// RoundOpen announces a round whose DP cost is already committed to the
// ledger. It is published per region and lists that region's sampled
// clients only.
type RoundOpen struct {
	Job            string   `msgpack:"job"`
	Round          uint64   `msgpack:"round"`
	Region         string   `msgpack:"region"`
	ModelVersion   uint64   `msgpack:"model_version"`
	ModelHash      string   `msgpack:"model_hash"` // hex SHA-256 of the model blob
	Dim            int      `msgpack:"dim"`
	ClipNorm       float64  `msgpack:"clip_norm"`
	EdgeNoise      float64  `msgpack:"edge_noise"`     // multiplier of ClipNorm
	RegionalNoise  float64  `msgpack:"regional_noise"` // multiplier of ClipNorm
	DeadlineUnixMs int64    `msgpack:"deadline_ms"`
	Sampled        []string `msgpack:"sampled"`
	// ClipBits asks clients for the adaptive-clipping bit; BitNoise is the
	// standard deviation each region adds to its sum of centred bits.
	ClipBits bool    `msgpack:"clip_bits,omitempty"`
	BitNoise float64 `msgpack:"bit_noise,omitempty"`
	// Signed rounds accept only updates signed by enrolled, consenting
	// clients; Registry is the ledger's identity version, so a region
	// knows when to refresh its copy of the keys.
	Signed   bool   `msgpack:"signed,omitempty"`
	Registry uint64 `msgpack:"registry,omitempty"`
	// SecAgg, when set, runs the round's aggregation in this region as a
	// secure-aggregation session (wire/secagg.go): clients send masked
	// inputs, never updates.
	SecAgg *SecAggPlan `msgpack:"secagg,omitempty"`
	// Lattice is the round's one noise lattice (privacy.Lattice): every
	// tier adds its noise on it, edge-noised updates travel as float64
	// multiples of it (EncodingF64), and partials stay on it, so no
	// rounding sits between two noises. 0: each tier snaps to its own.
	Lattice float64 `msgpack:"lattice,omitempty"`
	// Encoding, when set, is the only encoding the round's updates may
	// use: EncodingF64 in a round whose claim adds the edge noise to the
	// later noise, so that updates are exact lattice values.
	Encoding string `msgpack:"encoding,omitempty"`
	// TopUpCap, when set, is this region's cap K (privacy.top_up): it
	// accepts at most K updates and adds noise of variance
	// (σ_r² + (K − accepted)·σ_e²)·C², so that its partial's variance does
	// not depend on who took part.
	TopUpCap int `msgpack:"top_up_cap,omitempty"`
}

// Update is one client's clipped (and edge-noised) model delta.
type Update struct {
	Job          string `msgpack:"job"`
	Round        uint64 `msgpack:"round"`
	Region       string `msgpack:"region"`
	Client       string `msgpack:"client"`
	ModelVersion uint64 `msgpack:"model_version"`
	// Encoding of Vec: "" or EncodingF32 (little-endian float32), or
	// EncodingF64 for an edge-noised update on the round's lattice.
	Encoding string `msgpack:"encoding,omitempty"`
	Vec      []byte `msgpack:"vec"`
	// Unclipped is the adaptive-clipping bit: 1 if the update's norm was
	// at most the clip norm before clipping. Only when the round asks:
	// otherwise it is 0 and not encoded, since the region would read it in
	// clear. (Updates carry no example count for the same reason.)
	Unclipped uint8 `msgpack:"unclipped,omitempty"`
	// Sig is the client's signature over UpdateMessage (identity package).
	Sig []byte `msgpack:"sig,omitempty"`
}

// Partial is a region's noised sum of the updates it accepted.
type Partial struct {
	Job      string         `msgpack:"job"`
	Round    uint64         `msgpack:"round"`
	Region   string         `msgpack:"region"`
	Count    int            `msgpack:"count"`
	Rejected map[string]int `msgpack:"rejected"`
	// Sum is little-endian float64: narrowing it would round between the
	// regional noise and the global noise (docs/privacy-model.md).
	Sum []byte `msgpack:"sum"`
	// BitSum is Σ(bit − ½) over accepted updates plus the region's bit
	// noise, when the round asked for clipping bits.
	BitSum float64 `msgpack:"bit_sum,omitempty"`
	// Sig is the region's signature over PartialMessage (identity package).
	Sig []byte `msgpack:"sig,omitempty"`
}

// JobDone tells every tier the job is over.
type JobDone struct {
	Job    string `msgpack:"job"`
	Reason string `msgpack:"reason"`
}

// Encode writes the header and msgpack body of v as message type t.
func Encode(t Type, v any) ([]byte, error) {
	body, err := msgpack.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("wire: encode %v: %w", t, err)
	}
	out := make([]byte, 2, 2+len(body))
	out[0], out[1] = byte(t), Version
	return append(out, body...), nil
}

// Peek returns the type of an encoded message without decoding it.
func Peek(b []byte) (Type, error) {
	if len(b) < 2 {
		return 0, fmt.Errorf("%w: %d bytes, shorter than the header", ErrMalformed, len(b))
	}
	return Type(b[0]), nil
}

// Decode checks the header of b and decodes its body into v.
func Decode(b []byte, want Type, v any) error {
	if len(b) > MaxMessage {
		return fmt.Errorf("%w: %d bytes > %d", ErrTooLarge, len(b), MaxMessage)
	}
	t, err := Peek(b)
	if err != nil {
		return err
	}
	if t != want {
		return fmt.Errorf("%w: got %v, want %v", ErrType, t, want)
	}
	if b[1] != Version {
		return fmt.Errorf("%w: %v version %d, this node speaks %d", ErrVersion, t, b[1], Version)
	}
	if err := msgcheck.Validate(b[2:]); err != nil {
		return fmt.Errorf("%w: %v: %v", ErrMalformed, t, err)
	}
	if err := msgpack.Unmarshal(b[2:], v); err != nil {
		return fmt.Errorf("%w: %v: %v", ErrMalformed, t, err)
	}
	return nil
}
