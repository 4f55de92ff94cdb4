package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/strata-fl/strata/empirical"
	"github.com/strata-fl/strata/finetune"
	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/internal/seal"
	htmlreport "github.com/strata-fl/strata/observe/report"
	"github.com/strata-fl/strata/standalone"
	"github.com/strata-fl/strata/topology"
)

// empiricalFields are what an audit adds to report.json.
type empiricalFields struct {
	EmpiricalEpsilon  *jf                      `json:"empirical_epsilon,omitempty"`
	EpsilonLowerBound *jf                      `json:"epsilon_lower_bound,omitempty"`
	MIAAUC            *float64                 `json:"mia_auc,omitempty"`
	EmpiricalPrivacy  *standalone.PrivacyAudit `json:"empirical_privacy,omitempty"`
}

func fieldsOf(a *standalone.PrivacyAudit) empiricalFields {
	e, lb := jf(a.EmpiricalEpsilon), jf(a.LowerBound.Epsilon)
	f := empiricalFields{EmpiricalEpsilon: &e, EpsilonLowerBound: &lb, EmpiricalPrivacy: a}
	if a.MIA != nil {
		f.MIAAUC = &a.MIA.AUC
	}
	return f
}

// runAuditPrivacy measures the privacy a finished job leaked (canary
// estimate, lower bound, membership inference) and records it in
// report.json beside the ledger's ε.
func runAuditPrivacy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("audit privacy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "./strata-data", "data dir of a stopped strata up whose topology set audit.canaries")
	topo := fs.String("topology", "", "the topology the job ran with (default: the built-in one)")
	confidence := fs.Float64("confidence", 0.95, "confidence level of the ε lower bound")
	maxEps := fs.Float64("max-epsilon", 0, "release gate: fail when the ε estimate (every release seen) exceeds this; 0 = no gate")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: strata audit privacy [--data DIR] [--topology FILE] [--confidence 0.95] [--max-epsilon E]\n\nEstimates from the released models what the job's canary clients leaked\n(one-shot ε estimate, a lower bound at the stated confidence) and runs a\nmembership inference attack; prints them beside the ledger's ε and writes\nthem into DIR/report.json.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return helpOK(fmt.Errorf("%w: %v", errUsage, err))
	}
	if !(*maxEps >= 0) {
		return fmt.Errorf("%w: --max-epsilon %v: must be ≥ 0 (0 = no gate)", errUsage, *maxEps)
	}
	if !(*confidence > 0 && *confidence < 1) {
		return fmt.Errorf("%w: --confidence %v: must be in (0, 1), e.g. 0.95", errUsage, *confidence)
	}
	t, err := loadTopology(*topo)
	if err != nil {
		return err
	}
	key, err := dataKey()
	if err != nil {
		return err
	}
	a, err := auditPrivacy(ctx, t, *data, nil, key, *confidence, stdout)
	if a == nil {
		return err
	}
	if werr := mergeReport(*data, fieldsOf(a)); werr != nil {
		return errors.Join(err, werr)
	}
	fmt.Fprintf(stdout, "\nreport: %s (`strata report --data %s` puts the audit in the HTML report)\n", filepath.Join(*data, "report.json"), *data)
	if err == nil && *maxEps > 0 && float64(a.EmpiricalEpsilon) > *maxEps {
		err = fmt.Errorf("%w: ε estimate %.4g exceeds --max-epsilon %.4g: do not release this model", errGate, a.EmpiricalEpsilon, *maxEps)
	}
	return err
}

// errGate marks a model held back by the empirical release gate.
var errGate = errors.New("audit privacy: gate")

// auditPrivacy runs the audit and prints it. On ErrBelowLowerBound it
// returns the audit and the error: the figures are printed and recorded,
// and the command fails.
func auditPrivacy(ctx context.Context, t *topology.Topology, dir string, mn *finetune.MNIST, key *seal.Key, confidence float64, w io.Writer) (*standalone.PrivacyAudit, error) {
	a, err := standalone.AuditPrivacy(ctx, standalone.AuditConfig{DataDir: dir, Topology: t, MNIST: mn, Key: key, Confidence: confidence,
		Status: func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }})
	if a == nil {
		return nil, err
	}
	printAudit(w, a)
	if errors.Is(err, empirical.ErrBelowLowerBound) {
		err = fmt.Errorf("%w: the accounting or the implementation has a bug", err)
	}
	return a, err
}

