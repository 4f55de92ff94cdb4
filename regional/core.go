package regional

import (
	"errors"
	"fmt"
	"math"

	"github.com/strata-fl/strata/identity"
	"github.com/strata-fl/strata/mesh/wire"
)

// Rejection reasons, as counted in Stats and metrics.
const (
	ReasonMalformed    = "malformed"
	ReasonWrongJob     = "wrong_job"
	ReasonWrongRegion  = "wrong_region"
	ReasonWrongRound   = "wrong_round"
	ReasonWrongVersion = "wrong_version"
	ReasonNotSampled   = "not_sampled"
	ReasonWrongDim     = "wrong_dim"
	ReasonNonFinite    = "non_finite"
	ReasonNorm         = "norm_exceeded"
	ReasonDuplicate    = "duplicate"
	ReasonNoRound      = "no_open_round"
	// Identity: the sender is not enrolled, its consent is withdrawn, its
	// signature does not verify, or it replays an earlier round's update.
	ReasonUnknownClient = "unknown_client"
	ReasonWithdrawn     = "withdrawn_client"
	ReasonBadSignature  = "bad_signature"
	ReasonStaleRound    = "stale_round"
	// ReasonOffLattice: an update of a round that needs exact lattice
	// values (RoundOpen.Lattice with edge noise) has a value that is not a
	// multiple of the lattice: adding it would make the region's noise
	// round the sum, between the edge noise and its own.
	ReasonOffLattice = "off_lattice"
	// ReasonOverCap: the region already accepted its top-up cap of
	// updates this round (RoundOpen.TopUpCap).
	ReasonOverCap = "over_cap"
)

// ErrRoundFinalized is returned when a finalized round is used again: noise
// is added exactly once per round, enforced by state.
var ErrRoundFinalized = errors.New("regional: round already finalized")

// Round aggregates one round of one region. It holds O(d) memory whatever
// the number of clients: the running sum and the set of client ids.
type Round struct {
	open      wire.RoundOpen
	sampled   map[string]bool
	seen      map[string]bool
	sum       []float64
	count     int
	rejected  map[string]int
	finalized bool
	normBound float64
	bitSum    float64 // Σ(bit − ½) of accepted updates (adaptive clipping)
	registry  *identity.Registry
}

// UseRegistry gives a signed round the enrolled identities to verify
// senders against; without one, a signed round accepts no update.
func (r *Round) UseRegistry(reg *identity.Registry) { r.registry = reg }

// NewRound starts aggregating the round announced by open.
func NewRound(open wire.RoundOpen) (*Round, error) {
	if open.Dim <= 0 || open.Dim > wire.MaxDim {
		return nil, fmt.Errorf("regional: round %d announces dimension %d", open.Round, open.Dim)
	}
	if !(open.ClipNorm > 0) || math.IsInf(open.ClipNorm, 0) {
		return nil, fmt.Errorf("regional: round %d announces clip norm %v", open.Round, open.ClipNorm)
	}
	r := &Round{open: open, sampled: map[string]bool{}, seen: map[string]bool{}, sum: make([]float64, open.Dim), rejected: map[string]int{}}
	for _, c := range open.Sampled {
		r.sampled[c] = true
	}
	if open.Lattice < 0 || math.IsNaN(open.Lattice) || math.IsInf(open.Lattice, 0) || open.TopUpCap < 0 {
		return nil, fmt.Errorf("regional: round %d announces lattice %v and top-up cap %d", open.Round, open.Lattice, open.TopUpCap)
	}
	r.normBound = NormBound(open.ClipNorm, open.EdgeNoise, open.Lattice, open.Dim)
	return r, nil
}

// NormBound is the largest L2 norm an honest update can have: C (and the
// snap of a clipped update to the lattice, g√d) when there is no edge
// noise; with edge noise σ_e·C per coordinate, that plus a bound the
// noise's norm exceeds with probability below e^-800 (Laurent–Massart:
// ‖N(0, s²I_d)‖ ≤ s(√d + 40) except with probability e^-800), so that the
// check never rejects an honest update but with a probability the ledger
// charges (global.normCheckDelta).
func NormBound(clip, edgeNoise, lattice float64, dim int) float64 {
	slack := 1 + 1e-5 // float32 rounding of a vector clipped to C
	return clip*slack + lattice*math.Sqrt(float64(dim)) + edgeNoise*clip*(math.Sqrt(float64(dim))+40)
}

// exact reports whether the round's updates must be exact lattice values.
func (r *Round) exact() bool { return r.open.Encoding == wire.EncodingF64 && r.open.Lattice > 0 }

