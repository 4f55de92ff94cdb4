package report

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/strata-fl/strata/audit"
	"github.com/strata-fl/strata/global/ledger"
)

// Input is what a report is made of.
type Input struct {
	Ledger *ledger.Ledger
	// TopologyYAML is the job's configuration as run, shown verbatim;
	// nil shows only what the ledger's job record holds.
	TopologyYAML []byte
	// Now stamps the report; zero means time.Now.
	Now time.Time
	// Empirical is the job's empirical privacy audit (strata audit
	// privacy), shown beside the ledger's ε; nil shows none.
	Empirical *Empirical
	// HeldOut is the task's scores on its whole held-out set (report.json),
	// before and after the job; nil shows only the per-round subset's.
	HeldOut *HeldOut
	// Public writes the report the public may read: no exact counts of
	// who took part (Withhold) and per-client ε only against the public and
	// fellow clients (a client's ε against an operator says how often it
	// was sampled). The default is the operators' report.
	Public bool
}

// Empirical is what an empirical privacy audit measured (see the empirical
// package): estimates, never guarantees, beside the ledger's ε.
type Empirical struct {
	Canaries int `json:"canaries"`
	// EstimateAllIterates and EstimateFinal are the one-shot ε estimates
	// for an observer of every release and of the final model only.
	EstimateAllIterates Float `json:"empirical_epsilon"`
	EstimateFinal       Float `json:"empirical_epsilon_final_model"`
	// LowerBound holds at Confidence.
	LowerBound Float   `json:"epsilon_lower_bound"`
	Confidence float64 `json:"confidence"`
	// MIAAUC and MIATPR (at MIAFPR) are the loss-threshold membership
	// attack's figures; MIAFPR 0 means the attack was not run.
	MIAAUC float64 `json:"mia_auc"`
	MIATPR float64 `json:"mia_tpr"`
	MIAFPR float64 `json:"mia_fpr"`
	// Secrets and SecretsBaseline are the Secret-Sharer audit of a
	// language-model job (audit.secrets) and of its --baseline run
	// without noise; nil when not run. Canaries is 0 when only they ran.
	Secrets         *audit.SecretAudit `json:"-"`
	SecretsBaseline *audit.SecretAudit `json:"-"`
}

// Files names what Write wrote.
type Files struct {
	HTML  string
	Plots []string // PNG files, also embedded in the HTML
}

// ErrNoJob reports a ledger without a job: there is nothing to report.
var ErrNoJob = errors.New("report: the ledger holds no job yet")

