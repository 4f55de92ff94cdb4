package topology

import (
	"fmt"
	"math"
)

// Audit asks for an empirical privacy measurement of the job (Andrew et al.
// 2024): canary clients join the population, and `strata audit privacy`
// estimates from the released models what an attacker could learn about
// them, beside the ledger's guarantee.
type Audit struct {
	// Canaries is K, the number of canary clients inserted: extra members
	// of the population, enrolled, budgeted, sampled and accounted like any
	// client, whose update is a fixed random unit direction scaled past
	// the clip norm (so always clipped to exactly C). K more directions are
	// drawn and never inserted. 0 (the default) inserts none; otherwise at
	// least 10, so that the statistics can be fitted.
	Canaries int `yaml:"canaries,omitempty"`
	// Seed draws the canaries' directions; 0 means the topology's seed.
	Seed uint64 `yaml:"seed,omitempty"`
	// MaxEpsilon, when positive, is a promotion gate: a new model version
	// whose one-shot ε estimate (all-iterates statistic over the versions
	// served so far and this one) exceeds it is recorded but not served,
	// like a version failing the evaluation gate. It needs canaries.
	MaxEpsilon float64 `yaml:"max_empirical_epsilon,omitempty"`
}

// MaxCanaries bounds audit.canaries: each canary is a simulated client with
// its own connection.
const MaxCanaries = 100000

// Validate checks the audit plan; errors name the field.
func (a Audit) Validate() error {
	if a.Canaries != 0 && (a.Canaries < 10 || a.Canaries > MaxCanaries) {
		return fmt.Errorf("%w: audit.canaries: %d: use 0 (no audit) or 10..%d (a few hundred to a thousand give tight estimates)", ErrInvalid, a.Canaries, MaxCanaries)
	}
	if !(a.MaxEpsilon >= 0) || math.IsInf(a.MaxEpsilon, 0) {
		return fmt.Errorf("%w: audit.max_empirical_epsilon: %v: use a finite ε > 0, or 0 for no gate", ErrInvalid, a.MaxEpsilon)
	}
	if a.MaxEpsilon > 0 && a.Canaries == 0 {
		return fmt.Errorf("%w: audit.max_empirical_epsilon: the gate measures canaries: set audit.canaries too", ErrInvalid)
	}
	return nil
}

// CanarySeed is the seed of the canaries' directions.
func (t *Topology) CanarySeed() uint64 {
	if t.Audit.Seed != 0 {
		return t.Audit.Seed
	}
	return t.Seed
}

// CanaryClient is one inserted canary; Index is its direction's index.
type CanaryClient struct {
	ID     string
	Region string
	Index  int
}

// CanaryClients lists the inserted canaries, dealt to the regions in turn.
// Their ids cannot collide with ClientID's.
func (t *Topology) CanaryClients() []CanaryClient {
	if len(t.Regions) == 0 {
		return nil
	}
	out := make([]CanaryClient, t.Audit.Canaries)
	for i := range out {
		r := t.Regions[i%len(t.Regions)].ID
		out[i] = CanaryClient{ID: fmt.Sprintf("%s-canary%05d", r, i), Region: r, Index: i}
	}
	return out
}
