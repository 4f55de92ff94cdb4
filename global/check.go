package global

import (
	"fmt"
	"math"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/mesh"
	"github.com/strata-fl/strata/topology"
)

// Projection is the ε per observer a plan would have spent at the end of
// the job, had every planned round run.
type Projection struct {
	Rounds  int
	Delta   float64
	Epsilon ledger.PerObserver[float64]
	Sigma   ledger.PerObserver[float64]
	// DeltaCharged is the δ the planned rounds use up beyond their RDP
	// curves (sampler tails, top-up caps): ε is reported at δ less it.
	DeltaCharged float64
	// Caps are the regions' top-up caps (privacy.top_up), nil without.
	Caps []RegionCap
}

// Violation is one broken policy rule.
type Violation struct {
	Rule   string // e.g. "max_epsilon.public", "require_noise_against"
	Detail string
}

func (v Violation) String() string { return v.Rule + ": " + v.Detail }

// Project computes the end-of-job ε per observer of a plan for a model of
// dim parameters, exactly as the ledger would charge it round by round.
func Project(t *topology.Topology, dim int) (Projection, error) {
	in, err := firstRound(t, dim)
	if err != nil {
		return Projection{}, err
	}
	if _, err := in.Lattice(t); err != nil {
		return Projection{}, err
	}
	p := Projection{Rounds: t.Train.Rounds, Delta: t.Privacy.Delta}
	rc, err := roundCost(Mechanisms(t, in), in, Spent{}, t.Privacy.Delta, t.Train.Rounds)
	if err != nil {
		return p, fmt.Errorf("global: projecting ε: %w", err)
	}
	p.Epsilon, p.Sigma = rc.EpsilonAfter, rc.Sigma
	p.DeltaCharged, p.Caps = float64(t.Train.Rounds)*rc.Delta, in.Caps
	return p, nil
}

// Check projects a plan and lists the policy rules it breaks: the mesh
// budget against the public, each max_epsilon, each observer that must be
// protected by noise it does not add itself, and secure aggregation when
// the policy requires it.
func Check(t *topology.Topology, dim int) (Projection, []Violation, error) {
	p, err := Project(t, dim)
	if err != nil {
		return p, nil, err
	}
	var vs []Violation
	if e := p.Epsilon.Public; e > t.Privacy.Budget {
		vs = append(vs, Violation{"privacy.budget", fmt.Sprintf("projected public ε %.4g after %d rounds exceeds the budget %.4g: lower rounds or sampling_rate, or raise noise", e, p.Rounds, t.Privacy.Budget)})
	}
	for _, o := range ledger.Observers {
		if max, ok := t.Policy.MaxEpsilon[string(o)]; ok && p.Epsilon.Get(o) > max {
			vs = append(vs, Violation{"max_epsilon." + string(o), fmt.Sprintf("projected ε %s exceeds %.4g", fmtEpsilon(p.Epsilon.Get(o)), max)})
		}
	}
	for _, o := range t.Policy.RequireNoiseAgainst {
		if math.IsInf(p.Epsilon.Get(ledger.Observer(o)), 1) {
			vs = append(vs, Violation{"require_noise_against", fmt.Sprintf("no noise below the %s protects clients from it (ε = ∞): %s", o, fixFor(ledger.Observer(o)))})
		}
	}
	// A masked input travels as one NATS message (secure aggregation has
	// no streamed form yet): 4 bytes per element, the clipping bit, and a
	// little framing.
	if need := 4*(dim+1) + 1024; t.SecAgg.On && need > mesh.DefaultMaxPayload {
		vs = append(vs, Violation{"secagg", fmt.Sprintf("a masked input of the %d-parameter model takes %d bytes, more than the NATS server's default max payload %d: secure aggregation does not stream updates yet; fine-tune fewer parameters (training.full: false) or turn secagg off", dim, need, mesh.DefaultMaxPayload)})
	}
	if t.Policy.RequireSecAgg && !t.SecAgg.On {
		vs = append(vs, Violation{"require_secagg", "the policy requires secure aggregation, so that no regional operator sees an individual update: set secagg.on: true"})
	}
	return p, vs, nil
}

func fixFor(o ledger.Observer) string {
	switch o {
	case ledger.GlobalOperator:
		return "set privacy.noise.regional or privacy.noise.edge"
	case ledger.RegionalOperator:
		return "set privacy.noise.edge"
	}
	return "set any privacy.noise"
}

func fmtEpsilon(e float64) string {
	if math.IsInf(e, 1) {
		return "∞"
	}
	return fmt.Sprintf("%.4g", e)
}

// firstRound is what the first round would use: the noise paced to land
// on the target, adjusted for the clipping bits, or as planned; the
// topology's clip norm; caps for every enrolled client of each region.
func firstRound(t *topology.Topology, dim int) (Costing, error) {
	counts := map[string]int{}
	for _, r := range t.Regions {
		counts[r.ID] += r.Clients
	}
	for _, c := range t.CanaryClients() {
		counts[c.Region]++
	}
	in := Costing{Noise: t.Privacy.Noise, Clip: t.Privacy.ClipNorm, Dim: dim, Population: t.Population() + len(t.CanaryClients())}
	var err error
	if in.Caps, err = TopUpCaps(t, counts); err != nil {
		return in, err
	}
	switch {
	case t.Privacy.Pacing.TargetEpsilon > 0:
		in.Noise, _, err = PaceNoise(t, in, Spent{}, t.Train.Rounds)
	case t.Privacy.AdaptiveClip.Enabled:
		in.Noise, err = AdaptiveNoise(t, in)
	}
	return in, err
}
