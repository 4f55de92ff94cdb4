package report

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/strata-fl/strata/audit"
	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/task"
	"github.com/strata-fl/strata/topology"
)

// Summary is report.json: what a job achieved and what it cost, per
// observer, as `strata up` and every global node write it at the end.
type Summary struct {
	Job             string `json:"job"`
	Task            string `json:"task"`
	RoundsCompleted int    `json:"rounds_completed"`
	RoundsAborted   int    `json:"rounds_aborted"`
	PlannedRounds   int    `json:"planned_rounds"`
	// MetricsPretrained and MetricsFinal are the task's scores (and
	// "loss") of version 0 and of the serving version on its whole
	// held-out set; MetricsNonprivate the same job's without noise
	// (--baseline).
	MetricsPretrained map[string]float64 `json:"metrics_pretrained"`
	MetricsFinal      map[string]float64 `json:"metrics_final"`
	MetricsNonprivate map[string]float64 `json:"metrics_nonprivate,omitempty"`
	// AccuracyPretrained, AccuracyFinal and AccuracyNonprivate repeat the
	// "accuracy" metric, for tasks that have one.
	AccuracyPretrained *float64                  `json:"accuracy_pretrained,omitempty"`
	AccuracyFinal      *float64                  `json:"accuracy_final,omitempty"`
	AccuracyNonprivate *float64                  `json:"accuracy_nonprivate,omitempty"`
	Delta              float64                   `json:"delta"`
	Epsilon            map[ledger.Observer]Float `json:"epsilon"`
	EpsilonNonprivate  map[ledger.Observer]Float `json:"epsilon_nonprivate,omitempty"`
	Budget             Float                     `json:"budget"`
	Noise              ledger.Noise              `json:"noise"`
	SamplingRate       float64                   `json:"sampling_rate"`
	Clients            int                       `json:"clients"`
	ElapsedSeconds     float64                   `json:"elapsed_seconds"`
	ClientSummary
	EmpiricalFields
	// Personalisation is the task's summary of its clients' personal
	// models, when the job personalises (task.Personal).
	Personalisation any    `json:"personalisation,omitempty"`
	Finished        bool   `json:"finished"`
	FinishReason    string `json:"finish_reason,omitempty"`
}

// ClientSummary is the per-client part of report.json.
type ClientSummary struct {
	Epsilon   map[ledger.Observer]Quantiles `json:"client_epsilon"`
	Retired   int                           `json:"clients_retired_for_budget"`
	Withdrawn int                           `json:"clients_withdrawn"`
}

// Quantiles summarises per-client spend against one observer.
type Quantiles struct {
	Min    Float `json:"min"`
	Median Float `json:"median"`
	Max    Float `json:"max"`
}

// EmpiricalFields are what an empirical privacy audit adds to report.json.
type EmpiricalFields struct {
	EmpiricalEpsilon  *Float              `json:"empirical_epsilon,omitempty"`
	EpsilonLowerBound *Float              `json:"epsilon_lower_bound,omitempty"`
	MIAAUC            *float64            `json:"mia_auc,omitempty"`
	EmpiricalPrivacy  *audit.PrivacyAudit `json:"empirical_privacy,omitempty"`
	// SecretSharer is the Secret-Sharer audit of a language-model job
	// (audit.secrets): exposures of inserted and never-inserted secrets
	// and the lower bound they give, beside the ledger's ε.
	SecretSharer *audit.SecretAudit `json:"secret_sharer,omitempty"`
	// SecretSharerBaseline is the same audit of the --baseline run (no
	// noise), when there was one.
	SecretSharerBaseline *audit.SecretAudit `json:"secret_sharer_baseline,omitempty"`
}

// FieldsOf is what an audit adds to report.json.
func FieldsOf(a *audit.PrivacyAudit) EmpiricalFields {
	e, lb := Float(a.EmpiricalEpsilon), Float(a.LowerBound.Epsilon)
	f := EmpiricalFields{EmpiricalEpsilon: &e, EpsilonLowerBound: &lb, EmpiricalPrivacy: a}
	if a.MIA != nil {
		f.MIAAUC = &a.MIA.AUC
	}
	return f
}

// Metrics flattens an evaluation: its metrics by name, and "loss".
func Metrics(e task.Evaluation) map[string]float64 {
	m := map[string]float64{"loss": e.Loss}
	for _, x := range e.Metrics {
		m[x.Name] = x.Value
	}
	return m
}

func accuracy(m map[string]float64) *float64 {
	if v, ok := m["accuracy"]; ok {
		return &v
	}
	return nil
}

// Summarize builds report.json from the ledger and the evaluations of
// version 0 and of the serving version.
func Summarize(t *topology.Topology, l *ledger.Ledger, pre, final task.Evaluation) (*Summary, error) {
	s := &Summary{
		Job: t.Job, Task: t.Task.Name, RoundsCompleted: l.CommittedRounds(), PlannedRounds: t.Train.Rounds,
		MetricsPretrained: Metrics(pre), MetricsFinal: Metrics(final), Delta: t.Privacy.Delta,
		Epsilon: map[ledger.Observer]Float{}, Budget: Float(t.Privacy.Budget), Noise: ledger.Noise(t.Privacy.Noise),
		SamplingRate: t.Privacy.SamplingRate, Clients: t.Population(), Finished: l.Finished, FinishReason: l.FinishReason,
	}
	s.AccuracyPretrained, s.AccuracyFinal = accuracy(s.MetricsPretrained), accuracy(s.MetricsFinal)
	for _, r := range l.Rounds {
		if r.Status == "aborted" {
			s.RoundsAborted++
		}
	}
	for _, o := range ledger.Observers {
		s.Epsilon[o] = Float(l.Spent(o))
	}
	cs, err := SummariseClients(l)
	if err != nil {
		return nil, fmt.Errorf("report: per-client spend: %w", err)
	}
	s.ClientSummary = cs
	return s, nil
}

