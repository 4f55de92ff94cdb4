package report

import (
	"bytes"
	"encoding/json"
	"errors"
	"image/png"
	"math"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/privacy"
)

// testLedger holds a job with rounds 1 and 2 committed and round 3 open;
// its task's primary metric is a perplexity, lower is better.
func testLedger(t *testing.T) *ledger.Ledger {
	t.Helper()
	orders := privacy.Orders()
	l := ledger.New()
	cmds := []ledger.Command{
		&ledger.StartJob{Job: ledger.Job{Name: "j", ConfigHash: "h", Delta: 1e-5, Budget: 10, Population: 4, PlannedRounds: 5, Accountant: "rdp", Orders: orders}},
		&ledger.EnrollClients{Clients: []ledger.Enrollment{{ID: "a-0", Region: "a", Budget: 10}, {ID: "a-1", Region: "a", Budget: 10}, {ID: "b-0", Region: "b", Budget: 10}, {ID: "b-1", Region: "b", Budget: 10}}},
	}
	for r := uint64(1); r <= 3; r++ {
		curve, inf := make([]float64, len(orders)), make([]float64, len(orders))
		for i, a := range orders {
			curve[i], inf[i] = 0.01*a, math.Inf(1)
		}
		cmds = append(cmds, &ledger.OpenRound{
			Round: r, ModelVersion: r - 1, Sampled: 2, Q: 0.5, ClipNorm: 1, Noise: ledger.Noise{Regional: 0.7, Global: 0.7},
			Sigma:        ledger.PerObserver[float64]{Public: 1, GlobalOperator: 0.7},
			RDP:          ledger.PerObserver[[]float64]{Public: curve, GlobalOperator: curve, RegionalOperator: inf},
			EpsilonAfter: ledger.PerObserver[float64]{Public: float64(r), GlobalOperator: 2 * float64(r), RegionalOperator: math.Inf(1)},
			OpenedUnixMs: int64(r) * 1000, Eligible: 4, SampledClients: []string{"a-0", "b-1"},
		})
		if r < 3 {
			cmds = append(cmds, &ledger.CommitModel{Round: r, Version: r, Hash: "x", Score: -(9 - float64(r)), Loss: 1 / float64(r),
				Metric: "perplexity", Metrics: []ledger.Metric{{Name: "perplexity", Value: 9 - float64(r)}, {Name: "top1", Value: 0.1 * float64(r)}}, Participants: 2, Regions: []string{"a", "b"}, Promoted: true})
		}
	}
	for i, c := range cmds {
		if res := l.Apply(uint64(i+1), c); res.Err != nil {
			t.Fatalf("command %d (%T): %v", i, c, res.Err)
		}
	}
	return l
}

func TestRoundsFollowTheLedger(t *testing.T) {
	rounds := Rounds(testLedger(t))
	if len(rounds) != 3 {
		t.Fatalf("got %d rounds, want 3", len(rounds))
	}
	for i, r := range rounds {
		wantClosed := i < 2
		if r.Closed() != wantClosed || (r.Model != nil) != wantClosed {
			t.Errorf("round %d: closed %v, model %v; want closed and a model = %v", r.Round, r.Closed(), r.Model, wantClosed)
		}
	}
	if m := rounds[1].Model; m == nil || m.Round != 2 {
		t.Errorf("round 2's model: got %+v, want the one from round 2", m)
	} else if name, v := m.Primary(); name != "perplexity" || v != 7 {
		t.Errorf("round 2's model: primary metric %s = %v, want perplexity 7", name, v)
	}
}

var pointsAttr = regexp.MustCompile(`^<svg data-chart="([a-z_]+)" data-points="([^"]*)"`)

