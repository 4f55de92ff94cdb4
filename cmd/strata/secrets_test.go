package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/strata-fl/strata/audit"
	htmlreport "github.com/strata-fl/strata/observe/report"
	"github.com/strata-fl/strata/topology"
)

// secretReport reads the Secret-Sharer audit strata up wrote into
// report.json and checks what holds for any run: 2K secrets, the
// inserted ones those the topology drew, ranks in 1..N and exposure =
// log2 N − log2 rank.
func secretReport(t *testing.T, data, yaml string) *audit.SecretAudit {
	t.Helper()
	return secretReportKey(t, data, yaml, "secret_sharer")
}

func secretReportKey(t *testing.T, data, yaml, key string) *audit.SecretAudit {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(data, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep map[string]*audit.SecretAudit
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	rep = map[string]*audit.SecretAudit{}
	if r, ok := raw[key]; ok {
		var a audit.SecretAudit
		if err := json.Unmarshal(r, &a); err != nil {
			t.Fatal(err)
		}
		rep[key] = &a
	}
	a := rep[key]
	if a == nil {
		t.Fatalf("report.json has no %s", key)
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

// TestSecretSharerDP runs a small LM job under DP with ten secrets, and
// its --baseline without noise: the audit ranks all twenty among 10^3
// candidates in both, and in the DP run the threshold test's lower bound
// from the exposures does not exceed the ledger's ε (strata up fails with
// ErrBelowLowerBound if it does, so this can fail).
func TestSecretSharerDP(t *testing.T) {
	yaml := strings.Replace(tinyLM, "noise: {regional: 0, global: 0}", "noise: {regional: 0, global: 1}", 1) +
		"audit: {secrets: 10, secret_digits: 3, secret_repeats: 8}\n"
	data := runLM(t, yaml, "--baseline")
	a := secretReport(t, data, yaml)
	base := secretReportKey(t, data, yaml, "secret_sharer_baseline")
	if !math.IsInf(float64(base.LedgerEpsilon), 1) {
		t.Errorf("the baseline's ledger ε %v: want ∞ (no noise)", base.LedgerEpsilon)
	}
	if !(float64(a.LedgerEpsilon) > 0) || math.IsInf(float64(a.LedgerEpsilon), 0) {
		t.Fatalf("ledger ε %v: want a finite DP guarantee", a.LedgerEpsilon)
	}
	if float64(a.LowerBound.Epsilon) > float64(a.LedgerEpsilon) {
		t.Errorf("lower bound %v exceeds the ledger's ε %v", a.LowerBound.Epsilon, a.LedgerEpsilon)
	}
	// The HTML report shows both runs' exposures beside the ledger's ε.
	html, err := os.ReadFile(filepath.Join(data, "report", "report.html"))
	if err != nil {
		t.Fatal(err)
	}
	// and report.json's whole-held-out scores: pre-trained, this job, and
	// the noise-free baseline's.
	b, err := os.ReadFile(filepath.Join(data, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep htmlreport.Summary
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	bpb := func(m map[string]float64) float64 {
		v, ok := m["bits_per_byte"]
		if !ok {
			t.Fatalf("report.json lacks bits_per_byte in %v", m)
		}
		return v
	}
	heldOut := fmt.Sprintf("<tr><td>bits_per_byte</td><td>%.4f</td><td>%.4f</td><td>%.4f</td></tr>",
		bpb(rep.MetricsPretrained), bpb(rep.MetricsFinal), bpb(rep.MetricsNonprivate))
	for _, want := range []string{`id="secret-sharer"`, "<td>this job</td>", "<td>--baseline, no noise</td>",
		fmt.Sprintf("%.2f (%.2f)", a.InsertedMean, a.InsertedMax), fmt.Sprintf("%.2f (%.2f)", base.NeverMean, base.NeverMax),
		`id="held-out"`, heldOut, "<td>next_token_accuracy</td>", "<td>perplexity</td>"} {
		if !strings.Contains(string(html), want) {
			t.Errorf("report.html lacks %q", want)
		}
	}
	t.Logf("DP: ε %.3g, exposure inserted %.2f (max %.2f) vs never %.2f (max %.2f), lower bound %.3g",
		float64(a.LedgerEpsilon), a.InsertedMean, a.InsertedMax, a.NeverMean, a.NeverMax, float64(a.LowerBound.Epsilon))
}

// memorising is an LM job whose clients' text is mostly secrets and whose
// local training is strong (16 steps at learning rate 2, all six
// projections adapted): the configuration under which FFA-LoRA's B
// memorises at all within a few dozen rounds (the default job, local_lr
// 0.1 and 4 steps, does not: docs/secret-sharer.md).
const memorising = `job: lm-secrets
seed: 3
regions: [{id: a, clients: 4}, {id: b, clients: 4}]
privacy: {sampling_rate: 1, budget: .inf, clip_norm: 50, noise: {regional: 0, global: 0}}
training: {rounds: 30, gate_max_drop: 10, server_lr: 1}
task: {name: lm, layers: 2, d_model: 64, heads: 4, context: 32, pretrain_steps: 200, shard_bytes: 256, eval_windows: 16, final_windows: 16, local_steps: 16, local_batch: 8, local_lr: 2, lora_targets: [q, k, v, o, up, down]}
round: {timeout: 120s}
audit: {secrets: 4, secret_sharers: 2, secret_digits: 2, secret_repeats: 32}
`

// TestSecretSharerNoiseOff (about a minute and a half on two cores; not
// under -short) runs the memorising job without noise: the inserted
// secrets' exposure must be clearly above the never-inserted ones' — a
// mean at least 1 bit higher and every inserted secret ranked above the
// median candidate — which fails if the secrets are not planted, not
// trained on, or not ranked by the model that trained on them.
func TestSecretSharerNoiseOff(t *testing.T) {
	if testing.Short() {
		t.Skip("a 30-round memorising LM job (a minute or two)")
	}
	data := runLM(t, memorising)
	a := secretReport(t, data, memorising)
	t.Logf("noise off: exposure inserted %.2f (max %.2f) vs never %.2f (max %.2f) of %.2f bits; lower bound %.3g",
		a.InsertedMean, a.InsertedMax, a.NeverMean, a.NeverMax, math.Log2(float64(a.Candidates)), float64(a.LowerBound.Epsilon))
	if !(a.InsertedMean >= a.NeverMean+1) {
		t.Errorf("inserted secrets' mean exposure %.2f is not 1 bit above the never-inserted ones' %.2f", a.InsertedMean, a.NeverMean)
	}
	for _, e := range a.Inserted {
		if e.Rank > a.Candidates/2 {
			t.Errorf("inserted secret %s ranks %d of %d: below the median candidate", e.Secret, e.Rank, a.Candidates)
		}
	}
}
