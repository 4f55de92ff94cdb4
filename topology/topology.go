// Package topology describes a Strata mesh: its regions and clients, the
// privacy plan (sampling, clipping, noise at each tier, budgets) and the
// training plan. It is plain data with defaults and validation; every error
// names the field and says how to fix it.
package topology

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// ErrInvalid is wrapped by every validation error.
var ErrInvalid = errors.New("topology: invalid")

// Topology is the whole mesh description.
type Topology struct {
	// Job names the training job; it is part of every NATS subject.
	Job string `yaml:"job"`
	// Seed makes the data partition and the simulated clients' local
	// training reproducible. It never seeds DP noise or sampling, which
	// always come from crypto/rand.
	Seed    uint64   `yaml:"seed"`
	Regions []Region `yaml:"regions"`
	Privacy Privacy  `yaml:"privacy"`
	Train   Training `yaml:"training"`
	// Task names what the job trains and carries the task's own settings
	// (its data, model and local training), which the task reads and
	// validates (task/builtin).
	Task   Task      `yaml:"task"`
	Round  RoundPlan `yaml:"round"`
	Policy Policy    `yaml:"policy,omitempty"`
	// DataPath: chunking, flow control, compression (topology/datapath.go).
	DataPath DataPath `yaml:"data_path,omitempty"`
	// Audit: canary clients for empirical privacy measurement (topology/audit.go).
	Audit Audit `yaml:"audit,omitempty"`
	// Security: signatures (topology/security.go).
	Security Security `yaml:"security,omitempty"`
	// SecAgg: secure aggregation at the regional tier (topology/secagg.go).
	SecAgg SecAgg `yaml:"secagg,omitempty"`
}

// Policy states what a plan must guarantee before any data moves; `strata
// check` and `strata up` refuse a plan that breaks it.
type Policy struct {
	// MaxEpsilon caps the projected end-of-job ε per observer ("public",
	// "global_operator", "regional_operator").
	MaxEpsilon map[string]float64 `yaml:"max_epsilon,omitempty"`
	// RequireNoiseAgainst lists observers that must be protected by noise
	// they do not add themselves (a finite ε).
	RequireNoiseAgainst []string `yaml:"require_noise_against,omitempty"`
	// RequireSecAgg refuses a plan without secure aggregation (secagg.on),
	// so no regional operator ever sees an individual update.
	RequireSecAgg bool `yaml:"require_secagg,omitempty"`
}

// Observers names the observers a policy may refer to.
var Observers = []string{"public", "fellow_clients", "global_operator", "regional_operator"}

// Region is one regional aggregator and the clients attached to it.
type Region struct {
	ID string `yaml:"id"`
	// Clients is the number of simulated edge clients in this region.
	Clients int `yaml:"clients"`
}

// Noise holds noise multipliers (standard deviation ÷ clip norm) per tier.
type Noise struct {
	Edge     float64 `yaml:"edge"`     // each client, to its own clipped update
	Regional float64 `yaml:"regional"` // each region, to its sum
	Global   float64 `yaml:"global"`   // the global tier, to the merged sum
}