// Add verifies one encoded update and adds it to the sum. It returns the
// rejection reason, or "" if the update was accepted.
func (r *Round) Add(b []byte) string {
	reason := r.add(b)
	if reason != "" {
		r.rejected[reason]++
	}
	return reason
}

func (r *Round) add(b []byte) string {
	if r.finalized {
		return ReasonWrongRound
	}
	var u wire.Update
	if err := wire.Decode(b, wire.TypeUpdate, &u); err != nil {
		return ReasonMalformed
	}
	if reason := r.checkSender(u.Job, u.Region, u.Round, u.ModelVersion, u.Client); reason != "" {
		return reason
	}
	enc := u.Encoding
	if enc == "" {
		enc = wire.EncodingF32
	}
	switch {
	case enc != wire.EncodingF32 && enc != wire.EncodingF64:
		return ReasonEncoding
	case r.exact() != (enc == wire.EncodingF64):
		return ReasonEncoding
	case len(u.Vec) != wire.ElemBytes(enc)*r.open.Dim:
		return ReasonWrongDim
	}
	if r.open.Signed {
		d := wire.PayloadDigest(enc, r.open.Dim, identity.Digest(u.Vec), nil)
		if reason := r.checkSignature(u.Client, u.Unclipped, d, u.Sig); reason != "" {
			return reason
		}
	}
	if r.open.ClipBits && u.Unclipped > 1 {
		return ReasonMalformed
	}
	if enc == wire.EncodingF64 {
		v, err := wire.Float64s(u.Vec)
		if err != nil {
			return ReasonMalformed
		}
		if reason := r.checkValues64(v, 0); reason != "" {
			return reason
		}
		for i, x := range v {
			r.sum[i] += x
		}
	} else {
		v, err := wire.Float32s(u.Vec)
		if err != nil {
			return ReasonMalformed
		}
		norm2 := 0.0
		for _, x := range v {
			f := float64(x)
			if math.IsNaN(f) || math.IsInf(f, 0) {
				return ReasonNonFinite
			}
			norm2 += f * f
		}
		if math.Sqrt(norm2) > r.normBound {
			return ReasonNorm
		}
		for i, x := range v {
			r.sum[i] += float64(x)
		}
	}
	r.accept(u.Client, u.Unclipped)
	return ""
}

// checkValues64 checks float64 values an update carries, on top of
// sumsq from its earlier chunks: finite, within the norm bound, and exact
// multiples of the lattice when the round needs them. It returns the new
// sum of squares in a stream's case through the caller.
func (r *Round) checkValues64(v []float64, sumsq float64) string {
	exact, g := r.exact(), r.open.Lattice
	for _, x := range v {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return ReasonNonFinite
		}
		if exact && x/g != math.Trunc(x/g) {
			return ReasonOffLattice
		}
		sumsq += x * x
	}
	if math.Sqrt(sumsq) > r.normBound {
		return ReasonNorm
	}
	return ""
}

// accept counts an update whose values were added to the sum: the client
// has reported, and its clipping bit, when the round asks for it, joins
// the bit sum.
func (r *Round) accept(client string, unclipped uint8) {
	r.seen[client] = true
	if r.open.ClipBits {
		r.bitSum += float64(unclipped) - 0.5
	}
	r.count++
}

// Complete reports whether every sampled client has been accepted.
func (r *Round) Complete() bool { return r.count == len(r.sampled) }

// Count returns the accepted updates so far.
func (r *Round) Count() int { return r.count }

// Rejected returns the rejection counts of this round.
func (r *Round) Rejected() map[string]int {
	out := make(map[string]int, len(r.rejected))
	for k, v := range r.rejected {
		out[k] = v
	}
	return out
}

// Noiser adds Gaussian noise of standard deviation sigma to each element,
// on the sampler's own lattice or on the round's (privacy.Gaussian).
type Noiser interface {
	AddTo64(dst []float64, sigma float64) error
	AddTo64On(dst []float64, sigma, gran float64) error
}

// regionalSigma is the standard deviation of the noise the region adds:
// σ_r·C, and under a top-up cap K enough edge-noise shares for the clients
// it did not accept, so that the partial's variance is (σ_r² + K·σ_e²)·C²
// whoever took part.
func (r *Round) regionalSigma() float64 {
	o := r.open
	v := o.RegionalNoise * o.RegionalNoise
	if o.TopUpCap > 0 {
		v += float64(max(0, o.TopUpCap-r.count)) * o.EdgeNoise * o.EdgeNoise
	}
	return math.Sqrt(v) * o.ClipNorm
}

