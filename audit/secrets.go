package audit

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/strata-fl/strata/empirical"
	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/task"
	"github.com/strata-fl/strata/topology"
)

// ErrNoSecrets reports a Secret-Sharer audit of a job run without
// audit.secrets.
var ErrNoSecrets = errors.New("audit: the topology sets no audit.secrets: give the topology the job ran with, or run a job whose topology sets audit: {secrets: K}")

// ErrNotLanguageModel reports a Secret-Sharer audit of a task that does
// not score text (task.LanguageModel).
var ErrNotLanguageModel = errors.New("audit: the task does not score text")

// SecretAudit is the Secret-Sharer audit of one job (Carlini et al.
// 2019): the exposure of each inserted and never-inserted secret under the
// serving model version, the threshold test's ε lower bound from them,
// and the ledger's ε.
type SecretAudit struct {
	// Secrets inserted (as many never inserted), each held by Sharers
	// clients whose text repeats it Repeats times; Candidates =
	// 10^Digits strings were ranked.
	Secrets    int    `json:"secrets"`
	Sharers    int    `json:"sharers"`
	Repeats    int    `json:"repeats"`
	Digits     int    `json:"digits"`
	Candidates int    `json:"candidates"`
	Format     string `json:"format"`
	// Version is the model version scored (the serving one).
	Version uint64 `json:"version"`
	// InsertedMean, NeverMean and the maxima summarise the exposures
	// (bits); a secret the model never saw has expected exposure ≈ 1.44.
	InsertedMean float64 `json:"inserted_mean_exposure"`
	NeverMean    float64 `json:"never_mean_exposure"`
	InsertedMax  float64 `json:"inserted_max_exposure"`
	NeverMax     float64 `json:"never_max_exposure"`
	// LowerBound is ThresholdLowerBound over the two groups' exposures:
	// each secret a trial. With Sharers = 1 it bounds the per-client ε the
	// ledger states; with Sharers = n a secret is a group of n clients and
	// the bound is on the group's ε (which the ledger's ε bounds only
	// through group privacy).
	LowerBound    empirical.LowerBound `json:"lower_bound"`
	LedgerEpsilon empirical.Float      `json:"ledger_epsilon"`
	Delta         float64              `json:"delta"`
	// Seconds is how long ranking every candidate took.
	Seconds  float64              `json:"seconds"`
	Inserted []empirical.Exposure `json:"inserted"`
	Never    []empirical.Exposure `json:"never_inserted"`
}

// Secrets runs the Secret-Sharer audit of a stopped job: it reads the
// serving version, ranks every secret among all candidates of its format
// with the task's model (empirical.Exposures), and bounds ε from the
// ranks. When each secret has one holder and the lower bound exceeds the
// ledger's ε, it returns the audit and empirical.ErrBelowLowerBound.
func Secrets(ctx context.Context, cfg Config) (*SecretAudit, error) {
	switch {
	case cfg.DataDir == "":
		return nil, fmt.Errorf("%w: Config.DataDir is required", ErrConfig)
	case cfg.Topology == nil:
		return nil, fmt.Errorf("%w: Config.Topology is required", ErrConfig)
	case cfg.Topology.Audit.Secrets == 0:
		return nil, ErrNoSecrets
	case cfg.Confidence != 0 && !(cfg.Confidence > 0 && cfg.Confidence < 1):
		return nil, fmt.Errorf("%w: Config.Confidence %v: want a probability in (0, 1), e.g. 0.95", ErrConfig, cfg.Confidence)
	}
	cfg = cfg.withDefaults()
	lm, ok := cfg.Task.(task.LanguageModel)
	if !ok {
		return nil, fmt.Errorf("%w: audit.secrets needs a language-model task (task %T)", ErrNotLanguageModel, cfg.Task)
	}
	t := cfg.Topology
	l, err := global.ReadLedgerKey(filepath.Join(cfg.DataDir, "global"), cfg.Key)
	if err != nil {
		return nil, err
	}
	if l.Job == nil {
		return nil, fmt.Errorf("audit: %s holds no job", cfg.DataDir)
	}
	if hash, err := t.Hash(); err != nil {
		return nil, err
	} else if l.Job.ConfigHash != hash {
		return nil, fmt.Errorf("audit: the topology differs from the one job %s ran with: give the same --topology", l.Job.Name)
	}
	rel, err := readRelease(ctx, cfg.DataDir, t.Job, cfg.Key, l)
	if err != nil {
		return nil, err
	}
	theta := rel.Initial
	for _, s := range rel.Steps {
		if s.Version == rel.Final {
			theta = s.Theta
		}
	}
	m, err := lm.NextLogProber(theta)
	if err != nil {
		return nil, err
	}
	p := t.Audit.SecretPlan()
	inserted, never := t.SecretValues()
	n := 1
	for i := 0; i < p.Digits; i++ {
		n *= 10
	}
	cfg.Status("Secret-Sharer: ranking %d inserted and %d never-inserted secrets among %d candidates (model v%d)", len(inserted), len(never), n, rel.Final)
	start := time.Now()
	all, err := empirical.Exposures(ctx, m, []byte(topology.SecretPrefix), p.Digits, append(append([]string(nil), inserted...), never...))
	if err != nil {
		return nil, err
	}
	a := &SecretAudit{Secrets: p.Secrets, Sharers: p.Sharers, Repeats: p.Repeats, Digits: p.Digits, Candidates: n,
		Format: topology.SecretPrefix + repeatD(p.Digits) + `"`, Version: rel.Final,
		Inserted: all[:len(inserted)], Never: all[len(inserted):], Delta: l.Job.Delta,
		LedgerEpsilon: empirical.Float(l.Spent(ledger.Public))}
	a.Seconds = time.Since(start).Seconds()
	a.InsertedMean, a.InsertedMax = summarise(a.Inserted)
	a.NeverMean, a.NeverMax = summarise(a.Never)
	if a.LowerBound, err = empirical.SecretBound(a.Inserted, a.Never, l.Job.Delta, cfg.Confidence); err != nil {
		return nil, err
	}
	if p.Sharers == 1 && float64(a.LowerBound.Epsilon) > float64(a.LedgerEpsilon) {
		return a, fmt.Errorf("%w: Secret-Sharer lower bound ε ≥ %.4g exceeds the ledger's ε %.4g", empirical.ErrBelowLowerBound, float64(a.LowerBound.Epsilon), float64(a.LedgerEpsilon))
	}
	return a, nil
}

func repeatD(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'D'
	}
	return string(b)
}

func summarise(es []empirical.Exposure) (mean, mx float64) {
	for _, e := range es {
		mean += e.Exposure
		mx = max(mx, e.Exposure)
	}
	if len(es) > 0 {
		mean /= float64(len(es))
	}
	return mean, mx
}
