package global

import (
	"fmt"
	"math"
	"sort"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/privacy"
	"github.com/strata-fl/strata/topology"
)

// ObserverMechanism is the mechanism one observer sees in one round: the
// sampling rate it cannot see through, the noise multiplier the protocol
// guarantees against it, and whether it may learn that the client took
// part (docs/privacy-model.md, the table of observers).
type ObserverMechanism struct {
	Q     float64
	Sigma float64
	// Revealed is set when the observer may tell from what it sees whether
	// the client was sampled: the round then costs the "sampling revealed"
	// curve (privacy.RevealedRDPStep) rather than the amplified one.
	Revealed bool
	// Samplers is how many noise draws per coordinate the credited noise
	// comes from; each may add the sampler's float64 slack to ε.
	Samplers int
	// Or lists other bounds that hold for the same release on their own
	// (where a rounding sits between two noises, each noise protects alone):
	// the round costs the smaller curve at each order, since each order's
	// Rényi divergence is bounded by every valid bound.
	Or []ObserverMechanism
}

// Step returns the mechanism's one-round RDP curve: the pointwise minimum
// over its bounds.
func (m ObserverMechanism) Step() []float64 {
	step := m.curve()
	for _, alt := range m.Or {
		for i, v := range alt.Step() {
			step[i] = math.Min(step[i], v)
		}
	}
	return step
}

func (m ObserverMechanism) curve() []float64 {
	if m.Revealed {
		return privacy.RevealedRDPStep(m.Q, m.Sigma)
	}
	return privacy.RDPStep(m.Q, m.Sigma)
}

// slackSamplers is the largest sampler count over the bounds: the slack of
// whichever bound a conversion uses is covered.
func (m ObserverMechanism) slackSamplers() int {
	n := m.Samplers
	for _, alt := range m.Or {
		n = max(n, alt.slackSamplers())
	}
	return n
}

// credited is the largest noise multiplier among the bounds, for reports.
func (m ObserverMechanism) credited() float64 {
	s := m.Sigma
	for _, alt := range m.Or {
		s = max(s, alt.credited())
	}
	return s
}

// withBits combines every bound with the clipping bits' Gaussian release.
func (m ObserverMechanism) withBits(z float64) ObserverMechanism {
	m.Sigma = combine(m.Sigma, z)
	or := make([]ObserverMechanism, len(m.Or))
	for i, alt := range m.Or {
		or[i] = alt.withBits(z)
	}
	m.Or = or
	return m
}

// Costing is what one round's cost depends on besides the topology.
type Costing struct {
	Noise topology.Noise
	// Clip is the round's clip norm C_t (adaptive clipping moves it); the
	// sampler's lattice, and so its sensitivity widening, follows it.
	Clip float64
	Dim  int
	// Caps are the regions' top-up caps (privacy.top_up), one per region;
	// nil otherwise.
	Caps []RegionCap
	// Population bounds how many clients' updates the round can sum (the
	// clients enrolled): it sizes the lattice and the float64 rounding of
	// sums of un-noised updates.
	Population int
}

// Lattice returns the round's one noise lattice (privacy.Lattice) for the
// noise every tier adds and the largest value the round can produce: every
// client's coordinate within C plus 13 edge-noise deviations (the
// sampler's reach), the regions' noise within 13 of theirs, the global
// noise within 13 of its own.
func (in Costing) Lattice(t *topology.Topology) (float64, error) {
	c, n := in.Clip, in.Noise
	top := n.Regional * n.Regional
	for _, cp := range in.Caps {
		top = max(top, n.Regional*n.Regional+float64(cp.Cap)*n.Edge*n.Edge)
	}
	sigmas := []float64{n.Edge * c, n.Regional * c, math.Sqrt(top) * c, n.Global * c}
	mag := float64(max(1, in.Population))*c*(1+13*n.Edge) + float64(len(t.Regions))*13*math.Sqrt(top)*c + 13*n.Global*c
	g, err := privacy.Lattice(sigmas, mag)
	if err != nil {
		return 0, fmt.Errorf("global: the round's noise lattice: %w", err)
	}
	return g, nil
}

// sensitivity is the L2 distance two neighbouring rounds' values can have
// when the first noise is added: C, widened by the snap of the client's
// un-noised values to the lattice (g√d: every value after it stays on the
// lattice, so this happens once) and, without edge noise, by the float64
// rounding of the region's sum of float32 updates before that snap (at
// most 2·γ_N·N·C over N updates, γ_N = N·2⁻⁵³/(1 − N·2⁻⁵³), in both
// worlds).
func (in Costing) sensitivity(c, g float64) float64 {
	w := c + g*math.Sqrt(float64(in.Dim))
	if in.Noise.Edge == 0 {
		n := float64(max(1, in.Population))
		u := n * 0x1p-53
		w += 2 * u / (1 - u) * n * c
	}
	return w
}