// Privacy is the privacy plan.
type Privacy struct {
	Delta        float64 `yaml:"delta"`         // δ of every reported ε; default 1e-5
	SamplingRate float64 `yaml:"sampling_rate"` // Poisson rate q per round; default 0.05
	ClipNorm     float64 `yaml:"clip_norm"`     // L2 bound C of one client's update; default 1
	Noise        Noise   `yaml:"noise"`
	// MinRegions is how many regional partials a round needs to be
	// released; the public observer is credited with the noise of this many
	// regions only. Default: all regions but one (at least 1).
	MinRegions int `yaml:"min_regions"`
	// Budget is the mesh's ε budget against the public observer; a round
	// that would exceed it is refused. Default 4.
	Budget float64 `yaml:"budget"`
	// Accountant is the ledger's accountant. Only "rdp" (the default) is
	// accepted: the ledger composes per-round RDP curves by addition, which
	// replicas can do exactly. PLD is available for planning
	// (`strata privacy epsilon --accountant pld`).
	Accountant string `yaml:"accountant"`
	// Pacing, when on, recalibrates the noise every round to land on a
	// target ε; the plan's ratios between tiers are kept.
	Pacing Pacing `yaml:"pacing,omitempty"`
	// AdaptiveClip, when on, makes the clip norm track a quantile of
	// update norms; ClipNorm is its starting value.
	AdaptiveClip AdaptiveClip `yaml:"adaptive_clip,omitempty"`
	// ClientBudgets overrides Budget (the public ε a client may spend)
	// for named clients.
	ClientBudgets map[string]float64 `yaml:"client_budgets,omitempty"`
	// TopUp makes edge noise count against the public: each region adds
	// noise so that its partial's variance is (σ_r² + K·σ_e²)·C² whoever
	// took part, K a cap on the region's accepted updates exceeded with
	// negligible probability (charged in δ). Without it a client's edge
	// noise, added only when it is sampled, reveals its participation and
	// the public pays the revealed-sampling curve (docs/privacy-model.md).
	// Needs privacy.noise.edge > 0; not with secagg.on or
	// data_path.compression. Default false.
	TopUp bool `yaml:"top_up,omitempty"`
}

// Training is the server's side of the fine-tuning plan; how a client
// trains is the task's (Task).
type Training struct {
	Rounds         int     `yaml:"rounds"`          // server rounds; default 40
	ServerLR       float64 `yaml:"server_lr"`       // default 2
	ServerMomentum float64 `yaml:"server_momentum"` // default 0.5
	// GateMaxDrop is the evaluation gate: a new model version is promoted
	// only if its evaluation metric (the task's first: accuracy for MNIST,
	// bits per byte for the language model) is at most this much worse than
	// the serving version's, in the metric's units; otherwise it is
	// recorded and the old version keeps serving. Default 0.05; a large
	// value disables the gate.
	GateMaxDrop float64 `yaml:"gate_max_drop"`
}

// Task is what a job trains: a built-in task by name ("mnist", the
// default, or "lm") with its own settings, which the topology carries but
// does not interpret — the task package reads and validates them.
type Task struct {
	Name string `yaml:"name"`
	// Evaluator, when set, scores model versions for the global tier in
	// an external process (topology/evaluator.go).
	Evaluator *Evaluator `yaml:"evaluator,omitempty"`
	// Options are every other key of the task section.
	Options map[string]any `yaml:",inline"`
}

// RoundPlan sets round timing.
type RoundPlan struct {
	// Timeout bounds how long regions wait for updates; default 60s.
	Timeout Duration `yaml:"timeout"`
	// Resume says whether a new raft leader finishes a round its
	// predecessor left open — merging the partials the regions already
	// delivered (kept in the NATS cluster's partial log) and waiting for
	// the rest until the round's deadline — instead of aborting it with
	// its cost kept. Unset means on (Resumes). It only operates the job:
	// it is not part of the topology's hash.
	Resume *bool `yaml:"resume,omitempty"`
}

// Resumes reports whether round.resume is on (unset: on).
func (r RoundPlan) Resumes() bool { return r.Resume == nil || *r.Resume }

// Duration is a time.Duration written as "30s" in YAML.
type Duration struct{ time.Duration }

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// UnmarshalYAML reads "30s"-style durations.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration such as 30s or 2m", n.Line, n.Value)
	}
	d.Duration = v
	return nil
}

// Default returns the built-in default topology: 3 regions, 5000 simulated
// clients, and a noise plan that keeps the public ε under 4 at δ = 1e-5 over
// 40 rounds (see README.md for how it was chosen).
func Default() *Topology {
	t := &Topology{
		Job:  "mnist-finetune",
		Seed: 1,
		Regions: []Region{
			{ID: "eu", Clients: 1667},
			{ID: "us", Clients: 1667},
			{ID: "ap", Clients: 1666},
		},
		Privacy: Privacy{
			Noise: Noise{Edge: 0, Regional: 0.6, Global: 0.6},
		},
	}
	t.ApplyDefaults()
	return t
}

