package standalone

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"

	"github.com/strata-fl/strata/empirical"
	"github.com/strata-fl/strata/finetune"
	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/internal/seal"
	"github.com/strata-fl/strata/mesh"
	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/topology"
)

// ErrNoCanaries reports a job run without audit.canaries: there is nothing
// to measure the ε estimate with.
var ErrNoCanaries = errors.New("standalone: the topology sets no audit.canaries: give the topology the job ran with, or run a job whose topology sets audit: {canaries: K}")

// AuditConfig configures a privacy audit of a stopped data dir.
type AuditConfig struct {
	// DataDir is the data dir of a stopped `strata up`; required.
	DataDir string
	// Topology is the one the job ran with (its hash is checked against
	// the ledger's); required.
	Topology *topology.Topology
	// MNIST is the loaded data set; nil loads it.
	MNIST *finetune.MNIST
	Key   *seal.Key
	// Confidence of the lower bound; default 0.95.
	Confidence float64
	// FPR is the false positive rate at which the membership attack's TPR
	// is reported; default 0.01.
	FPR    float64
	Status func(format string, args ...any)
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

// AuditPrivacy reads every released model version of a stopped job from
// its object store, computes the canary statistics, the one-shot ε
// estimates and the lower bound, and runs a loss-threshold membership
// inference attack on the final model (see lossAttack for who counts as a
// member).
//
// It returns empirical.ErrBelowLowerBound, with the audit, when the
// ledger's ε is below the lower bound.
func AuditPrivacy(ctx context.Context, cfg AuditConfig) (*PrivacyAudit, error) {
	if cfg.DataDir == "" || cfg.Topology == nil {
		return nil, errors.New("standalone: AuditConfig needs DataDir and Topology")
	}
	if cfg.Confidence == 0 {
		cfg.Confidence = 0.95
	}
	if cfg.FPR == 0 {
		cfg.FPR = 0.01
	}
	if cfg.Status == nil {
		cfg.Status = func(string, ...any) {}
	}
	t := cfg.Topology
	if t.Audit.Canaries == 0 {
		return nil, ErrNoCanaries
	}
	l, err := global.ReadLedgerKey(filepath.Join(cfg.DataDir, "global"), cfg.Key)
	if err != nil {
		return nil, err
	}
	if l.Job == nil {
		return nil, fmt.Errorf("standalone: %s holds no job", cfg.DataDir)
	}
	hash, err := ConfigHash(t)
	if err != nil {
		return nil, err
	}
	if l.Job.ConfigHash != hash {
		return nil, fmt.Errorf("standalone: the topology differs from the one job %s ran with: give the same --topology", l.Job.Name)
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
	if cfg.MNIST == nil {
		cfg.Status("loading MNIST")
		if cfg.MNIST, err = finetune.LoadMNIST(""); err != nil {
			return nil, err
		}
	}
	task, err := finetune.PrepareTask(cfg.MNIST, TaskConfig(t), cfg.DataDir, cfg.Status)
	if err != nil {
		return nil, err
	}
	final := rel.Initial
	for _, s := range rel.Steps {
		if s.Version == rel.Final {
			final = s.Theta
		}
	}
	mia, fromTest, err := lossAttack(task, t, l, final, cfg.FPR)
	if err != nil {
		return nil, err
	}
	out.MIA, out.NonMembersFromTest = &mia, fromTest
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
			return rel, fmt.Errorf("standalone: model v%d names round %d, which the ledger does not hold", m.Version, m.Round)
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
// test images outside the per-round evaluation subset (same domain shift,
// never trained on) stand in, and NonMembersFromTest says so.
func lossAttack(task *finetune.Task, t *topology.Topology, l *ledger.Ledger, final []float64, fpr float64) (empirical.MIA, bool, error) {
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
	var members, nonMembers []int
	i := 0
	for _, r := range t.Regions {
		for j := 0; j < r.Clients; j++ {
			id := topology.ClientID(r.ID, j)
			switch {
			case member[id]:
				members = append(members, task.Parts[i]...)
			case !seen[id]:
				nonMembers = append(nonMembers, task.Parts[i]...)
			}
			i++
		}
	}
	rng := rand.New(rand.NewPCG(t.Seed, 0x6d6961))
	shuffle := func(v []int) { rng.Shuffle(len(v), func(a, b int) { v[a], v[b] = v[b], v[a] }) }
	shuffle(members)
	shuffle(nonMembers)
	var non *finetune.Set
	fromTest := len(nonMembers) == 0
	if fromTest {
		non = task.Test
		if t.Data.EvalExamples < task.Test.Len() {
			non = task.Test.Slice(t.Data.EvalExamples, task.Test.Len())
		}
	} else {
		n := min(len(members), len(nonMembers))
		members, nonMembers = members[:n], nonMembers[:n]
		non = task.ClientData.Subset(nonMembers)
	}
	members = members[:min(len(members), non.Len())]
	score := func(s *finetune.Set) ([]float64, error) {
		ls, err := task.Model.Losses(final, s)
		for k := range ls {
			ls[k] = -ls[k]
		}
		return ls, err
	}
	ms, err := score(task.ClientData.Subset(members))
	if err != nil {
		return empirical.MIA{}, fromTest, err
	}
	ns, err := score(non)
	if err != nil {
		return empirical.MIA{}, fromTest, err
	}
	mia, err := empirical.Attack(ms, ns, fpr)
	return mia, fromTest, err
}