func TestChartsCountOnePointPerClosedRound(t *testing.T) {
	l := testLedger(t)
	rounds := Rounds(l)
	eps, err := EpsilonChart(rounds, l.Job.Budget, "svg")
	if err != nil {
		t.Fatal(err)
	}
	m := pointsAttr.FindSubmatch(eps.Bytes)
	if m == nil {
		t.Fatalf("SVG does not start with the tagged root element: %.200s", eps.Bytes)
	}
	// Rounds 1 and 2 closed; round 3 open, already charged; ε against the
	// regional operator is ∞, so it has no point.
	if got, want := string(m[2]), "fellow_clients:2 global_operator:2 open:1 public:2 regional_operator:0"; got != want {
		t.Errorf("epsilon chart data-points = %q, want %q", got, want)
	}
	acc, err := MetricChart(rounds, "svg")
	if err != nil {
		t.Fatal(err)
	}
	loss, err := LossChart(rounds, "svg")
	if err != nil {
		t.Fatal(err)
	}
	if acc.Name != "metric" || acc.Points["perplexity"] != 2 || loss.Points["loss"] != 2 {
		t.Errorf("metric chart %q points %v, loss chart points %v, want the task's perplexity and 2 each", acc.Name, acc.Points, loss.Points)
	}
	part, err := ParticipationChart(rounds, map[uint64]map[string]int{1: {"a": 1, "b": 1}, 2: {"a": 2}}, "svg")
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]int{"total": 2, "region_a": 2, "region_b": 1}; !equalCounts(part.Points, want) {
		t.Errorf("participation points %v, want %v", part.Points, want)
	}
	rej, err := RejectionsChart(rounds, nil, "svg")
	if err != nil {
		t.Fatal(err)
	}
	if len(rej.Points) != 0 {
		t.Errorf("rejections without data: points %v, want none", rej.Points)
	}
	pu, err := PrivacyUtilityChart(rounds, "png")
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(pu.Bytes))
	if err != nil {
		t.Fatalf("privacy-utility PNG: %v", err)
	}
	if img.Bounds().Dx() < 300 {
		t.Errorf("PNG is %d px wide", img.Bounds().Dx())
	}
	if _, err := MetricChart(rounds, "gif"); err == nil || !strings.Contains(err.Error(), "use svg or png") {
		t.Errorf("format gif: got %v, want an error naming svg and png", err)
	}
}

