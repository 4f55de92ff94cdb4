// Package audit measures the privacy a stopped job achieved, empirically:
// the canary statistics and one-shot ε estimates of package empirical over
// every released model version, a membership-inference attack on the final
// model, beside the ε the ledger guarantees. Estimates, never guarantees.
package audit

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"

	"github.com/strata-fl/strata/empirical"
	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/internal/seal"
	"github.com/strata-fl/strata/mesh"
	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/task"
	"github.com/strata-fl/strata/topology"
)

// ErrNoCanaries reports a job run without audit.canaries: there is nothing
// to measure the ε estimate with.
var ErrNoCanaries = errors.New("audit: the topology sets no audit.canaries: give the topology the job ran with, or run a job whose topology sets audit: {canaries: K}")

// ErrConfig is wrapped by every other error about a Config.
var ErrConfig = errors.New("audit: invalid configuration")

// Config configures a privacy audit of a stopped data dir. Zero fields take
// the defaults given with each.
type Config struct {
	// DataDir is the data dir of a stopped `strata up`; required.
	DataDir string
	// Topology is the one the job ran with (its hash is checked against
	// the ledger's); required, and it must set audit.canaries
	// (ErrNoCanaries).
	Topology *topology.Topology
	// Task is the job's task, prepared as its roles prepared it; the
	// membership attack needs task.Membership (skipped without it, or
	// when nil).
	Task task.Task
	// Key decrypts the ledger and model blobs sealed at rest; nil: the
	// data dir is not sealed.
	Key *seal.Key
	// Confidence of the lower bound, in (0, 1); default 0.95.
	Confidence float64
	// FPR is the false positive rate at which the membership attack's TPR
	// is reported, in (0, 1); default 0.01.
	FPR float64
	// Status is told of the audit's progress, one line per call; nil is
	// silent.
	Status func(format string, args ...any)
}

// Validate names the field that is wrong. Zero fields are valid where they
// have a default.
func (c Config) Validate() error {
	switch {
	case c.DataDir == "":
		return fmt.Errorf("%w: Config.DataDir is required", ErrConfig)
	case c.Topology == nil:
		return fmt.Errorf("%w: Config.Topology is required", ErrConfig)
	case c.Topology.Audit.Canaries == 0:
		return ErrNoCanaries
	case c.Confidence != 0 && !(c.Confidence > 0 && c.Confidence < 1):
		return fmt.Errorf("%w: Config.Confidence %v: want a probability in (0, 1), e.g. 0.95", ErrConfig, c.Confidence)
	case c.FPR != 0 && !(c.FPR > 0 && c.FPR < 1):
		return fmt.Errorf("%w: Config.FPR %v: want a rate in (0, 1), e.g. 0.01", ErrConfig, c.FPR)
	}
	return nil
}

// withDefaults returns a copy of c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.Confidence == 0 {
		c.Confidence = 0.95
	}
	if c.FPR == 0 {
		c.FPR = 0.01
	}
	if c.Status == nil {
		c.Status = func(string, ...any) {}
	}
	return c
}

// PrivacyAudit is the audit of one job: the empirical report beside what
// the ledger guarantees.
type PrivacyAudit struct {
	empirical.Report
	// LedgerEpsilon is the public ε the ledger states, at Report.Delta.
	LedgerEpsilon empirical.Float `json:"ledger_epsilon"`
	// Versions is how many released versions the statistics read.
	Versions int `json:"versions"`
	// NonMembersFromTest is set when no real client went unsampled and the
	// membership attack's non-members are test images instead.
	NonMembersFromTest bool `json:"mia_non_members_from_test,omitempty"`
}

// Privacy reads every released model version of a stopped job from
// its object store, computes the canary statistics, the one-shot ε
// estimates and the lower bound, and runs a loss-threshold membership
// inference attack on the final model (see lossAttack for who counts as a
// member).
//
// It returns empirical.ErrBelowLowerBound, with the audit, when the
// ledger's ε is below the lower bound, and the error of Config.Validate
// for a configuration that fails it.
func Privacy(ctx context.Context, cfg Config) (*PrivacyAudit, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	t := cfg.Topology
	l, err := global.ReadLedgerKey(filepath.Join(cfg.DataDir, "global"), cfg.Key)
	if err != nil {
		return nil, err
	}
	if l.Job == nil {
		return nil, fmt.Errorf("audit: %s holds no job", cfg.DataDir)
	}
	hash, err := t.Hash()
	if err != nil {
		return nil, err
	}
	if l.Job.ConfigHash != hash {
		return nil, fmt.Errorf("audit: the topology differs from the one job %s ran with: give the same --topology", l.Job.Name)
	}
	rel, err := readRelease(ctx, cfg.DataDir, t.Job, cfg.Key, l)
	if err != nil {
		return nil, err
	}
	cfg.Status("canary statistics over %d released versions, %d inserted and %d unseen canaries", len(rel.Steps), t.Audit.Canaries, t.Audit.Canaries)
	rep, err := empirical.Audit(rel, t.CanarySeed(), t.Audit.Canaries, l.Job.Delta, cfg.Confidence)
	if err != nil {
		return nil, err
	}
	out := &PrivacyAudit{Report: rep, LedgerEpsilon: empirical.Float(l.Spent(ledger.Public)), Versions: len(rel.Steps)}
	final := rel.Initial
	for _, s := range rel.Steps {
		if s.Version == rel.Final {
			final = s.Theta
		}
	}
	if mem, ok := cfg.Task.(task.Membership); ok {
		mia, fromTest, err := lossAttack(ctx, mem, t, l, final, cfg.FPR)
		if err != nil {
			return nil, err
		}
		out.MIA, out.NonMembersFromTest = &mia, fromTest
	}
	return out, out.CheckLedger(float64(out.LedgerEpsilon))
}