// RegionCap is one region's top-up cap: it accepts at most Cap updates a
// round and tops its noise up to Cap clients' worth of edge noise; with
// Clients eligible clients sampled at rate q it would see more than Cap
// with probability Tail, which the round charges in δ.
type RegionCap struct {
	Region  string
	Clients int
	Cap     int
	Tail    float64
}

// TopUpCaps fixes each region's cap for a round from its eligible clients
// (counts by region): the smallest cap exceeded with probability at most
// δ/(100·rounds·regions), so that over the job the caps use up at most a
// hundredth of δ. It returns nil when the plan does not top up.
func TopUpCaps(t *topology.Topology, counts map[string]int) ([]RegionCap, error) {
	if !t.Privacy.TopUp {
		return nil, nil
	}
	eta := t.Privacy.Delta / (100 * float64(max(1, t.Train.Rounds)) * float64(len(t.Regions)))
	caps := make([]RegionCap, 0, len(t.Regions))
	for _, r := range t.Regions {
		k, tail, err := privacy.TopUpCap(counts[r.ID], t.Privacy.SamplingRate, eta)
		if err != nil {
			return nil, fmt.Errorf("global: top-up cap of region %s: %w", r.ID, err)
		}
		caps = append(caps, RegionCap{Region: r.ID, Clients: counts[r.ID], Cap: k, Tail: tail})
	}
	return caps, nil
}

// normCheckDelta covers a region's norm check rejecting an honest
// edge-noised update (regional.NormBound: the noise's norm exceeds its
// bound with probability below e^-800): a data-dependent event, whose
// weight in δ is at most (1 + e^ε)·e^-800 < 1e-40 for every ε ≤ maxEpsilon.
const normCheckDelta = 1e-40

// maxEpsilon is the largest ε the ledger reports as a number in a plan
// with edge noise; beyond it normCheckDelta no longer covers the norm
// check's rare rejection, and ε is reported as ∞ (a guarantee of e^700
// means nothing anyway).
const maxEpsilon = 700

// roundDelta is the δ a round uses up: TailMass for every coordinate of
// every draw some observer's credited noise comes from, the norm check with
// edge noise, and the top-up caps' tails.
func roundDelta(mech map[ledger.Observer]ObserverMechanism, in Costing) float64 {
	draws := 0
	for _, m := range mech {
		draws = max(draws, m.slackSamplers())
	}
	d := float64(draws) * float64(in.Dim) * privacy.TailMass
	if in.Noise.Edge > 0 {
		d += normCheckDelta
	}
	for _, c := range in.Caps {
		d += c.Tail
	}
	return d
}