// Write renders the report of the ledger's job into dir: report.html,
// self-contained (plots embedded as PNG data, no script, no external
// resource, so it opens offline and can be mailed), and the same plots as
// PNG files under dir/plots.
func Write(dir string, in Input) (Files, error) {
	var f Files
	l := in.Ledger
	if l == nil || l.Job == nil {
		return f, ErrNoJob
	}
	if in.Now.IsZero() {
		in.Now = time.Now()
	}
	rounds := Rounds(l)
	spend, err := ClientSpend(l)
	if err != nil {
		return f, fmt.Errorf("report: client spend: %w", err)
	}
	if in.Public {
		rounds = Withhold(rounds)
		spend.GlobalOperator, spend.RegionalOperator = nil, nil
	}
	charts := []func() (Chart, error){
		func() (Chart, error) { return PrivacyUtilityChart(rounds, "png") },
		func() (Chart, error) { return EpsilonChart(rounds, l.Job.Budget, "png") },
		func() (Chart, error) { return MetricChart(rounds, "png") },
		func() (Chart, error) { return LossChart(rounds, "png") },
		func() (Chart, error) { return ClientSpendChart(spend, "png") },
	}
	if err := os.MkdirAll(filepath.Join(dir, "plots"), 0o755); err != nil {
		return f, fmt.Errorf("report: %w", err)
	}
	var plots []plotView
	for _, mk := range charts {
		c, err := mk()
		if err != nil {
			return f, err
		}
		path := filepath.Join(dir, "plots", c.Name+".png")
		if err := os.WriteFile(path, c.Bytes, 0o644); err != nil {
			return f, fmt.Errorf("report: %w", err)
		}
		f.Plots = append(f.Plots, path)
		plots = append(plots, plotView{Name: c.Name, Data: template.URL("data:image/png;base64," + base64.StdEncoding.EncodeToString(c.Bytes))})
	}
	v := view{Public: in.Public, Empirical: in.Empirical, Job: *l.Job, Rounds: rounds, Plots: plots, Topology: string(in.TopologyYAML), Generated: in.Now.UTC().Format(time.RFC3339),
		Finished: l.Finished, FinishReason: l.FinishReason, AuditHead: l.AuditHead(), AuditRecords: len(l.Audit),
		Committed: l.CommittedRounds(), MetricName: PrimaryMetric(rounds), Started: time.UnixMilli(l.Job.StartedUnixMs).UTC().Format(time.RFC3339)}
	for _, o := range ledger.Observers {
		ov := observerView{Name: string(o), Epsilon: fmtEps(l.Spent(o))}
		if s := spend.Get(o); len(s) > 0 {
			ov.ClientMedian, ov.ClientMax = fmtEps(s[len(s)/2]), fmtEps(s[len(s)-1])
		}
		v.Observers = append(v.Observers, ov)
	}
	v.HeldOut, v.HasNonprivate, v.NonprivateWithheld = heldOutRows(in.HeldOut, in.Public)
	for _, c := range l.Clients {
		switch c.Status {
		case ledger.ClientRetired:
			v.Retired++
		case ledger.ClientWithdrawn:
			v.Withdrawn++
		}
	}
	if n := len(rounds); n > 0 {
		v.Last = &rounds[n-1]
	}
	for i := len(rounds) - 1; i >= 0; i-- {
		if rounds[i].Model != nil {
			_, value := rounds[i].Model.Primary()
			v.Metric = fmt.Sprintf("%.4f", value)
			break
		}
	}
	var buf bytes.Buffer
	if err := page.Execute(&buf, v); err != nil {
		return f, fmt.Errorf("report: render: %w", err)
	}
	f.HTML = filepath.Join(dir, "report.html")
	if err := os.WriteFile(f.HTML+".tmp", buf.Bytes(), 0o644); err != nil {
		return f, fmt.Errorf("report: %w", err)
	}
	return f, os.Rename(f.HTML+".tmp", f.HTML)
}

type plotView struct {
	Name string
	Data template.URL
}

type observerView struct {
	Name, Epsilon, ClientMedian, ClientMax string
}

type view struct {
	Public       bool
	Empirical    *Empirical
	Job          ledger.Job
	Rounds       []Round
	Last         *Round
	Plots        []plotView
	Observers    []observerView
	Topology     string
	Generated    string
	Started      string
	Finished     bool
	FinishReason string
	AuditHead    string
	AuditRecords int
	Committed    int
	Retired      int
	Withdrawn    int
	MetricName   string
	Metric       string
	HeldOut      []heldOutRow
	// HasNonprivate shows the --baseline column; NonprivateWithheld says
	// the public report left it out.
	HasNonprivate, NonprivateWithheld bool
}

type heldOutRow struct {
	Name, Pretrained, Final, Nonprivate string
}

// heldOutRows lays h out one metric a row. The public report leaves the
// noise-free baseline's scores out: they are data-dependent and un-noised.
func heldOutRows(h *HeldOut, public bool) (rows []heldOutRow, shown, withheld bool) {
	if h == nil {
		return nil, false, false
	}
	nonprivate := h.Nonprivate
	if public && nonprivate != nil {
		nonprivate, withheld = nil, true
	}
	shown = nonprivate != nil
	cell := func(m map[string]float64, name string) string {
		if v, ok := m[name]; ok {
			return fmt.Sprintf("%.4f", v)
		}
		return ""
	}
	for _, name := range MetricNames(h.Final) {
		rows = append(rows, heldOutRow{Name: name, Pretrained: cell(h.Pretrained, name), Final: cell(h.Final, name), Nonprivate: cell(nonprivate, name)})
	}
	return rows, shown, withheld
}

