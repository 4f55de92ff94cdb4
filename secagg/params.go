package secagg

import (
	"fmt"
	"math"
)

// Params are the public parameters of one aggregation session. Every party
// of the session must hold the same Params: in the mesh they come from the
// round plan, never from a client.
type Params struct {
	// Clients is n, the number of clients invited to the session. Client IDs
	// are 1..Clients.
	Clients int
	// Degree is k, the degree of the random k-regular graph on which clients
	// share secrets and agree pairwise masks. It must be even, or at least
	// Clients-1 (the complete graph of Bonawitz et al. 2017).
	Degree int
	// Threshold is t, the Shamir threshold: any t of a client's neighbours can
	// rebuild its secrets, fewer learn nothing. 1 <= t <= Degree.
	Threshold int
	// MinSurvivors is the fewest clients whose inputs may be summed; with
	// fewer survivors the session fails before anything is unmasked.
	MinSurvivors int
	// Bits is b: inputs, masks and the sum live in the ring Z_{2^b}, 1..32.
	Bits int
	// Dim is d, the length of every input vector.
	Dim int
}

// Validate reports the first parameter that is out of range, by name.
func (p Params) Validate() error { return p.validate("") }

// validate is Validate with the parameters' names prefixed by where they
// sit (e.g. "ClientConfig.Params.").
func (p Params) validate(in string) error {
	switch {
	case p.Clients < 2 || p.Clients > MaxClients:
		return fmt.Errorf("%w: %sClients = %d, want 2..%d", ErrParams, in, p.Clients, MaxClients)
	case p.Degree < 1:
		return fmt.Errorf("%w: %sDegree = %d, want >= 1", ErrParams, in, p.Degree)
	case p.Degree < p.Clients-1 && p.Degree%2 != 0:
		return fmt.Errorf("%w: %sDegree = %d is odd; want an even degree or >= Clients-1 = %d", ErrParams, in, p.Degree, p.Clients-1)
	case p.Threshold < 1 || p.Threshold > p.Degree || p.Threshold > p.Clients-1:
		return fmt.Errorf("%w: %sThreshold = %d, want 1..min(Degree, Clients-1) = %d", ErrParams, in, p.Threshold, min(p.Degree, p.Clients-1))
	case p.MinSurvivors < 1 || p.MinSurvivors > p.Clients:
		return fmt.Errorf("%w: %sMinSurvivors = %d, want 1..Clients = %d", ErrParams, in, p.MinSurvivors, p.Clients)
	case p.Bits < 1 || p.Bits > 32:
		return fmt.Errorf("%w: %sBits = %d, want 1..32", ErrParams, in, p.Bits)
	case p.Dim < 1 || p.Dim > MaxDim:
		return fmt.Errorf("%w: %sDim = %d, want 1..%d", ErrParams, in, p.Dim, MaxDim)
	}
	return nil
}

// degree is the degree of the graph actually built on m live clients.
func (p Params) degree(m int) int {
	if p.Degree >= m-1 {
		return m - 1
	}
	return p.Degree
}

// mask is 2^b - 1.
func (p Params) mask() uint32 { return uint32(1<<p.Bits - 1) }

// Limits on sizes, so that a decoder never allocates on a peer's say-so more
// than these allow.
const (
	// MaxClients bounds n.
	MaxClients = 1 << 20
	// MaxDim bounds d (2^28 ring elements, 1 GiB).
	MaxDim = 1 << 28
)

// Security are the assumptions and targets from which ChooseParams derives the
// graph degree and threshold, following the SecAgg+ analysis of Bell et al.
// 2020 (§3 and Appendix): the graph is a Harary graph H(k, n) whose vertices
// are randomly relabelled, and dropouts and corruptions are independent of the
// labelling.
type Security struct {
	// Dropout is δ, the largest fraction of the n clients that may drop out
	// over the whole session while it still succeeds (with probability
	// 1 - 2^-CorrectnessBits). Default 0 means 0.3.
	Dropout float64
	// Corrupt is γ, the largest fraction of the n clients that may collude
	// with the server. Default 0 means none (a lone honest-but-curious
	// server); it raises t and k.
	Corrupt float64
	// CorrectnessBits is η: the session fails (safely) with probability at
	// most 2^-η under Dropout. Default 20.
	CorrectnessBits float64
	// SecurityBits is σ: the graph and threshold let the colluders learn more
	// than the survivors' sum with probability at most 2^-σ. Default 40.
	SecurityBits float64
}

// WithDefaults returns s with its zero fields at their defaults, as
// ChooseParams uses it (for records of what a session was chosen for).
func (s Security) WithDefaults() Security { return s.withDefaults() }

func (s Security) withDefaults() Security {
	if s.Dropout == 0 {
		s.Dropout = 0.3
	}
	if s.CorrectnessBits == 0 {
		s.CorrectnessBits = 20
	}
	if s.SecurityBits == 0 {
		s.SecurityBits = 40
	}
	return s
}

