package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/strata-fl/strata/audit"
	"github.com/strata-fl/strata/topology"
)

// secretReport reads the Secret-Sharer audit strata up wrote into
// report.json and checks what holds for any run: 2K secrets, the
// inserted ones those the topology drew, ranks in 1..N and exposure =
// log2 N − log2 rank.
func secretReport(t *testing.T, data, yaml string) *audit.SecretAudit {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(data, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		SecretSharer *audit.SecretAudit `json:"secret_sharer"`
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	a := rep.SecretSharer
	if a == nil {
		t.Fatal("report.json has no secret_sharer")
	}
	top, err := topology.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	inserted, never := top.SecretValues()
	if len(a.Inserted) != len(inserted) || len(a.Never) != len(never) || len(inserted) != top.Audit.Secrets {
		t.Fatalf("%d inserted and %d never-inserted exposures, want %d each", len(a.Inserted), len(a.Never), top.Audit.Secrets)
	}
	n := math.Pow(10, float64(top.Audit.SecretPlan().Digits))
	for i, e := range append(append(a.Inserted[:0:0], a.Inserted...), a.Never...) {
		want := append(append([]string(nil), inserted...), never...)[i]
		if e.Secret != want {
			t.Errorf("secret %d is %q, the topology drew %q", i, e.Secret, want)
		}
		if e.Rank < 1 || float64(e.Rank) > n || math.Abs(e.Exposure-(math.Log2(n)-math.Log2(float64(e.Rank)))) > 1e-9 {
			t.Errorf("secret %s: rank %d, exposure %v among %v candidates", e.Secret, e.Rank, e.Exposure, n)
		}
	}
	if a.Candidates != int(n) {
		t.Errorf("ranked among %d candidates, want %v", a.Candidates, n)
	}
	return a
}

// TestSecretSharerDP runs a small LM job under DP with ten secrets: the
// audit ranks all twenty among 10^3 candidates, and the threshold test's
// lower bound from the exposures does not exceed the ledger's ε (strata
// up fails with ErrBelowLowerBound if it does, so this can fail).
func TestSecretSharerDP(t *testing.T) {
	yaml := strings.Replace(tinyLM, "noise: {regional: 0, global: 0}", "noise: {regional: 0, global: 1}", 1) +
		"audit: {secrets: 10, secret_digits: 3, secret_repeats: 8}\n"
	data := runLM(t, yaml)
	a := secretReport(t, data, yaml)
	if !(float64(a.LedgerEpsilon) > 0) || math.IsInf(float64(a.LedgerEpsilon), 0) {
		t.Fatalf("ledger ε %v: want a finite DP guarantee", a.LedgerEpsilon)
	}
	if float64(a.LowerBound.Epsilon) > float64(a.LedgerEpsilon) {
		t.Errorf("lower bound %v exceeds the ledger's ε %v", a.LowerBound.Epsilon, a.LedgerEpsilon)
	}
	t.Logf("DP: ε %.3g, exposure inserted %.2f (max %.2f) vs never %.2f (max %.2f), lower bound %.3g",
		float64(a.LedgerEpsilon), a.InsertedMean, a.InsertedMax, a.NeverMean, a.NeverMax, float64(a.LowerBound.Epsilon))
}
