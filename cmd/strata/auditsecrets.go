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
	"github.com/strata-fl/strata/internal/seal"
	htmlreport "github.com/strata-fl/strata/observe/report"
	"github.com/strata-fl/strata/topology"
)

// runAuditSecrets re-runs the Secret-Sharer audit of a stopped
// language-model job and records it in report.json.
func runAuditSecrets(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("audit secrets", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "./strata-data", "data dir of a stopped strata up whose topology set audit.secrets")
	topo := fs.String("topology", "", "the topology the job ran with (default: the one strata up saved in the data dir)")
	confidence := fs.Float64("confidence", 0.95, "confidence level of the ε lower bound")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: strata audit secrets [--data DIR] [--topology FILE] [--confidence 0.95]\n\nRanks every Secret-Sharer secret of the job among all candidates of its\nformat with the serving model, prints inserted vs never-inserted exposure and\nthe ε lower bound beside the ledger's ε, and writes them into DIR/report.json.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return helpOK(fmt.Errorf("%w: %v", errUsage, err))
	}
	if !(*confidence > 0 && *confidence < 1) {
		return fmt.Errorf("%w: --confidence %v: must be in (0, 1), e.g. 0.95", errUsage, *confidence)
	}
	t, err := jobTopology(*data, *topo)
	if err != nil {
		return err
	}
	key, err := dataKey()
	if err != nil {
		return err
	}
	a, err := auditSecrets(ctx, t, *data, key, *confidence, stdout)
	if a == nil {
		return err
	}
	if werr := htmlreport.MergeEmpirical(*data, htmlreport.EmpiricalFields{SecretSharer: a}); werr != nil {
		return errors.Join(err, werr)
	}
	fmt.Fprintf(stdout, "\nreport: %s\n", filepath.Join(*data, "report.json"))
	return err
}

// auditSecrets runs the Secret-Sharer audit and prints it; on
// ErrBelowLowerBound it returns the audit and the error.
func auditSecrets(ctx context.Context, t *topology.Topology, dir string, key *seal.Key, confidence float64, w io.Writer) (*audit.SecretAudit, error) {
	tk, err := prepareTask(ctx, t, dir, io.Discard)
	if err != nil {
		return nil, err
	}
	a, err := audit.Secrets(ctx, audit.Config{DataDir: dir, Topology: t, Task: tk, Key: key, Confidence: confidence,
		Status: func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }})
	if a == nil {
		return nil, err
	}
	printSecrets(w, a)
	if errors.Is(err, empirical.ErrBelowLowerBound) {
		err = fmt.Errorf("%w: the accounting or the implementation has a bug", err)
	}
	return a, err
}

func printSecrets(w io.Writer, a *audit.SecretAudit) {
	fmt.Fprintf(w, "\nSecret-Sharer: %d secrets %s, each in %d client(s) ×%d, ranked among %d candidates (model v%d, %.1f s)\n",
		a.Secrets, a.Format, a.Sharers, a.Repeats, a.Candidates, a.Version, a.Seconds)
	fmt.Fprintf(w, "  %-44s%.2f bits (max %.2f)\n", "exposure, inserted secrets (mean)", a.InsertedMean, a.InsertedMax)
	fmt.Fprintf(w, "  %-44s%.2f bits (max %.2f; a secret never seen: ≈1.44)\n", "exposure, never-inserted secrets (mean)", a.NeverMean, a.NeverMax)
	fmt.Fprintf(w, "  %-44s%s   (the guarantee, per client)\n", "ε public, ledger (upper bound)", fmtEps(float64(a.LedgerEpsilon)))
	group := ""
	if a.Sharers > 1 {
		group = fmt.Sprintf("; a secret is a group of %d clients: the bound is on the group's ε", a.Sharers)
	}
	fmt.Fprintf(w, "  %-44s%s   (%.0f%% confidence; %d/%d inserted vs %d/%d never-inserted past the threshold%s)\n",
		"ε lower bound from the exposures", fmtEps(float64(a.LowerBound.Epsilon)), 100*a.LowerBound.Confidence,
		a.LowerBound.Hits, a.LowerBound.Inserted, a.LowerBound.False, a.LowerBound.Unseen, group)
}