func printAudit(w io.Writer, a *standalone.PrivacyAudit) {
	fmt.Fprintf(w, "\nempirical privacy: %d canaries inserted, %d unseen, d = %d, %d released versions, δ = %g\n", a.Canaries, a.Canaries, a.Dim, a.Versions, a.Delta)
	fmt.Fprintf(w, "  %-44s%s   (the guarantee)\n", "ε public, ledger (upper bound)", fmtEps(float64(a.LedgerEpsilon)))
	fmt.Fprintf(w, "  %-44s%s   (estimate, not a guarantee)\n", "ε estimate, every release seen", fmtEps(float64(a.AllIterates.Epsilon)))
	fmt.Fprintf(w, "  %-44s%s   (estimate, not a guarantee)\n", "ε estimate, final model only", fmtEps(float64(a.Final.Epsilon)))
	lb := a.LowerBound
	if lb.Epsilon > 0 {
		fmt.Fprintf(w, "  %-44s%s   (%.0f%% confidence; %s statistic: %d/%d inserted vs %d/%d unseen canaries past the threshold)\n",
			"ε lower bound", fmtEps(float64(lb.Epsilon)), 100*lb.Confidence, a.LowerBoundStatistic, lb.Hits, lb.Inserted, lb.False, lb.Unseen)
	} else {
		fmt.Fprintf(w, "  %-44s%s   (%.0f%% confidence; no threshold test tells inserted from unseen canaries)\n", "ε lower bound", fmtEps(0), 100*lb.Confidence)
	}
	if m := a.MIA; m != nil {
		non := "examples of clients never sampled"
		if a.NonMembersFromTest {
			non = "test images"
		}
		fmt.Fprintf(w, "  %-44sAUC %.4f, TPR %.4f at FPR %.2f   (%d members vs %d non-members: %s)\n",
			"membership inference (loss threshold)", m.AUC, m.TPRAtFPR, m.FPR, m.Members, m.NonMembers, non)
	}
}

// mergeReport sets the audit's fields in dir/report.json, keeping every
// other field (the file is created if the job wrote none).
func mergeReport(dir string, f empiricalFields) error {
	path := filepath.Join(dir, "report.json")
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
	if err := os.WriteFile(path+".tmp", append(out, '\n'), 0o600); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return os.Rename(path+".tmp", path)
}

// empiricalView is what the HTML report shows of an audit.
func empiricalView(a *standalone.PrivacyAudit) *htmlreport.Empirical {
	v := &htmlreport.Empirical{Canaries: a.Canaries, EstimateAllIterates: htmlreport.Float(a.AllIterates.Epsilon),
		EstimateFinal: htmlreport.Float(a.Final.Epsilon), LowerBound: htmlreport.Float(a.LowerBound.Epsilon), Confidence: a.LowerBound.Confidence}
	if m := a.MIA; m != nil {
		v.MIAAUC, v.MIATPR, v.MIAFPR = m.AUC, m.TPRAtFPR, m.FPR
	}
	return v
}

// empiricalFromReport reads the audit `strata audit privacy` or `strata up`
// recorded in dir/report.json; nil when there is none.
func empiricalFromReport(dir string) (*htmlreport.Empirical, error) {
	b, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var doc struct {
		A *standalone.PrivacyAudit `json:"empirical_privacy"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "report.json"), err)
	}
	if doc.A == nil {
		return nil, nil
	}
	return empiricalView(doc.A), nil
}

// rewriteHTMLReport renders dir/report again with the audit beside the
// ledger's ε (strata up writes it before the audit runs).
func rewriteHTMLReport(t *topology.Topology, dir string, key *seal.Key, a *standalone.PrivacyAudit) error {
	l, err := global.ReadLedgerKey(filepath.Join(dir, "global"), key)
	if err != nil {
		return err
	}
	yaml, err := t.YAML()
	if err != nil {
		return err
	}
	_, err = writeHTMLReport(l, yaml, filepath.Join(dir, "report"), empiricalView(a), false)
	return err
}
