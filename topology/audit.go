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

	// Secrets is K of a Secret-Sharer audit (Carlini et al. 2019) of a
	// language-model job: K random secrets of a fixed format (a prefix and
	// secret_digits random digits) are each written secret_repeats times
	// into the text of secret_sharers real clients, and K more are drawn
	// and never inserted; after the job the exposure of all 2K is computed
	// exactly against every candidate of the format. 0 (the default): no
	// such audit. The task must score text (task.LanguageModel).
	Secrets int `yaml:"secrets,omitempty"`
	// SecretSharers is how many clients hold the same secret (default 1:
	// the unit the ledger's ε protects; with n > 1 a secret is a group of
	// n clients, protected only at group privacy's weaker ε).
	SecretSharers int `yaml:"secret_sharers,omitempty"`
	// SecretRepeats is how often a holder's text repeats its secret
	// (default 8).
	SecretRepeats int `yaml:"secret_repeats,omitempty"`
	// SecretDigits is the secret's length in digits, so 10^digits
	// candidates are ranked (default 6; 1..7).
	SecretDigits int `yaml:"secret_digits,omitempty"`
}

// MaxSecrets bounds audit.secrets.
const MaxSecrets = 1000

// SecretPlan is the Secret-Sharer audit with its defaults applied.
type SecretPlan struct {
	Secrets, Sharers, Repeats, Digits int
}

// SecretPlan returns the audit's secret settings with defaults applied.
func (a Audit) SecretPlan() SecretPlan {
	p := SecretPlan{Secrets: a.Secrets, Sharers: a.SecretSharers, Repeats: a.SecretRepeats, Digits: a.SecretDigits}
	if p.Sharers == 0 {
		p.Sharers = 1
	}
	if p.Repeats == 0 {
		p.Repeats = 8
	}
	if p.Digits == 0 {
		p.Digits = 6
	}
	return p
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
	if a.Secrets < 0 || a.Secrets > MaxSecrets {
		return fmt.Errorf("%w: audit.secrets: %d: use 0 (none) or 1..%d (a few dozen give a usable lower bound)", ErrInvalid, a.Secrets, MaxSecrets)
	}
	if a.SecretSharers < 0 || a.SecretRepeats < 0 || a.SecretRepeats > 1000 {
		return fmt.Errorf("%w: audit.secret_sharers %d, audit.secret_repeats %d: use 0 (defaults 1 and 8) or positive counts (repeats ≤ 1000)", ErrInvalid, a.SecretSharers, a.SecretRepeats)
	}
	if a.SecretDigits < 0 || a.SecretDigits > 7 {
		return fmt.Errorf("%w: audit.secret_digits: %d: use 1..7 (10^digits candidates are ranked exactly), or 0 for 6", ErrInvalid, a.SecretDigits)
	}
	if p := a.SecretPlan(); a.Secrets > 0 && 2*a.Secrets > pow10(p.Digits) {
		return fmt.Errorf("%w: audit.secrets: %d inserted and %d never-inserted secrets do not fit in 10^%d candidates: raise audit.secret_digits", ErrInvalid, a.Secrets, a.Secrets, p.Digits)
	}
	if a.Secrets == 0 && (a.SecretSharers != 0 || a.SecretRepeats != 0 || a.SecretDigits != 0) {
		return fmt.Errorf("%w: audit.secret_sharers, secret_repeats and secret_digits describe audit.secrets: set audit.secrets too", ErrInvalid)
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

// SecretHolders returns, for each of the audit's inserted secrets, the ids
// of the real clients whose text holds it: Secrets × Sharers distinct
// clients drawn by the audit's seed (CanarySeed), disjoint across
// secrets. It returns nil without audit.secrets, and an error when the
// population is too small.
func (t *Topology) SecretHolders() ([][]string, error) {
	p := t.Audit.SecretPlan()
	if p.Secrets == 0 {
		return nil, nil
	}
	var ids []string
	for _, r := range t.Regions {
		for i := 0; i < r.Clients; i++ {
			ids = append(ids, ClientID(r.ID, i))
		}
	}
	if p.Secrets*p.Sharers > len(ids) {
		return nil, fmt.Errorf("%w: audit.secrets %d × audit.secret_sharers %d = %d holders: the regions have %d clients", ErrInvalid, p.Secrets, p.Sharers, p.Secrets*p.Sharers, len(ids))
	}
	// A seeded Fisher–Yates shuffle (splitmix64, no math/rand: the
	// choice is part of the job's definition and must not change with Go).
	x := t.CanarySeed() ^ 0x5ec7e75
	next := func() uint64 {
		x += 0x9e3779b97f4a7c15
		z := x
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		return z ^ (z >> 31)
	}
	for i := len(ids) - 1; i > 0; i-- {
		j := int(next() % uint64(i+1))
		ids[i], ids[j] = ids[j], ids[i]
	}
	out := make([][]string, p.Secrets)
	for s := range out {
		out[s] = ids[s*p.Sharers : (s+1)*p.Sharers]
	}
	return out, nil
}

// SecretPrefix is the fixed part of a Secret-Sharer secret's format: a
// secret is SecretPrefix, audit.secret_digits decimal digits and a
// closing quote, on a line of its own (SecretLine). Exposure ranks the
// digits after SecretPrefix.
const SecretPrefix = `api_key = "`

// SecretLine is the line a holder's text repeats for the secret digits.
func SecretLine(digits string) []byte { return []byte(SecretPrefix + digits + "\"\n") }

// SecretValues draws the audit's 2·Secrets distinct secrets from its seed:
// the first Secrets are inserted (secret s into SecretHolders()[s]), the
// rest never are. Both halves come from one stream, so which secrets are
// inserted is fixed before training and independent of the data.
func (t *Topology) SecretValues() (inserted, never []string) {
	p := t.Audit.SecretPlan()
	if p.Secrets == 0 {
		return nil, nil
	}
	x := t.CanarySeed() ^ 0x5ec2e7
	next := func() uint64 {
		x += 0x9e3779b97f4a7c15
		z := x
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		return z ^ (z >> 31)
	}
	space := uint64(1)
	for i := 0; i < p.Digits; i++ {
		space *= 10
	}
	seen := map[uint64]bool{}
	var all []string
	for len(all) < 2*p.Secrets && uint64(len(seen)) < space {
		// Rejection sampling keeps the draw uniform over the space.
		v := next()
		if lim := ^uint64(0) - ^uint64(0)%space; v >= lim {
			continue
		}
		v %= space
		if seen[v] {
			continue
		}
		seen[v] = true
		all = append(all, fmt.Sprintf("%0*d", p.Digits, v))
	}
	k := min(p.Secrets, len(all)/2)
	return all[:k], all[k : 2*k]
}

func pow10(n int) int {
	v := 1
	for ; n > 0; n-- {
		v *= 10
	}
	return v
}