func equalCounts(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestWriteIsSelfContained(t *testing.T) {
	l := testLedger(t)
	dir := t.TempDir()
	f, err := Write(dir, Input{Ledger: l, TopologyYAML: []byte("job: j\n")})
	if err != nil {
		t.Fatal(err)
	}
	html, err := os.ReadFile(f.HTML)
	if err != nil {
		t.Fatal(err)
	}
	s := string(html)
	if n := strings.Count(s, `src="data:image/png;base64,`); n != 5 {
		t.Errorf("report embeds %d PNG plots, want 5", n)
	}
	for _, bad := range []string{"http://", "https://", "<script", "<link"} {
		if strings.Contains(s, bad) {
			t.Errorf("report contains %q: it must load nothing from outside", bad)
		}
	}
	for _, want := range []string{l.AuditHead(), "job: j", "<td>∞</td>", "final evaluation perplexity", "<td>7.0000</td>"} {
		if !strings.Contains(s, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if len(f.Plots) != 5 {
		t.Fatalf("wrote plots %v, want 5", f.Plots)
	}
	for _, p := range f.Plots {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := png.Decode(bytes.NewReader(b)); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	if _, err := Write(dir, Input{Ledger: ledger.New()}); !errors.Is(err, ErrNoJob) {
		t.Errorf("empty ledger: got %v, want ErrNoJob", err)
	}
}

func TestFloatJSON(t *testing.T) {
	b, err := json.Marshal([]Float{1.5, Float(math.Inf(1)), Float(math.Inf(-1)), Float(math.NaN())})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `[1.5,"inf","-inf","nan"]`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	var back []Float
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back[0] != 1.5 || !math.IsInf(float64(back[1]), 1) || !math.IsInf(float64(back[2]), -1) || !math.IsNaN(float64(back[3])) {
		t.Errorf("round trip: %v", back)
	}
}

func FuzzFloatJSON(f *testing.F) {
	for _, s := range []string{`1.5`, `"inf"`, `"-inf"`, `"nan"`, `"x"`, `1e999`, `null`, `[]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var v Float
		if err := json.Unmarshal(b, &v); err != nil {
			return
		}
		out, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("%q decoded to %v, which does not encode: %v", b, v, err)
		}
		var back Float
		if err := json.Unmarshal(out, &back); err != nil || (back != v && !(math.IsNaN(float64(v)) && math.IsNaN(float64(back)))) {
			t.Fatalf("%q → %v → %s → %v (%v)", b, v, out, back, err)
		}
	})
}

// TestWriteShowsEmpiricalPrivacy: an audit given to Write appears beside
// the ledger's ε, and none appears without one.
func TestWriteShowsEmpiricalPrivacy(t *testing.T) {
	l := testLedger(t)
	dir := t.TempDir()
	f, err := Write(dir, Input{Ledger: l, Empirical: &Empirical{Canaries: 1000, EstimateAllIterates: 0.5645, EstimateFinal: 0.5403,
		LowerBound: 0, Confidence: 0.95, MIAAUC: 0.4968, MIATPR: 0.0094, MIAFPR: 0.01}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(f.HTML)
	for _, want := range []string{`id="empirical"`, "1000 canaries", "<td>0.5645</td>", "<td>0.5403</td>", "95% confidence", "0.4968, 0.0094", "TPR at 1% FPR"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("report lacks %q", want)
		}
	}
	f, err = Write(dir, Input{Ledger: l})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ = os.ReadFile(f.HTML); strings.Contains(string(b), `id="empirical"`) {
		t.Error("report without an audit shows an empirical section")
	}
}

// TestPublicReportWithholdsCounts: the report the public may read holds no
// exact count of who took part — no sampled or participant column, no
// partial's count, no per-client ε against an operator (it would say how
// often each client was sampled) — and says so; the operators' report
// keeps them and says it is not for publication.
func TestPublicReportWithholdsCounts(t *testing.T) {
	l := testLedger(t)
	l.Models[0].Partials = []ledger.PartialRef{{Region: "a", Count: 7, Digest: "d"}}
	for _, public := range []bool{false, true} {
		dir := t.TempDir()
		f, err := Write(dir, Input{Ledger: l, Public: public})
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(f.HTML)
		if err != nil {
			t.Fatal(err)
		}
		html := string(b)
		hasCounts := strings.Contains(html, "<th>sampled</th>") && strings.Contains(html, "<th>participants</th>")
		if hasCounts == public {
			t.Errorf("public %v: round table shows sampled/participants columns: %v", public, hasCounts)
		}
		if public != strings.Contains(html, "Public report") {
			t.Errorf("public %v: the audience line is wrong", public)
		}
		for _, r := range Withhold(Rounds(l)) {
			if r.Sampled != 0 || r.Participants != 0 || (r.Model != nil && len(r.Model.Partials) != 0) {
				t.Errorf("round %d withheld still carries counts: %+v", r.Round, r)
			}
		}
		spendTable := regexp.MustCompile(`<td>global_operator</td><td>[^<]*</td><td>([^<]*)</td>`).FindStringSubmatch(html)
		if spendTable == nil {
			t.Fatalf("public %v: no global_operator row", public)
		}
		if public && spendTable[1] != "" {
			t.Errorf("public report shows a per-client ε against the global operator (%q)", spendTable[1])
		}
	}
}

// TestWriteShowsHeldOutScores: report.json's whole-held-out scores appear
// as a table of every metric, before and after the job and beside the
// noise-free baseline's in the operators' report; the public report
// withholds the baseline's (a model trained without noise) and says so.
// ReadHeldOut reads them back from report.json, and not another job's.
func TestWriteShowsHeldOutScores(t *testing.T) {
	l := testLedger(t)
	s := &Summary{Job: "j", MetricsPretrained: map[string]float64{"bits_per_byte": 4.7349, "perplexity": 26.6279, "loss": 3.282},
		MetricsFinal:      map[string]float64{"bits_per_byte": 4.4215, "perplexity": 21.43, "loss": 3.0648},
		MetricsNonprivate: map[string]float64{"bits_per_byte": 4.4041, "perplexity": 21.17, "loss": 3.0527}}
	dir := t.TempDir()
	if err := WriteSummary(dir, s); err != nil {
		t.Fatal(err)
	}
	held, err := ReadHeldOut(dir, "j")
	if err != nil || held == nil {
		t.Fatalf("ReadHeldOut: %v, %v", held, err)
	}
	if other, err := ReadHeldOut(dir, "another-job"); err != nil || other != nil {
		t.Errorf("ReadHeldOut of another job's report.json = %v, %v; want nil, nil", other, err)
	}
	row := regexp.MustCompile(`<tr><td>bits_per_byte</td><td>4\.7349</td><td>4\.4215</td>(<td>4\.4041</td>)?</tr>`)
	for _, public := range []bool{false, true} {
		f, err := Write(t.TempDir(), Input{Ledger: l, HeldOut: held, Public: public})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(f.HTML)
		html := string(b)
		m := row.FindStringSubmatch(html)
		if m == nil {
			t.Fatalf("public=%v: no bits_per_byte row of pre-trained 4.7349 and final 4.4215 in the held-out table", public)
		}
		if got := m[1] != ""; got == public {
			t.Errorf("public=%v: baseline column shown = %v", public, got)
		}
		if !strings.Contains(html, "<td>perplexity</td><td>26.6279</td><td>21.4300</td>") {
			t.Errorf("public=%v: perplexity row missing", public)
		}
		if i, j := strings.Index(html, "<td>perplexity</td>"), strings.Index(html, "<td>loss</td>"); j < i {
			t.Errorf("public=%v: loss is not the last row", public)
		}
		if withheld := strings.Contains(html, "scores are withheld"); withheld != public {
			t.Errorf("public=%v: says the baseline is withheld = %v", public, withheld)
		}
	}
	f, err := Write(t.TempDir(), Input{Ledger: l})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(f.HTML); strings.Contains(string(b), `id="held-out"`) {
		t.Error("report without held-out scores shows a held-out table")
	}
}
