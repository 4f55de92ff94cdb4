package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestUpAndAuditPrivacy runs a small noise-free job with canaries through
// the binary's commands: `strata up` audits it and records the figures in
// report.json; `strata audit privacy` re-measures, keeps the report's other
// fields, and its release gate refuses the (unprotected) model; the
// promotion gate (audit.max_empirical_epsilon) held versions back.
func TestUpAndAuditPrivacy(t *testing.T) {
	dir := t.TempDir()
	top := filepath.Join(dir, "top.yaml")
	os.WriteFile(top, []byte(`job: audit
seed: 5
regions: [{id: a, clients: 60}, {id: b, clients: 60}]
privacy: {sampling_rate: 0.3, budget: .inf, noise: {regional: 0, global: 0}}
training: {rounds: 4}
task: {name: mnist, pretrain_epochs: 1, hidden: 32, public_examples: 2000, eval_examples: 500}
round: {timeout: 20s}
audit: {canaries: 20, max_empirical_epsilon: 3}
`), 0o600)
	data := filepath.Join(dir, "data")
	var out bytes.Buffer
	ctx := context.Background()
	if err := run(ctx, []string{"up", "--data", data, "--topology", top}, &out, &out); err != nil {
		t.Fatalf("up: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "ε estimate, every release seen") {
		t.Fatalf("up printed no audit:\n%s", out.String())
	}
	readReport := func() map[string]any {
		var rep map[string]any
		b, err := os.ReadFile(filepath.Join(data, "report.json"))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &rep); err != nil {
			t.Fatal(err)
		}
		return rep
	}
	rep := readReport()
	for _, k := range []string{"empirical_epsilon", "epsilon_lower_bound", "mia_auc", "empirical_privacy", "job", "epsilon"} {
		if _, ok := rep[k]; !ok {
			t.Errorf("report.json after up lacks %q", k)
		}
	}
	if e, _ := rep["empirical_epsilon"].(float64); !(e > 1) {
		t.Errorf("noise off: empirical_epsilon %v, want the canaries detected (> 1)", rep["empirical_epsilon"])
	}
	html := func() string {
		b, err := os.ReadFile(filepath.Join(data, "report", "report.html"))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if !strings.Contains(html(), `id="empirical"`) {
		t.Error("the HTML report strata up wrote lacks the empirical privacy section")
	}
	os.Remove(filepath.Join(data, "report", "report.html"))
	out.Reset()
	if err := run(ctx, []string{"report", "--data", data}, &out, &out); err != nil {
		t.Fatalf("report: %v\n%s", err, out.String())
	}
	if !strings.Contains(html(), `id="empirical"`) {
		t.Error("strata report lacks the empirical privacy section recorded in report.json")
	}
	// The promotion gate held back the versions that would have taken the
	// served estimate past 3.
	out.Reset()
	if err := run(ctx, []string{"model", "list", "--data", data}, &out, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "not promoted: empirical ε estimate") {
		t.Errorf("no version was held back by the empirical gate on a noise-free job:\n%s", out.String())
	} else {
		t.Logf("model list:\n%s", out.String())
	}
	os.Remove(filepath.Join(data, "report.json"))
	out.Reset()
	err := run(ctx, []string{"audit", "privacy", "--data", data, "--topology", top, "--max-epsilon", "1"}, &out, &out)
	if !errors.Is(err, errGate) {
		t.Fatalf("audit privacy --max-epsilon 1 on a noise-free job: err = %v, want the gate to refuse\n%s", err, out.String())
	}
	if rep = readReport(); rep["mia_auc"] == nil || rep["job"] != nil {
		t.Errorf("audit privacy with no report.json: wrote %v, want the audit fields only", rep)
	}
	out.Reset()
	if err := run(ctx, []string{"audit", "privacy", "--data", data}, &out, &out); err == nil || !strings.Contains(err.Error(), "audit.canaries") {
		t.Errorf("audit privacy with the default topology (no canaries): err = %v, want one naming audit.canaries", err)
	}
}
