package mesh

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/secagg"
)

// SecAggSetup is what a region and each of its sampled clients derive, each
// on its own, from a round.open with a secagg plan: the same session, the
// same parameters and the same client numbering. Nothing of it comes from a
// client.
type SecAggSetup struct {
	Session secagg.SessionID
	Params  secagg.Params
	// Members are the session's clients, sorted; Members[i] has ID i+1.
	Members []string
	// Quant quantizes updates divided by the round's clip norm.
	Quant *secagg.Quantizer
	// Bit says the last ring element carries the adaptive-clipping bit,
	// as an integer (0 or 1), so that no tier sees one client's bit.
	Bit  bool
	Clip float64
	ids  map[string]secagg.ID
}

// ErrNoSecAgg reports a round.open without a runnable secagg plan.
var ErrNoSecAgg = errors.New("mesh: round has no runnable secagg session")

// NewSecAggSetup derives a region's session from its round.open.
func NewSecAggSetup(open *wire.RoundOpen) (*SecAggSetup, error) {
	p := open.SecAgg
	switch {
	case p == nil:
		return nil, ErrNoSecAgg
	case p.Infeasible != "":
		return nil, fmt.Errorf("%w: %s", ErrNoSecAgg, p.Infeasible)
	}
	members := slices.Clone(open.Sampled)
	slices.Sort(members)
	members = slices.Compact(members)
	dim := open.Dim
	if open.ClipBits {
		dim++
	}
	params := secagg.Params{Clients: len(members), Degree: p.Degree, Threshold: p.Threshold, MinSurvivors: p.MinSurvivors, Bits: p.Bits, Dim: dim}
	if err := params.Validate(); err != nil {
		return nil, fmt.Errorf("mesh: round %d region %s: secagg plan: %w", open.Round, open.Region, err)
	}
	q, err := secagg.NewQuantizer(p.Bits, p.Range, p.Scale, len(members))
	if err != nil {
		return nil, fmt.Errorf("mesh: round %d region %s: secagg plan: %w", open.Round, open.Region, err)
	}
	s := &SecAggSetup{Params: params, Members: members, Quant: q, Bit: open.ClipBits, Clip: open.ClipNorm, ids: make(map[string]secagg.ID, len(members))}
	for i, c := range members {
		s.ids[c] = secagg.ID(i + 1)
	}
	h := sha256.New()
	h.Write([]byte("strata/secagg-session/v1"))
	for _, f := range []string{open.Job, open.Region} {
		h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(f))))
		h.Write([]byte(f))
	}
	h.Write(binary.BigEndian.AppendUint64(nil, open.Round))
	copy(s.Session[:], h.Sum(nil))
	return s, nil
}

// ID returns a client's ID in the session.
func (s *SecAggSetup) ID(client string) (secagg.ID, bool) {
	id, ok := s.ids[client]
	return id, ok
}

// Encode quantizes a clipped (and edge-noised) update, divided by the clip
// norm, with stochastic rounding (coins from crypto/rand), and appends the
// clipping bit when the round asks for it.
func (s *SecAggSetup) Encode(delta []float64, bit uint8) ([]uint32, error) {
	x := make([]float64, len(delta))
	for i, v := range delta {
		x[i] = v / s.Clip
	}
	out := make([]uint32, s.Params.Dim)
	if _, err := s.Quant.Quantize(out[:len(x)], x, nil); err != nil {
		return nil, err
	}
	if s.Bit {
		out[len(x)] = uint32(bit & 1)
	}
	return out, nil
}

// Decode turns the survivors' sum back into real units: the update sum and
// Σ(bit − ½) over the survivors (0 without bits).
func (s *SecAggSetup) Decode(sum []uint32, survivors int) ([]float64, float64, error) {
	d := s.Params.Dim
	if s.Bit {
		d--
	}
	if len(sum) != s.Params.Dim {
		return nil, 0, fmt.Errorf("mesh: secagg sum of %d elements, want %d", len(sum), s.Params.Dim)
	}
	out := make([]float64, d)
	if err := s.Quant.Dequantize(out, sum[:d]); err != nil {
		return nil, 0, err
	}
	for i := range out {
		out[i] *= s.Clip
	}
	bits := 0.0
	if s.Bit {
		bits = float64(sum[d]) - 0.5*float64(survivors)
	}
	return out, bits, nil
}