func fmtEps(e float64) string {
	if math.IsInf(e, 1) {
		return "∞"
	}
	return fmt.Sprintf("%.4g", e)
}

var page = template.Must(template.New("report").Funcs(template.FuncMap{
	"eps": func(f Float) string { return fmtEps(float64(f)) },
	"pct": func(f float64) float64 { return 100 * f },
	"metric": func(m *ledger.Model) string {
		if m == nil {
			return ""
		}
		_, v := m.Primary()
		return fmt.Sprintf("%.4f", v)
	},
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Strata report: {{.Job.Name}}</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:70em;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse}td,th{padding:.2em .7em;border-bottom:1px solid #eee;text-align:right}
th{background:#f6f6f6}td:first-child,th:first-child{text-align:left}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(28em,1fr));gap:1em}
.plots img{width:100%;border:1px solid #eee}code,pre{font:12px ui-monospace,monospace}
pre{background:#f8f8f8;padding:1em;overflow:auto;max-height:30em}.muted{color:#777}
</style></head><body>
<h1>Strata report — job <code>{{.Job.Name}}</code></h1>
<p class="muted">generated {{.Generated}} from the raft ledger; job started {{.Started}};
{{if .Finished}}finished: {{.FinishReason}}{{else}}not finished{{end}}.</p>
{{if .Public}}<p id="audience">Public report: exact counts of who took part are withheld (they would weaken the sampling amplification the public ε relies on).</p>
{{else}}<p id="audience"><strong>Operators' report</strong>: it holds exact participation counts and per-client ε against the operators, which the public ε does not cover. Publish <code>strata report --public</code> instead.</p>{{end}}
<h2>Summary</h2>
<table>
<tr><th>rounds committed / planned</th><td>{{.Committed}} / {{.Job.PlannedRounds}}</td></tr>
<tr><th>final evaluation {{.MetricName}} (per-round subset)</th><td>{{.Metric}}</td></tr>
<tr><th>δ</th><td>{{.Job.Delta}}</td></tr>
<tr><th>budget (public ε)</th><td>{{.Job.Budget}}</td></tr>
<tr><th>clients enrolled / retired for budget / withdrawn</th><td>{{.Job.Population}} / {{.Retired}} / {{.Withdrawn}}</td></tr>
</table>
{{if .HeldOut}}<h3>Held-out evaluation (the whole held-out set)</h3>
<table id="held-out"><tr><th>metric</th><th>pre-trained</th><th>this job</th>{{if .HasNonprivate}}<th>--baseline, no noise</th>{{end}}</tr>
{{$np := .HasNonprivate}}{{range .HeldOut}}<tr><td>{{.Name}}</td><td>{{.Pretrained}}</td><td>{{.Final}}</td>{{if $np}}<td>{{.Nonprivate}}</td>{{end}}</tr>
{{end}}</table>{{if .NonprivateWithheld}}<p class="muted">The noise-free baseline's scores are withheld: they come from a model trained without noise.</p>{{end}}{{end}}
<h3>ε per observer</h3>
<table id="epsilon"><tr><th>observer</th><th>ε (mesh)</th><th>median client ε</th><th>max client ε</th></tr>
{{range .Observers}}<tr><td>{{.Name}}</td><td>{{.Epsilon}}</td><td>{{.ClientMedian}}</td><td>{{.ClientMax}}</td></tr>
{{end}}</table>
{{with .Empirical}}{{if .Canaries}}<h3>Empirical privacy (estimates, not guarantees)</h3>
<table id="empirical">
<tr><th>ε estimate, every release seen ({{.Canaries}} canaries)</th><td>{{eps .EstimateAllIterates}}</td></tr>
<tr><th>ε estimate, final model only</th><td>{{eps .EstimateFinal}}</td></tr>
<tr><th>ε lower bound ({{printf "%.0f" (pct .Confidence)}}% confidence)</th><td>{{eps .LowerBound}}</td></tr>
{{if .MIAFPR}}<tr><th>membership inference (loss threshold): AUC, TPR at {{printf "%.0f" (pct .MIAFPR)}}% FPR</th><td>{{printf "%.4f" .MIAAUC}}, {{printf "%.4f" .MIATPR}}</td></tr>{{end}}
</table>{{end}}
{{if or .Secrets .SecretsBaseline}}<h3>Secret-Sharer: exposure of planted secrets (estimates, not guarantees)</h3>
<p>Each inserted secret is ranked among every candidate of its format by the final model; exposure = log₂(candidates) − log₂(rank), about 1.44 bits for a secret the model never saw.</p>
<table id="secret-sharer"><tr><th>run</th><th>secrets (holders each, repeats)</th><th>candidates</th><th>exposure, inserted: mean (max)</th><th>never inserted: mean (max)</th><th>ε lower bound</th><th>ledger ε</th></tr>
{{with .Secrets}}<tr><td>this job</td>{{template "secretRow" .}}</tr>{{end}}
{{with .SecretsBaseline}}<tr><td>--baseline, no noise</td>{{template "secretRow" .}}</tr>{{end}}
</table>{{end}}{{end}}
<h2>Plots</h2>
<div class="plots">{{range .Plots}}<img id="plot-{{.Name}}" alt="{{.Name}}" src="{{.Data}}">{{end}}</div>
<h2>Audit trail</h2>
<p>{{.AuditRecords}} records; head <code id="audit-head">{{.AuditHead}}</code>
(check it with <code>strata audit verify</code>).</p>
<h2>Configuration</h2>
<table>
<tr><th>accountant</th><td>{{.Job.Accountant}}</td></tr>
<tr><th>population</th><td>{{.Job.Population}}</td></tr>
<tr><th>config hash</th><td><code>{{.Job.ConfigHash}}</code></td></tr>
{{with .Last}}<tr><th>last round's noise ×C (edge / regional / global)</th><td>{{.Noise.Edge}} / {{.Noise.Regional}} / {{.Noise.Global}}</td></tr>
<tr><th>last round's clip norm C</th><td>{{.ClipNorm}}</td></tr>{{end}}
</table>
{{if .Topology}}<pre id="topology">{{.Topology}}</pre>{{else}}<p class="muted">topology file not available: only the ledger's job record is shown.</p>{{end}}
<h2>Rounds</h2>
<table id="rounds"><tr><th>round</th><th>status</th>{{if not .Public}}<th>sampled</th><th>participants</th>{{end}}<th>noise e/r/g</th><th>C</th><th>ε public</th><th>ε global op.</th><th>ε regional op.</th><th>{{.MetricName}}</th><th>secure aggregation</th></tr>
{{$public := .Public}}{{range .Rounds}}<tr><td>{{.Round}}</td><td>{{.Status}}{{if .AbortReason}}: {{.AbortReason}}{{end}}</td>{{if not $public}}<td>{{.Sampled}}</td><td>{{.Participants}}</td>{{end}}<td>{{printf "%.3g" .Noise.Edge}}/{{printf "%.3g" .Noise.Regional}}/{{printf "%.3g" .Noise.Global}}</td><td>{{printf "%.3g" .ClipNorm}}</td><td>{{eps .Epsilon.Public}}</td><td>{{eps .Epsilon.GlobalOperator}}</td><td>{{eps .Epsilon.RegionalOperator}}</td><td>{{metric .Model}}</td><td>{{.SecAggSummary}}</td></tr>
{{end}}</table>
</body></html>
{{define "secretRow"}}<td>{{.Secrets}} ({{.Sharers}}, ×{{.Repeats}})</td><td>{{.Candidates}}</td><td>{{printf "%.2f" .InsertedMean}} ({{printf "%.2f" .InsertedMax}})</td><td>{{printf "%.2f" .NeverMean}} ({{printf "%.2f" .NeverMax}})</td><td>{{eps .LowerBound.Epsilon}} ({{printf "%.0f" (pct .LowerBound.Confidence)}}%)</td><td>{{eps .LedgerEpsilon}}</td>{{end}}`))