// Mechanisms returns each observer's mechanism for a round. The rules,
// each proven in docs/privacy-model.md:
//
//   - Noise is credited against an observer only if the observer does not
//     add it itself and the protocol guarantees it is there.
//   - A client adds edge noise only in the rounds it is sampled in, so the
//     variance of what it contributes reveals its participation: with edge
//     noise the public and fellow clients pay the revealed-sampling curve,
//     unless regions top the noise up to a variance that does not depend on
//     who took part (privacy.top_up).
//   - Where a rounding sits between two noises (secure aggregation's
//     quantization, q8 or top-k compression of an edge-noised update), the
//     two are not added up as one Gaussian: the ledger takes the better of
//     the bounds each gives alone.
//   - Fellow clients learn their own sampling decision only; under secure
//     aggregation they learn their neighbours', so they get no
//     amplification there.
//   - The operators chose or see the sample: no amplification (q = 1).
//
// Every tier adds its noise on the round's one lattice (Costing.Lattice),
// so the only rounding of a client's data is its snap to the lattice
// before the first noise; every multiplier is divided by the sensitivity
// that widens (Costing.sensitivity), computed with the round's own clip
// norm. A plan whose lattice cannot be built credits nothing.
func Mechanisms(t *topology.Topology, in Costing) map[ledger.Observer]ObserverMechanism {
	n, c, dim := in.Noise, in.Clip, in.Dim
	if !(c > 0) {
		c = t.Privacy.ClipNorm
		in.Clip = c
	}
	q := t.Privacy.SamplingRate
	m := float64(t.Privacy.MinRegions)
	mi := t.Privacy.MinRegions
	widened := math.Inf(1)
	if g, err := in.Lattice(t); err == nil {
		widened = in.sensitivity(c, g)
	}
	scale := c / widened
	edge := n.Edge > 0
	regSamplers := mi * boolInt(n.Regional > 0)
	globalSampler := boolInt(n.Global > 0)
	edgeSampler := boolInt(edge)
	edgeOnly := ObserverMechanism{Q: 1, Sigma: scale * n.Edge, Samplers: edgeSampler}
	mech := map[ledger.Observer]ObserverMechanism{
		ledger.RegionalOperator: edgeOnly,
		ledger.GlobalOperator:   {Q: 1, Sigma: scale * math.Sqrt(n.Edge*n.Edge+n.Regional*n.Regional), Samplers: edgeSampler + boolInt(n.Regional > 0)},
	}
	public := ObserverMechanism{Q: q, Sigma: scale * math.Sqrt(n.Edge*n.Edge+m*n.Regional*n.Regional+n.Global*n.Global), Revealed: edge, Samplers: edgeSampler + regSamplers + globalSampler}
	fellow := public
	switch {
	case t.SecAgg.On:
		// A client's contribution to its region's sum is its edge-noised
		// update rounded stochastically to steps of C/scale: the rounding
		// sits between the edge noise and the later noise. Two bounds hold
		// on their own: everything after the edge noise is post-processing
		// of x + e (the edge noise alone); and given e and the rounding
		// coins the rounded value moves at most one step per coordinate
		// further than x does, so the later noise protects a sensitivity
		// of C + √d·C/scale. Both see participation when there is edge
		// noise (e is fixed given the coins).
		later := 0.0 // no scale (an unvalidated plan): credit the edge noise only
		if s := t.SecAgg.Scale; s > 0 {
			later = c / (widened + c*math.Sqrt(float64(dim))/s)
		}
		pubLater := later * math.Sqrt(m*n.Regional*n.Regional+n.Global*n.Global)
		public = either(ObserverMechanism{Q: q, Sigma: edgeOnly.Sigma, Revealed: true, Samplers: edgeSampler},
			ObserverMechanism{Q: q, Sigma: pubLater, Revealed: edge, Samplers: regSamplers + globalSampler})
		mech[ledger.GlobalOperator] = either(edgeOnly, ObserverMechanism{Q: 1, Sigma: later * n.Regional, Samplers: boolInt(n.Regional > 0)})
		fellow = exposed(public) // neighbours learn each other's participation
	case edge && t.DataPath.Compressed():
		// q8 and top-k compress the edge-noised update with data-dependent
		// scales and supports: the later noise protects no useful
		// sensitivity, so only the edge noise is credited.
		public = ObserverMechanism{Q: q, Sigma: edgeOnly.Sigma, Revealed: true, Samplers: edgeSampler}
		mech[ledger.GlobalOperator] = edgeOnly
		fellow = public
	case edge && t.Privacy.TopUp:
		// Every region tops its sum's noise up to (σ_r² + K_r·σ_e²)·C², so
		// the variance of every partial is the same whoever took part; the
		// public is credited with all of it, fellow clients (who may know
		// every other client's noise) with the regional and global noise and
		// one edge-noise share of the client's own region.
		k := smallestSum(in.Caps, mi)
		public = ObserverMechanism{Q: q, Sigma: scale * math.Sqrt(m*n.Regional*n.Regional+float64(k)*n.Edge*n.Edge+n.Global*n.Global),
			Samplers: k + regSamplers + globalSampler}
		fellow = ObserverMechanism{Q: q, Sigma: scale * math.Sqrt(m*n.Regional*n.Regional+n.Edge*n.Edge+n.Global*n.Global),
			Samplers: edgeSampler + regSamplers + globalSampler}
	}
	mech[ledger.Public], mech[ledger.FellowClients] = public, fellow
	if ac := t.Privacy.AdaptiveClip; ac.Enabled {
		// The clipping bits are a second Gaussian release of the same
		// clients: Σ(bit − ½) has sensitivity ½, so region noise σ_b is a
		// multiplier 2σ_b. The public and fellow clients see at least
		// MinRegions regions' bit noise, the global operator its client's
		// region's, and the regional operator the bits in clear — or, with
		// secure aggregation, only their sum over the survivors, but
		// un-noised at its tier: no claim is made for it (0, so ε stays ∞
		// against the regional operator).
		sb := ac.BitNoise * 2 * c / widened
		bits := map[ledger.Observer]float64{ledger.Public: math.Sqrt(m) * sb, ledger.FellowClients: math.Sqrt(m) * sb, ledger.GlobalOperator: sb, ledger.RegionalOperator: 0}
		for o, mm := range mech {
			mech[o] = mm.withBits(bits[o])
		}
	}
	return mech
}