// ChooseParams returns Params for n clients, vectors of length d in
// Z_{2^bits}: the smallest even degree k (or the complete graph when no
// smaller k meets the targets) and the largest threshold t such that, by
// union bounds over the n clients,
//
//   - correctness: every client keeps at least t live neighbours when at most
//     ⌊δn⌋ clients drop, except with probability 2^-η;
//   - secrecy: no honest client has t or more colluding neighbours among
//     ⌊γn⌋ colluders, except with probability 2^-σ;
//   - connectivity: the graph left after removing dropped and colluding
//     clients stays connected (else the server would learn the sums of its
//     pieces), except with probability about (n·(δ+γ)^{k/2})² ≤ 2^-σ, the
//     chance of two runs of k/2 removed vertices on the Harary ring.
//
// MinSurvivors is set to n - ⌊δn⌋. The server also checks connectivity and
// thresholds on the actual dropouts, so a bad draw fails the session safely.
func ChooseParams(n, d, bits int, sec Security) (Params, error) {
	sec = sec.withDefaults()
	switch {
	case !(sec.Dropout > 0 && sec.Dropout < 1):
		return Params{}, fmt.Errorf("%w: Security.Dropout = %g, want in (0, 1)", ErrParams, sec.Dropout)
	case !(sec.Corrupt >= 0 && sec.Corrupt+sec.Dropout < 1):
		return Params{}, fmt.Errorf("%w: Security.Corrupt = %g, want >= 0 and Corrupt+Dropout < 1", ErrParams, sec.Corrupt)
	case !(sec.CorrectnessBits > 0 && sec.CorrectnessBits <= 128):
		return Params{}, fmt.Errorf("%w: Security.CorrectnessBits = %g, want in (0, 128]", ErrParams, sec.CorrectnessBits)
	case !(sec.SecurityBits > 0 && sec.SecurityBits <= 128):
		return Params{}, fmt.Errorf("%w: Security.SecurityBits = %g, want in (0, 128]", ErrParams, sec.SecurityBits)
	case n < 2 || n > MaxClients:
		return Params{}, fmt.Errorf("%w: n = %d, want 2..%d", ErrParams, n, MaxClients)
	}
	drop := int(math.Floor(sec.Dropout * float64(n)))
	bad := int(math.Floor(sec.Corrupt * float64(n)))
	logN := math.Log2(float64(n))
	p := Params{Clients: n, MinSurvivors: n - drop, Bits: bits, Dim: d}
	try := func(k int) (int, bool) {
		// Largest t with n·P[live neighbours < t] <= 2^-η.
		t := 0
		for tt := k; tt >= 1; tt-- {
			// live < tt  <=>  dropped neighbours >= k-tt+1
			if logN+log2HypergeomTail(n-1, drop, k, k-tt+1) <= -sec.CorrectnessBits {
				t = tt
				break
			}
		}
		if t == 0 {
			return 0, false
		}
		if bad > 0 && logN+log2HypergeomTail(n-1, bad, k, t) > -sec.SecurityBits {
			return 0, false
		}
		if k < n-1 {
			q := math.Min(1, float64(drop+bad)/float64(n))
			if 2*(logN+float64(k/2)*math.Log2(q)) > -sec.SecurityBits {
				return 0, false
			}
		}
		return t, true
	}
	for k := 2; k < n-1; k += 2 {
		if t, ok := try(k); ok {
			p.Degree, p.Threshold = k, t
			return p, p.Validate()
		}
	}
	t, ok := try(n - 1)
	if !ok {
		return Params{}, fmt.Errorf("%w: no threshold meets Dropout = %g, Corrupt = %g at n = %d even on the complete graph", ErrParams, sec.Dropout, sec.Corrupt, n)
	}
	p.Degree, p.Threshold = n-1, t
	return p, p.Validate()
}

// log2HypergeomTail returns log2 P[X >= a] for X the number of marked items
// in k draws without replacement from N items of which K are marked.
func log2HypergeomTail(N, K, k, a int) float64 {
	lo, hi := max(a, 0, k-(N-K)), min(k, K)
	if lo > hi {
		return math.Inf(-1)
	}
	// Sum the pmf in log space, largest term first for accuracy.
	terms := make([]float64, 0, hi-lo+1)
	mx := math.Inf(-1)
	for x := lo; x <= hi; x++ {
		l := lchoose(K, x) + lchoose(N-K, k-x) - lchoose(N, k)
		terms = append(terms, l)
		mx = math.Max(mx, l)
	}
	s := 0.0
	for _, l := range terms {
		s += math.Exp(l - mx)
	}
	return (mx + math.Log(s)) / math.Ln2
}

func lchoose(n, k int) float64 {
	a, _ := math.Lgamma(float64(n + 1))
	b, _ := math.Lgamma(float64(k + 1))
	c, _ := math.Lgamma(float64(n - k + 1))
	return a - b - c
}