// DefaultLM is the built-in language-model job, the one
// examples/lm.yaml spells out (a test keeps the two equal): 3600 clients
// of one directory of Go source each, about 180 a round clipping their
// adapter update to C = 0.5, regional and global noise 0.6 (σ ≈ 1.04 for
// the public observer, ε ≈ 2 at δ = 1e-5 after 12 rounds).
func DefaultLM() *Topology {
	t := &Topology{
		Job:  "lm-finetune",
		Seed: 1,
		Regions: []Region{
			{ID: "eu", Clients: 1200},
			{ID: "us", Clients: 1200},
			{ID: "ap", Clients: 1200},
		},
		Privacy: Privacy{ClipNorm: 0.5, Budget: 8, MinRegions: 2,
			Noise: Noise{Edge: 0, Regional: 0.6, Global: 0.6}},
		Train: Training{Rounds: 12},
		Task:  Task{Name: "lm"},
	}
	t.Round.Timeout.Duration = 10 * time.Minute
	t.ApplyDefaults()
	return t
}

// DefaultFor returns the built-in topology of a task ("mnist": Default,
// "lm": DefaultLM).
func DefaultFor(task string) (*Topology, error) {
	switch task {
	case "", "mnist":
		return Default(), nil
	case "lm":
		return DefaultLM(), nil
	}
	return nil, fmt.Errorf("%w: task %q has no built-in topology: want mnist or lm", ErrInvalid, task)
}

// ApplyDefaults fills zero fields with their defaults, in place. Callers
// holding a shared Topology should call it on a Clone.
func (t *Topology) ApplyDefaults() {
	p := &t.Privacy
	setF(&p.Delta, 1e-5)
	setF(&p.SamplingRate, 0.05)
	setF(&p.ClipNorm, 1)
	setF(&p.Budget, 4)
	if p.Accountant == "" {
		p.Accountant = "rdp"
	}
	if p.MinRegions == 0 {
		p.MinRegions = max(1, len(t.Regions)-1)
	}
	if p.AdaptiveClip.Enabled {
		setF(&p.AdaptiveClip.Quantile, 0.5)
		setF(&p.AdaptiveClip.LearningRate, 0.2)
		setF(&p.AdaptiveClip.BitNoise, p.SamplingRate*float64(t.Population())/20)
	}
	tr := &t.Train
	setI(&tr.Rounds, 40)
	setF(&tr.ServerLR, 2)
	setF(&tr.ServerMomentum, 0.5)
	setF(&tr.GateMaxDrop, 0.05)
	if t.Task.Name == "" {
		t.Task.Name = "mnist"
	}
	t.applyEvaluatorDefaults()
	if t.Round.Timeout.Duration == 0 {
		t.Round.Timeout.Duration = 60 * time.Second
	}
	t.applySecAggDefaults()
}

func setF(p *float64, v float64) {
	if *p == 0 {
		*p = v
	}
}

func setI(p *int, v int) {
	if *p == 0 {
		*p = v
	}
}

// Clone returns a deep copy.
func (t *Topology) Clone() *Topology {
	c := *t
	c.Regions = append([]Region(nil), t.Regions...)
	if t.Task.Options != nil {
		c.Task.Options = make(map[string]any, len(t.Task.Options))
		for k, v := range t.Task.Options {
			c.Task.Options[k] = v
		}
	}
	t.cloneEvaluator(&c)
	c.Policy.RequireNoiseAgainst = append([]string(nil), t.Policy.RequireNoiseAgainst...)
	if t.Privacy.ClientBudgets != nil {
		c.Privacy.ClientBudgets = map[string]float64{}
		for k, v := range t.Privacy.ClientBudgets {
			c.Privacy.ClientBudgets[k] = v
		}
	}
	if t.Policy.MaxEpsilon != nil {
		c.Policy.MaxEpsilon = map[string]float64{}
		for k, v := range t.Policy.MaxEpsilon {
			c.Policy.MaxEpsilon[k] = v
		}
	}
	return &c
}

// Population returns the total number of clients.
func (t *Topology) Population() int {
	n := 0
	for _, r := range t.Regions {
		n += r.Clients
	}
	return n
}

