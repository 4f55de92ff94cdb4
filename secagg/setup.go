package secagg

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
)

// SetupConfig is the public data of one session as a mesh announces it
// (in Strata, a region's round.open): every party derives the same Setup
// from it on its own, so nothing of the session comes from a peer. No
// field has a default: Validate says what each must be.
type SetupConfig struct {
	// Names and Round identify the session (e.g. job and region); the
	// session ID is a hash of them.
	Names []string
	Round uint64
	// Members are the session's clients by name, in any order, 2..MaxClients
	// distinct ones (repeats count once); sorted, member i gets ID i+1.
	Members []string
	// Degree, Threshold, MinSurvivors and Bits are Params' k, t, the
	// fewest survivors and b (Params.Validate; Bits 2..32 for the
	// quantizer). Dim is the real vector's length, 1..MaxDim (MaxDim-1
	// with Bit).
	Degree, Threshold, MinSurvivors, Bits int
	Dim                                   int
	// Clip is the vector's scale (the clip norm C), finite > 0: vectors
	// are divided by it before quantizing and multiplied back after.
	// Range (finite > 0) bounds each coordinate of the divided vector,
	// Scale (finite > 0) is the quantization steps per unit
	// (NewQuantizer); the sum of every member's ⌈Range·Scale⌉ must fit
	// 2^(Bits-1)-1 (ErrHeadroom).
	Clip, Range, Scale float64
	// Bit appends one integer element (0 or 1) to every input, summed
	// exactly: a count travels inside the masked vector.
	Bit bool
}

// members returns c's members sorted, each once.
func (c SetupConfig) members() []string {
	m := slices.Clone(c.Members)
	slices.Sort(m)
	return slices.Compact(m)
}

// params returns the session's Params for the given (sorted, distinct)
// members.
func (c SetupConfig) params(members []string) Params {
	dim := c.Dim
	if c.Bit {
		dim++
	}
	return Params{Clients: len(members), Degree: c.Degree, Threshold: c.Threshold, MinSurvivors: c.MinSurvivors, Bits: c.Bits, Dim: dim}
}

// Validate names the field that is wrong (ErrParams, or ErrHeadroom when
// the ring is too small for the sum).
func (c SetupConfig) Validate() error {
	_, _, err := c.check(c.members())
	return err
}

// check validates c for its sorted, distinct members and returns the
// session's Params and quantizer.
func (c SetupConfig) check(members []string) (Params, *Quantizer, error) {
	maxDim := MaxDim
	if c.Bit {
		maxDim--
	}
	switch fin := func(x float64) bool { return x > 0 && !math.IsInf(x, 1) }; {
	case len(members) < 2 || len(members) > MaxClients:
		return Params{}, nil, fmt.Errorf("%w: SetupConfig.Members: %d distinct members, want 2..%d", ErrParams, len(members), MaxClients)
	case c.Dim < 1 || c.Dim > maxDim:
		return Params{}, nil, fmt.Errorf("%w: SetupConfig.Dim = %d, want 1..%d", ErrParams, c.Dim, maxDim)
	case !fin(c.Clip):
		return Params{}, nil, fmt.Errorf("%w: SetupConfig.Clip = %g, want finite > 0", ErrParams, c.Clip)
	case !fin(c.Range):
		return Params{}, nil, fmt.Errorf("%w: SetupConfig.Range = %g, want finite > 0", ErrParams, c.Range)
	case !fin(c.Scale):
		return Params{}, nil, fmt.Errorf("%w: SetupConfig.Scale = %g, want finite > 0", ErrParams, c.Scale)
	case c.Bits == 1:
		return Params{}, nil, fmt.Errorf("%w: SetupConfig.Bits = 1, want 2..32 (the quantizer needs a sign bit)", ErrParams)
	}
	p := c.params(members)
	if err := p.validate("SetupConfig."); err != nil {
		return Params{}, nil, err
	}
	q, err := NewQuantizer(c.Bits, c.Range, c.Scale, len(members))
	if err != nil {
		return Params{}, nil, fmt.Errorf("%w (SetupConfig.Bits = %d, Range = %g, Scale = %g)", err, c.Bits, c.Range, c.Scale)
	}
	return p, q, nil
}

// Setup is a session's parameters, numbering and quantizer, derived from
// a SetupConfig.
type Setup struct {
	Session SessionID
	Params  Params
	// Members are the clients, sorted: Members[i] has ID i+1.
	Members []string
	Quant   *Quantizer
	bit     bool
	clip    float64
	ids     map[string]ID
}

// NewSetup validates c (Validate) and derives the session.
func NewSetup(c SetupConfig) (*Setup, error) {
	members := c.members()
	p, q, err := c.check(members)
	if err != nil {
		return nil, err
	}
	s := &Setup{Params: p, Members: members, Quant: q, bit: c.Bit, clip: c.Clip, ids: make(map[string]ID, len(members))}
	for i, m := range members {
		s.ids[m] = ID(i + 1)
	}
	h := sha256.New()
	h.Write([]byte("strata/secagg-session/v1"))
	for _, f := range c.Names {
		h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(f))))
		h.Write([]byte(f))
	}
	h.Write(binary.BigEndian.AppendUint64(nil, c.Round))
	copy(s.Session[:], h.Sum(nil))
	return s, nil
}

// ID returns a member's ID in the session.
func (s *Setup) ID(member string) (ID, bool) {
	id, ok := s.ids[member]
	return id, ok
}

// Encode quantizes a real vector, divided by the clip, with stochastic
// rounding (coins from crypto/rand), and appends the bit when the session
// carries one.
func (s *Setup) Encode(v []float64, bit uint8) ([]uint32, error) {
	d := s.Params.Dim
	if s.bit {
		d--
	}
	if len(v) != d {
		return nil, fmt.Errorf("%w: Encode: vector of length %d, want %d", ErrParams, len(v), d)
	}
	x := make([]float64, d)
	for i, e := range v {
		x[i] = e / s.clip
	}
	out := make([]uint32, s.Params.Dim)
	if _, err := s.Quant.Quantize(out[:d], x, nil); err != nil {
		return nil, err
	}
	if s.bit {
		out[d] = uint32(bit & 1)
	}
	return out, nil
}

// Decode turns the survivors' sum back into real units: the vector sum and
// Σ(bit − ½) over the survivors (0 without a bit).
func (s *Setup) Decode(sum []uint32, survivors int) ([]float64, float64, error) {
	if len(sum) != s.Params.Dim {
		return nil, 0, fmt.Errorf("%w: Decode: sum of %d elements, want %d", ErrParams, len(sum), s.Params.Dim)
	}
	d := s.Params.Dim
	if s.bit {
		d--
	}
	out := make([]float64, d)
	if err := s.Quant.Dequantize(out, sum[:d]); err != nil {
		return nil, 0, err
	}
	for i := range out {
		out[i] *= s.clip
	}
	bits := 0.0
	if s.bit {
		bits = float64(sum[d]) - 0.5*float64(survivors)
	}
	return out, bits, nil
}
