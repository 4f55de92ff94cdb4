package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"

	"github.com/strata-fl/strata/audit"
	"github.com/strata-fl/strata/empirical"
	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/internal/seal"
	htmlreport "github.com/strata-fl/strata/observe/report"
	"github.com/strata-fl/strata/topology"
)

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
	a, err := auditPrivacy(ctx, t, *data, key, *confidence, stdout)
	if a == nil {
		return err
	}
	if werr := htmlreport.MergeEmpirical(*data, htmlreport.FieldsOf(a)); werr != nil {
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
func auditPrivacy(ctx context.Context, t *topology.Topology, dir string, key *seal.Key, confidence float64, w io.Writer) (*audit.PrivacyAudit, error) {
	tk, err := prepareTask(ctx, t, dir, w)
	if err != nil {
		return nil, err
	}
	a, err := audit.Privacy(ctx, audit.Config{DataDir: dir, Topology: t, Task: tk, Key: key, Confidence: confidence,
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

func printAudit(w io.Writer, a *audit.PrivacyAudit) {
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

// rewriteHTMLReport renders dir/report again with the audits beside the
// ledger's ε (strata up writes it before the audits run).
func rewriteHTMLReport(t *topology.Topology, dir string, key *seal.Key, emp *htmlreport.Empirical, held *htmlreport.HeldOut) error {
	l, err := global.ReadLedgerKey(filepath.Join(dir, "global"), key)
	if err != nil {
		return err
	}
	yaml, err := t.YAML()
	if err != nil {
		return err
	}
	_, err = writeHTMLReport(l, yaml, filepath.Join(dir, "report"), emp, held, false)
	return err
}