// ClientID names client i (0-based) of a region; IDs are stable across runs.
func ClientID(region string, i int) string { return fmt.Sprintf("%s-c%05d", region, i) }

// Validate checks the topology after defaults; each error names the field
// and the fix.
func (t *Topology) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s: %s", ErrInvalid, field, fmt.Sprintf(format, args...)))
	}
	if err := ValidToken(t.Job); err != nil {
		bad("job", "%v", err)
	}
	if len(t.Regions) == 0 {
		bad("regions", "no regions: add at least one, e.g. `- {id: eu, clients: 100}`")
	}
	seen := map[string]bool{}
	for i, r := range t.Regions {
		f := fmt.Sprintf("regions[%d]", i)
		if err := ValidToken(r.ID); err != nil {
			bad(f+".id", "%v", err)
		}
		if seen[r.ID] {
			bad(f+".id", "%q is used twice: region ids must be unique", r.ID)
		}
		seen[r.ID] = true
		if r.Clients <= 0 {
			bad(f+".clients", "%d: every region needs at least one client", r.Clients)
		}
	}
	p := t.Privacy
	if !(p.Delta > 0 && p.Delta < 1) {
		bad("privacy.delta", "%v: must be in (0, 1), typically below 1/population", p.Delta)
	}
	if !(p.SamplingRate > 0 && p.SamplingRate <= 1) {
		bad("privacy.sampling_rate", "%v: must be in (0, 1]", p.SamplingRate)
	}
	if !(p.ClipNorm > 0) || math.IsInf(p.ClipNorm, 0) {
		bad("privacy.clip_norm", "%v: must be a positive finite number", p.ClipNorm)
	}
	for name, v := range map[string]float64{"edge": p.Noise.Edge, "regional": p.Noise.Regional, "global": p.Noise.Global} {
		if !(v >= 0) || math.IsInf(v, 0) {
			bad("privacy.noise."+name, "%v: must be a finite multiplier ≥ 0", v)
		}
	}
	if p.MinRegions < 1 || p.MinRegions > len(t.Regions) {
		bad("privacy.min_regions", "%d: must be between 1 and the number of regions (%d)", p.MinRegions, len(t.Regions))
	}
	if !(p.Budget > 0) {
		bad("privacy.budget", "%v: must be a positive ε (use a large number for no budget)", p.Budget)
	}
	if pc := p.Pacing; pc.TargetEpsilon < 0 || pc.TargetEpsilon > p.Budget || pc.Patience < 0 {
		bad("privacy.pacing", "target_epsilon %v must be in (0, budget %v] and patience %d ≥ 0", pc.TargetEpsilon, p.Budget, pc.Patience)
	}
	if pc := p.Pacing; pc.TargetEpsilon > 0 && p.Noise == (Noise{}) {
		bad("privacy.pacing", "pacing scales the noise plan, which is all zero: set privacy.noise")
	}
	if ac := p.AdaptiveClip; ac.Enabled && (!(ac.Quantile > 0 && ac.Quantile < 1) || !(ac.LearningRate > 0) || !(ac.BitNoise > 0)) {
		bad("privacy.adaptive_clip", "quantile %v must be in (0, 1), learning_rate %v and bit_noise %v positive", ac.Quantile, ac.LearningRate, ac.BitNoise)
	}
	for id, b := range p.ClientBudgets {
		if !(b > 0) {
			bad("privacy.client_budgets."+id, "%v: must be a positive ε", b)
		}
	}
	if p.TopUp {
		switch {
		case !(p.Noise.Edge > 0):
			bad("privacy.top_up", "tops edge noise up to a fixed total, and privacy.noise.edge is 0: set privacy.noise.edge > 0 or drop top_up")
		case t.SecAgg.On:
			bad("privacy.top_up", "and secagg.on: a region under secure aggregation sums rounded values, which the top-up analysis does not cover: turn one of them off")
		case t.DataPath.Compressed():
			bad("privacy.top_up", "and data_path.compression %q: compressed edge-noised updates are not Gaussian, which the top-up analysis needs: set data_path.compression: none or drop top_up", t.DataPath.Compression)
		}
	}
	if p.Accountant != "rdp" {
		bad("privacy.accountant", "%q: the ledger accounts with rdp; use `strata privacy epsilon --accountant pld` to plan with PLD", p.Accountant)
	}
	tr := t.Train
	if tr.Rounds <= 0 {
		bad("training.rounds", "%d: must be at least 1", tr.Rounds)
	}
	if !(tr.ServerLR > 0) {
		bad("training.server_lr", "%v: must be positive", tr.ServerLR)
	}
	if !(tr.GateMaxDrop > 0) || math.IsInf(tr.GateMaxDrop, 0) {
		bad("training.gate_max_drop", "%v: must be positive and finite; a large value disables the evaluation gate", tr.GateMaxDrop)
	}
	if err := ValidToken(t.Task.Name); err != nil {
		bad("task.name", "%v", err)
	}
	t.validateEvaluator(bad)
	if !(tr.ServerMomentum >= 0 && tr.ServerMomentum < 1) {
		bad("training.server_momentum", "%v: must be in [0, 1)", tr.ServerMomentum)
	}
	knownObserver := func(o string) bool {
		for _, k := range Observers {
			if k == o {
				return true
			}
		}
		return false
	}
	for o, v := range t.Policy.MaxEpsilon {
		if !knownObserver(o) {
			bad("policy.max_epsilon."+o, "unknown observer: use one of %v", Observers)
		}
		if !(v > 0) {
			bad("policy.max_epsilon."+o, "%v: must be a positive ε", v)
		}
	}
	for i, o := range t.Policy.RequireNoiseAgainst {
		if !knownObserver(o) {
			bad(fmt.Sprintf("policy.require_noise_against[%d]", i), "%q: use one of %v", o, Observers)
		}
	}
	if t.Round.Timeout.Duration <= 0 {
		bad("round.timeout", "%v: must be positive, e.g. 60s", t.Round.Timeout)
	}
	if err := t.DataPath.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := t.Audit.Validate(); err != nil {
		errs = append(errs, err)
	} else if _, err := t.SecretHolders(); err != nil {
		errs = append(errs, err)
	}
	t.validateSecAgg(bad)
	return errors.Join(errs...)
}