// readRelease fetches model version 0 and every version the ledger
// committed, verifying each against its recorded hash.
func readRelease(ctx context.Context, dataDir, job string, key *seal.Key, l *ledger.Ledger) (empirical.Release, error) {
	srv, err := mesh.StartServer(mesh.ServerConfig{StoreDir: filepath.Join(dataDir, "nats"), Port: -1})
	if err != nil {
		return empirical.Release{}, err
	}
	defer func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	}()
	nc, err := mesh.Dialer{Server: srv}.Connect("audit")
	if err != nil {
		return empirical.Release{}, err
	}
	defer nc.Close()
	store, err := mesh.OpenModelStore(ctx, nc, job, 1)
	if err != nil {
		return empirical.Release{}, err
	}
	store.SetKey(key)
	get := func(version uint64, hash string) ([]float64, error) {
		b, err := store.Get(ctx, "model", version, hash)
		if err != nil {
			return nil, err
		}
		v, err := wire.Float32s(b)
		if err != nil {
			return nil, fmt.Errorf("model v%d: %w", version, err)
		}
		out := make([]float64, len(v))
		for i, x := range v {
			out[i] = float64(x)
		}
		return out, nil
	}
	var rel empirical.Release
	if rel.Initial, err = get(0, ""); err != nil {
		return rel, err
	}
	for _, m := range l.Models {
		if m.Round == 0 || m.Round > uint64(len(l.Rounds)) {
			return rel, fmt.Errorf("audit: model v%d names round %d, which the ledger does not hold", m.Version, m.Round)
		}
		theta, err := get(m.Version, m.Hash)
		if err != nil {
			return rel, err
		}
		rel.Steps = append(rel.Steps, empirical.Step{Version: m.Version, Base: l.Rounds[m.Round-1].ModelVersion, Theta: theta})
	}
	rel.Final = l.ServingVersion()
	return rel, nil
}

// lossAttack scores members and non-members by their negated loss under
// the final model. Members are the examples of real clients sampled in at
// least one committed round; non-members the examples of real clients
// never sampled. Sampling is independent of the data, so both are draws
// from the same distribution and only membership tells them apart. The
// larger group is subsampled (with the topology's seed) to the smaller's
// size. A job that sampled every client has no such non-members: the
// task's held-out examples (same domain, never trained on) stand in, and
// NonMembersFromTest says so.
func lossAttack(ctx context.Context, mem task.Membership, t *topology.Topology, l *ledger.Ledger, final []float64, fpr float64) (empirical.MIA, bool, error) {
	committed := func(round uint64) bool {
		return round >= 1 && round <= uint64(len(l.Rounds)) && l.Rounds[round-1].Status == "committed"
	}
	member, seen := map[string]bool{}, map[string]bool{}
	for _, c := range l.Clients {
		seen[c.ID] = len(c.Sampled) > 0
		for _, r := range c.Sampled {
			member[c.ID] = member[c.ID] || committed(r)
		}
	}
	var members, nonMembers []string
	for _, r := range t.Regions {
		for j := 0; j < r.Clients; j++ {
			switch id := topology.ClientID(r.ID, j); {
			case member[id]:
				members = append(members, id)
			case !seen[id]:
				nonMembers = append(nonMembers, id)
			}
		}
	}
	neg := func(v []float64, err error) ([]float64, error) {
		for k := range v {
			v[k] = -v[k]
		}
		return v, err
	}
	ms, err := neg(mem.ExampleLosses(ctx, final, members))
	if err != nil {
		return empirical.MIA{}, false, err
	}
	fromTest := len(nonMembers) == 0
	var ns []float64
	if fromTest {
		ns, err = neg(mem.HeldOutLosses(ctx, final))
	} else {
		ns, err = neg(mem.ExampleLosses(ctx, final, nonMembers))
	}
	if err != nil {
		return empirical.MIA{}, fromTest, err
	}
	rng := rand.New(rand.NewPCG(t.Seed, 0x6d6961))
	shuffle := func(v []float64) { rng.Shuffle(len(v), func(a, b int) { v[a], v[b] = v[b], v[a] }) }
	shuffle(ms)
	shuffle(ns)
	n := min(len(ms), len(ns))
	mia, err := empirical.Attack(ms[:n], ns[:n], fpr)
	return mia, fromTest, err
}
