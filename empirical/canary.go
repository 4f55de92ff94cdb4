package empirical

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
)

// Direction returns canary i's direction: a uniformly random unit vector of
// R^d drawn from a generator seeded by (seed, i) alone, so that every tier
// and the auditor derive the same vector without exchanging it. Canaries
// 0..K−1 are inserted as clients; K..2K−1 are never inserted (the unseen
// canaries whose statistics show what chance alone produces).
func Direction(seed uint64, i, d int) []float64 {
	h := fnv.New64a()
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], seed)
	binary.LittleEndian.PutUint64(b[8:], uint64(i))
	h.Write([]byte("strata canary direction"))
	h.Write(b[:])
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:8], h.Sum64())
	binary.LittleEndian.PutUint64(key[8:16], seed)
	binary.LittleEndian.PutUint64(key[16:24], uint64(i))
	rng := rand.New(rand.NewChaCha8(key))
	v := make([]float64, d)
	n := 0.0
	for n == 0 {
		for j := range v {
			v[j] = rng.NormFloat64()
			n += v[j] * v[j]
		}
	}
	n = math.Sqrt(n)
	for j := range v {
		v[j] /= n
	}
	return v
}

// Cosine returns the cosine of the angle between a and b (0 when either is
// the zero vector: a model that did not move says nothing about a canary).
func Cosine(a, b []float64) float64 {
	var ab, aa, bb float64
	for i := range a {
		ab += a[i] * b[i]
		aa += a[i] * a[i]
		bb += b[i] * b[i]
	}
	if aa == 0 || bb == 0 {
		return 0
	}
	return ab / math.Sqrt(aa*bb)
}

// Release is what the public observer holds: every released model version
// and the version each was trained from.
type Release struct {
	// Initial is θ of version 0, the starting point every delta of the
	// final model is measured from.
	Initial []float64
	// Steps are the released versions in order; Base of each is a version
	// released before it (0 = Initial).
	Steps []Step
	// Final is the version the job ends serving.
	Final uint64
}

// Step is one released model version.
type Step struct {
	Version uint64
	Base    uint64
	Theta   []float64
}

// Stats are the canary statistics of one release. Strata's clients send
// Δ = new − old and the server adds it, so an inserted canary pushes the
// model along +u: the statistic is +cos (Andrew et al. write −cos because
// their updates are subtracted).
type Stats struct {
	// Final is, per canary, cos(u, θ_final − θ_0): the final-model threat model.
	Final []float64
	// AllIterates is, per canary, max over released versions v of
	// cos(u, θ_v − θ_base(v)): the threat model of an observer who sees
	// every release, as the ledger's public observer does.
	AllIterates []float64
}

// Deltas returns θ_final − θ_0 and every step's θ_v − θ_base(v), checking
// that each version refers to one released before it.
func (r Release) Deltas() (final []float64, steps [][]float64, err error) {
	d := len(r.Initial)
	if d == 0 {
		return nil, nil, fmt.Errorf("%w: release has no initial model", ErrInvalid)
	}
	theta := map[uint64][]float64{0: r.Initial}
	for _, s := range r.Steps {
		if len(s.Theta) != d {
			return nil, nil, fmt.Errorf("%w: version %d has %d parameters, version 0 has %d", ErrInvalid, s.Version, len(s.Theta), d)
		}
		base, ok := theta[s.Base]
		if !ok {
			return nil, nil, fmt.Errorf("%w: version %d is trained from version %d, which was not released before it", ErrInvalid, s.Version, s.Base)
		}
		delta := make([]float64, d)
		for i := range delta {
			delta[i] = s.Theta[i] - base[i]
		}
		steps = append(steps, delta)
		theta[s.Version] = s.Theta
	}
	last, ok := theta[r.Final]
	if !ok {
		return nil, nil, fmt.Errorf("%w: final version %d was not released", ErrInvalid, r.Final)
	}
	final = make([]float64, d)
	for i := range final {
		final[i] = last[i] - r.Initial[i]
	}
	return final, steps, nil
}

// Statistics computes the statistics of canaries 0..n−1 drawn from seed.
func (r Release) Statistics(seed uint64, n int) (Stats, error) {
	final, steps, err := r.Deltas()
	if err != nil {
		return Stats{}, err
	}
	st := Stats{Final: make([]float64, n), AllIterates: make([]float64, n)}
	for i := range n {
		u := Direction(seed, i, len(r.Initial))
		st.Final[i] = Cosine(u, final)
		m := math.Inf(-1)
		for _, s := range steps {
			m = math.Max(m, Cosine(u, s))
		}
		if len(steps) == 0 {
			m = 0
		}
		st.AllIterates[i] = m
	}
	return st, nil
}

// Fit returns the sample mean and standard deviation (n − 1 denominator).
// Constant samples return the fit and an error (a Gaussian needs σ > 0).
func Fit(x []float64) (Gaussian, error) {
	if len(x) < 2 {
		return Gaussian{}, fmt.Errorf("%w: %d samples: a Gaussian fit needs at least 2", ErrInvalid, len(x))
	}
	m := 0.0
	for _, v := range x {
		m += v
	}
	m /= float64(len(x))
	s := 0.0
	for _, v := range x {
		s += (v - m) * (v - m)
	}
	g := Gaussian{Mu: m, Sigma: math.Sqrt(s / float64(len(x)-1))}
	return g, g.check("fit")
}