// ValidToken checks a name used as a NATS subject token.
func ValidToken(s string) error {
	if s == "" {
		return errors.New("empty: give a name of letters, digits, '-' or '_'")
	}
	if len(s) > 64 {
		return fmt.Errorf("%q is longer than 64 characters", s)
	}
	for _, r := range s {
		ok := r == '-' || r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9')
		if !ok {
			return fmt.Errorf("%q contains %q: use only letters, digits, '-' and '_'", s, r)
		}
	}
	return nil
}

// Parse reads a YAML topology, applies defaults and validates it. Unknown
// fields are errors, so a misspelt key is never silently ignored.
func Parse(b []byte) (*Topology, error) {
	var t Topology
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&t); err != nil {
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		for _, old := range []string{"field data ", "field hidden ", "field local_epochs ", "field local_batch ", "field local_lr ", "field pretrain_epochs ", "field full ", "field personal_head ", "field personal_epochs "} {
			if strings.Contains(msg, old) {
				msg += " (the MNIST task's data, model and local training settings moved under `task:`; `strata topology default` prints the new layout)"
				break
			}
		}
		return nil, fmt.Errorf("%w: %v", ErrInvalid, msg)
	}
	t.ApplyDefaults()
	if err := t.Validate(); err != nil {
		return nil, err
	}
	return &t, nil
}

// Load reads and parses a topology file.
func Load(path string) (*Topology, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("topology: %w", err)
	}
	t, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

// YAML renders the topology.
func (t *Topology) YAML() ([]byte, error) {
	return yaml.Marshal(t)
}

// Hash identifies the topology (the SHA-256 of its YAML, less what only
// operates the job: the external evaluator's timeout): a data dir holding
// another job's ledger refuses to run a different one.
func (t *Topology) Hash() (string, error) {
	b, err := t.withoutOperational().YAML()
	if err != nil {
		return "", err
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:]), nil
}