// SetBaseline records the same job's figures without noise.
func (s *Summary) SetBaseline(b *Summary) {
	s.MetricsNonprivate, s.AccuracyNonprivate, s.EpsilonNonprivate = b.MetricsFinal, b.AccuracyFinal, b.Epsilon
}

// SummariseClients is the per-client spend of every enrolled client.
func SummariseClients(l *ledger.Ledger) (ClientSummary, error) {
	s := ClientSummary{Epsilon: map[ledger.Observer]Quantiles{}}
	vals := map[ledger.Observer][]float64{}
	for _, c := range l.Clients {
		switch c.Status {
		case ledger.ClientRetired:
			s.Retired++
		case ledger.ClientWithdrawn:
			s.Withdrawn++
		}
		e, err := l.ClientEpsilon(c.ID)
		if err != nil {
			return s, err
		}
		for _, o := range ledger.Observers {
			vals[o] = append(vals[o], e.Get(o))
		}
	}
	for _, o := range ledger.Observers {
		v := vals[o]
		if len(v) == 0 {
			continue
		}
		sort.Float64s(v)
		s.Epsilon[o] = Quantiles{Min: Float(v[0]), Median: Float(v[len(v)/2]), Max: Float(v[len(v)-1])}
	}
	return s, nil
}

// SummaryFile is where a data dir keeps report.json.
func SummaryFile(dir string) string { return filepath.Join(dir, "report.json") }

// WriteSummary writes report.json into dir, atomically.
func WriteSummary(dir string, s *Summary) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(SummaryFile(dir), append(b, '\n'))
}

// MergeEmpirical sets an audit's fields in dir/report.json, keeping every
// other field (the file is created if the job wrote none).
func MergeEmpirical(dir string, f EmpiricalFields) error {
	path := SummaryFile(dir)
	doc := map[string]json.RawMessage{}
	if b, err := os.ReadFile(path); err == nil {
		if err := json.Unmarshal(b, &doc); err != nil {
			return fmt.Errorf("%s is not a JSON object: %w", path, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	var add map[string]json.RawMessage
	if err := json.Unmarshal(b, &add); err != nil {
		return err
	}
	for k, v := range add {
		doc[k] = v
	}
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(path, append(out, '\n'))
}

// ReadEmpirical reads the audits recorded in dir/report.json (empirical
// privacy, Secret-Sharer), for the HTML report; nil when there is none.
func ReadEmpirical(dir string) (*Empirical, error) {
	b, err := os.ReadFile(SummaryFile(dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var doc struct {
		A        *audit.PrivacyAudit `json:"empirical_privacy"`
		Secrets  *audit.SecretAudit  `json:"secret_sharer"`
		Baseline *audit.SecretAudit  `json:"secret_sharer_baseline"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", SummaryFile(dir), err)
	}
	return EmpiricalOf(doc.A).WithSecrets(doc.Secrets, doc.Baseline), nil
}

// WithSecrets adds Secret-Sharer audits to e (nil e starts empty); it
// returns nil when there is nothing to show.
func (e *Empirical) WithSecrets(job, baseline *audit.SecretAudit) *Empirical {
	if job == nil && baseline == nil {
		return e
	}
	if e == nil {
		e = &Empirical{}
	}
	e.Secrets, e.SecretsBaseline = job, baseline
	return e
}

// EmpiricalOf is what the HTML report shows of an audit.
func EmpiricalOf(a *audit.PrivacyAudit) *Empirical {
	if a == nil {
		return nil
	}
	v := &Empirical{Canaries: a.Canaries, EstimateAllIterates: Float(a.AllIterates.Epsilon),
		EstimateFinal: Float(a.Final.Epsilon), LowerBound: Float(a.LowerBound.Epsilon), Confidence: a.LowerBound.Confidence}
	if m := a.MIA; m != nil {
		v.MIAAUC, v.MIATPR, v.MIAFPR = m.AUC, m.TPRAtFPR, m.FPR
	}
	return v
}

func writeAtomic(path string, b []byte) error {
	if err := os.WriteFile(path+".tmp", b, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	return os.Rename(path+".tmp", path)
}

// HeldOut is a task's scores on its whole held-out set, as report.json
// keeps them: the ledger's per-round figures are on a subset.
type HeldOut struct {
	Pretrained, Final map[string]float64
	// Nonprivate is the --baseline run's, nil without one. It is a
	// statistic of a model trained without noise, so the public report
	// leaves it out.
	Nonprivate map[string]float64
}

// HeldOutOf is s's held-out scores; nil when s has none.
func HeldOutOf(s *Summary) *HeldOut {
	if s == nil || len(s.MetricsFinal) == 0 {
		return nil
	}
	return &HeldOut{Pretrained: s.MetricsPretrained, Final: s.MetricsFinal, Nonprivate: s.MetricsNonprivate}
}

// ReadHeldOut reads the held-out scores in dir/report.json if it is job's
// (a report.json left by another job is not shown); nil when there are none.
func ReadHeldOut(dir, job string) (*HeldOut, error) {
	b, err := os.ReadFile(SummaryFile(dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var s Summary
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", SummaryFile(dir), err)
	}
	if s.Job != job {
		return nil, nil
	}
	return HeldOutOf(&s), nil
}

// MetricNames lists m's metrics by name, "loss" last.
func MetricNames(m map[string]float64) []string {
	var names []string
	for k := range m {
		if k != "loss" {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	if _, ok := m["loss"]; ok {
		names = append(names, "loss")
	}
	return names
}