// Finalize adds the regional noise once — σ_r·C, topped up under
// privacy.top_up to (σ_r² + (K − accepted)·σ_e²)·C² — on the round's
// lattice, and returns the partial. A second call fails with
// ErrRoundFinalized.
func (r *Round) Finalize(n Noiser) (*wire.Partial, error) {
	if r.finalized {
		return nil, ErrRoundFinalized
	}
	if s := r.regionalSigma(); s > 0 {
		var err error
		if r.open.Lattice > 0 {
			err = n.AddTo64On(r.sum, s, r.open.Lattice)
		} else {
			err = n.AddTo64(r.sum, s)
		}
		if err != nil {
			return nil, fmt.Errorf("regional %s: noise: %w", r.open.Region, err)
		}
	}
	if r.open.ClipBits && r.open.BitNoise > 0 {
		b := []float64{r.bitSum}
		if err := n.AddTo64(b, r.open.BitNoise); err != nil {
			return nil, fmt.Errorf("regional %s: bit noise: %w", r.open.Region, err)
		}
		r.bitSum = b[0]
	}
	r.finalized = true
	// The sum travels as float64 in its own memory: a finalized round never
	// reads it again, and narrowing it would round between this noise and
	// the global tier's.
	sum := wire.Float64Bytes(r.sum)
	r.sum = nil
	return &wire.Partial{BitSum: r.bitSum,
		Job: r.open.Job, Round: r.open.Round, Region: r.open.Region, Count: r.count,
		Rejected: r.Rejected(), Sum: sum,
	}, nil
}

// checkSignature verifies a client's signature over its update's message.
func (r *Round) checkSignature(client string, unclipped uint8, digest [32]byte, sig []byte) string {
	msg := identity.UpdateMessage(r.open.Job, r.open.Round, r.open.ModelVersion, r.open.Region, client, unclipped, digest)
	return r.checkRegistry(client, msg, sig)
}

// checkRegistry verifies a client's signature over msg.
func (r *Round) checkRegistry(client string, msg, sig []byte) string {
	err := r.registry.Check(identity.KindClient, client, msg, sig)
	switch {
	case err == nil:
		return ""
	case errors.Is(err, identity.ErrUnknown):
		return ReasonUnknownClient
	case errors.Is(err, identity.ErrWithdrawn):
		return ReasonWithdrawn
	}
	return ReasonBadSignature
}

// checkSecAggSender checks a secagg envelope's job, region and round and,
// in a signed round, that its client is enrolled in the region and
// consenting.
func (r *Round) checkSecAggSender(job, region string, round uint64, client string) string {
	if reason := r.checkRound(job, region, round); reason != "" {
		return reason
	}
	if r.open.SecAgg == nil {
		return ReasonWrongRound
	}
	if reason := r.checkEnrolled(client); reason != "" {
		return reason
	}
	if !r.sampled[client] {
		return ReasonNotSampled
	}
	return ""
}

// checkRound checks that a message is of this round's job, region and round.
func (r *Round) checkRound(job, region string, round uint64) string {
	switch {
	case job != r.open.Job:
		return ReasonWrongJob
	case region != r.open.Region:
		return ReasonWrongRegion
	case round < r.open.Round:
		return ReasonStaleRound
	case round != r.open.Round:
		return ReasonWrongRound
	}
	return ""
}

// checkEnrolled checks, in a signed round, that client is enrolled in this
// region and has not withdrawn.
func (r *Round) checkEnrolled(client string) string {
	if !r.open.Signed {
		return ""
	}
	e, ok := r.registry.Lookup(identity.KindClient, client)
	switch {
	case !ok || e.Public == "" || e.Region != r.open.Region:
		return ReasonUnknownClient
	case e.Status == identity.StatusWithdrawn:
		return ReasonWithdrawn
	}
	return ""
}

// checkSender checks what every update, whole or streamed, must match: the
// round's job, region, number and model version, a sampled client that has
// not reported yet. It returns the rejection reason or "".
func (r *Round) checkSender(job, region string, round, version uint64, client string) string {
	if reason := r.checkRound(job, region, round); reason != "" {
		return reason
	}
	switch {
	case version != r.open.ModelVersion:
		return ReasonWrongVersion
	case r.open.SecAgg != nil:
		return ReasonSecAggOnly
	}
	if reason := r.checkEnrolled(client); reason != "" {
		return reason
	}
	switch {
	case !r.sampled[client]:
		return ReasonNotSampled
	case r.seen[client]:
		return ReasonDuplicate
	case r.open.TopUpCap > 0 && r.count >= r.open.TopUpCap:
		return ReasonOverCap
	}
	return ""
}