// either is the release bounded by a and by b, each valid alone.
func either(a, b ObserverMechanism) ObserverMechanism {
	a.Or = append(append([]ObserverMechanism(nil), a.Or...), b)
	return a
}

// exposed is m seen by an observer that knows whether the client took
// part: no amplification.
func exposed(m ObserverMechanism) ObserverMechanism {
	m.Q, m.Revealed = 1, true
	or := make([]ObserverMechanism, len(m.Or))
	for i, alt := range m.Or {
		or[i] = exposed(alt)
	}
	m.Or = or
	return m
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// smallestSum is the sum of the k smallest caps: the noise of the k
// regions a release needs at the least.
func smallestSum(caps []RegionCap, k int) int {
	s := make([]int, len(caps))
	for i, c := range caps {
		s[i] = c.Cap
	}
	sort.Ints(s)
	total := 0
	for i := 0; i < k && i < len(s); i++ {
		total += s[i]
	}
	return total
}

// combine returns the multiplier of two independent Gaussian releases of
// the same data, z = (z₁⁻² + z₂⁻²)^(−1/2); an unprotected part (0) makes
// the whole unprotected.
func combine(z1, z2 float64) float64 {
	if z1 == 0 || z2 == 0 {
		return 0
	}
	return 1 / math.Sqrt(1/(z1*z1)+1/(z2*z2))
}

// samplerSlack is the ε the secure sampler's float64 acceptance test may add
// per release and per coordinate (privacy.Gaussian: below 2^-47), for the
// draws an observer's credited noise comes from.
func samplerSlack(m ObserverMechanism, dim int) float64 {
	return float64(m.slackSamplers()) * float64(dim) * math.Ldexp(1, -47)
}

// roundSlack is the ε slack of one round per observer.
func roundSlack(mech map[ledger.Observer]ObserverMechanism, dim int) ledger.PerObserver[float64] {
	var s ledger.PerObserver[float64]
	for _, o := range ledger.Observers {
		s.Set(o, samplerSlack(mech[o], dim))
	}
	return s
}

// Spent is what the ledger has charged so far: the cumulative curve, ε
// slack and δ per observer.
type Spent struct {
	Curve ledger.PerObserver[[]float64]
	Slack ledger.PerObserver[float64]
	Delta float64
}

// RoundCost is one round's charge: its one-step curves, ε slack and δ,
// and the cumulative ε and the credited multiplier per observer after it.
type RoundCost struct {
	RDP          ledger.PerObserver[[]float64]
	Slack        ledger.PerObserver[float64]
	Delta        float64
	EpsilonAfter ledger.PerObserver[float64]
	Sigma        ledger.PerObserver[float64]
}

// roundCost computes, on the proposer, one round's charge and the
// cumulative ε after `rounds` such rounds on top of what the ledger has
// charged so far (rounds = 1 for the round about to open, more to project
// a plan): ε at the job's δ is the RDP conversion at the δ left once every
// charged δ is taken out (privacy.EffectiveDelta), plus the ε slack.
func roundCost(mech map[ledger.Observer]ObserverMechanism, in Costing, spent Spent, delta float64, rounds int) (RoundCost, error) {
	rc := RoundCost{Delta: roundDelta(mech, in), Slack: roundSlack(mech, in.Dim)}
	eff, err := privacy.EffectiveDelta(delta, spent.Delta+float64(rounds)*rc.Delta)
	if err != nil {
		return rc, fmt.Errorf("global: the plan's δ charges use up δ = %g: %w", delta, err)
	}
	for _, o := range ledger.Observers {
		m := mech[o]
		step := m.Step()
		prev := spent.Curve.Get(o)
		after := make([]float64, len(step))
		for i, v := range step {
			after[i] = float64(rounds) * v
			if i < len(prev) {
				after[i] += prev[i]
			}
		}
		e, _, err := privacy.EpsilonFromRDP(after, eff)
		if err != nil {
			return rc, fmt.Errorf("global: ε against %s: %w", o, err)
		}
		if e += spent.Slack.Get(o) + float64(rounds)*rc.Slack.Get(o); e > maxEpsilon && in.Noise.Edge > 0 {
			e = math.Inf(1) // beyond what normCheckDelta covers
		}
		rc.RDP.Set(o, step)
		rc.EpsilonAfter.Set(o, e)
		rc.Sigma.Set(o, m.credited())
	}
	return rc, nil
}
