package e2e

import (
	"context"
	"flag"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/observe/dashboard"
	"github.com/strata-fl/strata/observe/metrics"
	"github.com/strata-fl/strata/observe/report"
	"github.com/strata-fl/strata/roles"
	"github.com/strata-fl/strata/task"
	"github.com/strata-fl/strata/topology"
)

var updateScreenshot = flag.Bool("update-screenshot", false, "write the dashboard screenshot to docs/dashboard.png")

func dashboardTopology(t *testing.T) *topology.Topology {
	t.Helper()
	top, err := topology.Parse([]byte(`
job: dash
seed: 5
regions:
  - {id: eu, clients: 100}
  - {id: us, clients: 100}
privacy:
  sampling_rate: 0.5
  budget: 60
  min_regions: 2
  noise: {regional: 0.8, global: 0.8}
policy: {max_epsilon: {global_operator: 200}, require_noise_against: [global_operator]}
training: {rounds: 8}
task: {name: mnist, pretrain_epochs: 2, hidden: 64, public_examples: 2000, eval_examples: 500}
round: {timeout: 60s}
`))
	if err != nil {
		t.Fatal(err)
	}
	return top
}

// TestDashboardMetricsAndReport runs a short job, pauses it with round 5
// open, scrapes /metrics and checks the counters against the ledger, loads
// the dashboard in headless Chromium (charts with one point per completed
// round, no console error, a screenshot), lets the job finish, and opens
// the HTML report offline.
func TestDashboardMetricsAndReport(t *testing.T) {
	const paused = 5
	release := make(chan struct{})
	var once sync.Once
	unpause := func() { once.Do(func() { close(release) }) }
	defer unpause()
	reg := metrics.NewRegistry()
	top := dashboardTopology(t)
	m, ctx := startMesh(t, roles.UpConfig{
		Topology: top, Registry: reg,
		WrapTrainer: func(tr task.Trainer) task.Trainer { return gateRound{tr, paused, release} },
	})
	defer m.Close()
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop()
	serve := func(h http.Handler) string {
		hs, err := metrics.Listen("127.0.0.1:0", h)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); hs.Serve(sctx) }()
		return hs.URL()
	}
	metricsURL := serve(metrics.Handler(reg)) + "metrics"
	d, err := dashboard.New(dashboard.Config{Tracker: m.Tracker()})
	if err != nil {
		t.Fatal(err)
	}
	dashURL := serve(d)
	runErr := make(chan error, 1)
	go func() { runErr <- m.Run(ctx) }()

	// Wait for the job to stand still: rounds 1..paused-1 committed, round
	// `paused` open (its cost already charged) and its clients held.
	var l *ledger.Ledger
	for {
		l, err = m.Ledger()
		if err != nil {
			t.Fatal(err)
		}
		if open, ok := l.OpenRoundEntry(); ok && open.Round == paused {
			break
		}
		select {
		case err := <-runErr:
			t.Fatalf("job ended before round %d: %v", paused, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	if got := l.CommittedRounds(); got != paused-1 {
		t.Fatalf("%d rounds committed before the pause, want %d (an aborted round?)", got, paused-1)
	}
	participants := 0
	for _, r := range l.Rounds {
		participants += r.Participants
	}
	t.Run("metrics", func(t *testing.T) { checkMetrics(t, metricsURL, l, participants) })
	t.Run("browser", func(t *testing.T) {
		browse(t, func(bctx context.Context) {
			checkDashboard(t, bctx, dashURL, paused-1, unpause, top.Train.Rounds)
		})
	})
	unpause()
	if err := <-runErr; err != nil {
		t.Fatal(err)
	}
	l, err = m.Ledger()
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	files, err := report.Write(out, report.Input{Ledger: l})
	if err != nil {
		t.Fatal(err)
	}
	if len(files.Plots) != 5 {
		t.Fatalf("report wrote %d plots, want 5: %v", len(files.Plots), files.Plots)
	}
	t.Run("report offline", func(t *testing.T) {
		browse(t, func(bctx context.Context) { checkReport(t, bctx, files.HTML) })
	})
}

// scrape reads and parses the Prometheus text exposition at url.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	return fams
}

// sum adds the values of a family's series whose labels match want.
func sum(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	t.Helper()
	total, err := value(fams, name, want)
	if err != nil {
		t.Fatal(err)
	}
	return total
}

// value adds the values of a family's series whose labels match want; it
// is an error when there are none.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, error) {
	f, ok := fams[name]
	if !ok {
		return 0, fmt.Errorf("metric %s missing", name)
	}
	total, n := 0.0, 0
outer:
	for _, m := range f.Metric {
		for k, v := range want {
			found := false
			for _, lp := range m.Label {
				found = found || (lp.GetName() == k && lp.GetValue() == v)
			}
			if !found {
				continue outer
			}
		}
		n++
		switch {
		case m.Counter != nil:
			total += m.Counter.GetValue()
		case m.Gauge != nil:
			total += m.Gauge.GetValue()
		case m.Histogram != nil:
			total += float64(m.Histogram.GetSampleCount())
		}
	}
	if n == 0 {
		return 0, fmt.Errorf("metric %s has no series with labels %v", name, want)
	}
	return total, nil
}

// checkMetrics checks the exported metrics against the ledger l of a job
// standing still. The tracker reads the ledger on its own poll and a region
// counts a partial once it has sent it, so the metrics catch up with l a
// moment after it: the counters are scraped until they all agree (or 30 s
// pass, when the ones that do not are reported).
func checkMetrics(t *testing.T, url string, l *ledger.Ledger, participants int) {
	var fams map[string]*dto.MetricFamily
	var mismatches []string
	for deadline := time.Now().Add(30 * time.Second); ; {
		fams = scrape(t, url)
		if mismatches = metricsMismatches(fams, l, participants); len(mismatches) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond) // the poll's interval
	}
	for _, m := range mismatches {
		t.Error(m)
	}
	if got := sum(t, fams, "strata_epsilon_spent", map[string]string{"observer": "regional_operator"}); !math.IsInf(got, 1) {
		t.Errorf("ε regional_operator = %v, want +Inf (no edge noise)", got)
	}
	// Every accepted update was published by an edge client; the round
	// held open has published nothing yet.
	if pub := sum(t, fams, "strata_edge_updates_published_total", nil); pub < float64(participants) {
		t.Errorf("edge published %v updates, fewer than the %d accepted", pub, participants)
	}
	for _, role := range []string{"edge-all", "regional-eu", "regional-us", "global"} {
		in := sum(t, fams, "strata_nats_bytes_total", map[string]string{"role": role, "direction": "in"})
		out := sum(t, fams, "strata_nats_bytes_total", map[string]string{"role": role, "direction": "out"})
		if in <= 0 || out <= 0 {
			t.Errorf("%s: NATS bytes in %v, out %v: want both > 0", role, in, out)
		}
	}
	t.Logf("metrics agree with the ledger: %d rounds committed, %d participants, ε public %.4f", l.CommittedRounds(), participants, l.Spent(ledger.Public))
}

// metricsMismatches lists the metrics of fams that disagree with the
// ledger l.
func metricsMismatches(fams map[string]*dto.MetricFamily, l *ledger.Ledger, participants int) []string {
	var out []string
	committed := float64(l.CommittedRounds())
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"strata_rounds_opened_total", nil, float64(len(l.Rounds))},
		{"strata_rounds_completed_total", nil, committed},
		{"strata_rounds_aborted_total", nil, 0},
		{"strata_round_open", nil, 1},
		// Accepted updates, counted three ways, equal the ledger's participants.
		{"strata_participants_total", nil, float64(participants)},
		{"strata_regional_updates_accepted_total", nil, float64(participants)},
		{"strata_global_region_updates_accepted_total", nil, float64(participants)},
		{"strata_regional_partials_total", nil, 2 * committed},
		{"strata_global_partials_total", nil, 2 * committed},
		{"strata_round_duration_seconds", nil, committed},
		{"strata_regional_aggregation_seconds", nil, 2 * committed},
		{"strata_epsilon_spent", map[string]string{"observer": "public"}, l.Spent(ledger.Public)},
		{"strata_epsilon_spent", map[string]string{"observer": "global_operator"}, l.Spent(ledger.GlobalOperator)},
		{"strata_epsilon_budget_remaining", nil, l.Job.Budget - l.Spent(ledger.Public)},
		{"strata_clients", map[string]string{"status": "active"}, 200},
		{"strata_clients", map[string]string{"status": "retired"}, 0},
		{"strata_model_version", map[string]string{"which": "latest"}, float64(l.LatestVersion())},
		{"strata_model_metric", map[string]string{"name": "accuracy"}, primaryOf(l.Models[len(l.Models)-1])},
		{"strata_noise_multiplier", map[string]string{"tier": "regional"}, 0.8},
		{"strata_raft_leader", nil, 1},
		{"strata_raft_members", nil, 1},
		{"strata_raft_apply_lag", nil, 0},
		{"strata_policy_violations", nil, 0},
		{"strata_alert_firing", map[string]string{"alert": "epsilon_public"}, 0},
		{"strata_regional_queue_drops_total", nil, 0},
		{"strata_edge_queue_drops_total", nil, 0},
		{"strata_edge_connections", nil, 200},
	} {
		got, err := value(fams, c.name, c.labels)
		switch {
		case err != nil:
			out = append(out, err.Error())
		case math.Abs(got-c.want) > 1e-9*math.Max(1, math.Abs(c.want)):
			out = append(out, fmt.Sprintf("%s%v = %v, want %v", c.name, c.labels, got, c.want))
		}
	}
	return out
}

// browse runs fn in a fresh headless Chromium and fails on any console
// error, assertion, uncaught exception or error entry of the browser log
// that the page produced.
func browse(t *testing.T, fn func(ctx context.Context)) {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("STRATA_REQUIRE_CHROMIUM") != "" {
			t.Fatalf("chromium not found but STRATA_REQUIRE_CHROMIUM is set: %v", err)
		}
		t.Skip("chromium not installed (apt-get install chromium); CI sets STRATA_REQUIRE_CHROMIUM")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.WindowSize(1400, 1000))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	bctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	bctx, cancel = context.WithTimeout(bctx, 2*time.Minute)
	defer cancel()
	var mu sync.Mutex
	var problems []string
	messages := chromedp.Console(bctx)
	done := make(chan struct{})
	// The page logs marker last (below): the console keeps the order of
	// messages, so once it arrives every message before it has.
	const marker = "strata e2e: end of the page checks"
	sawMarker := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleLog && m.Text == marker {
				close(sawMarker)
				continue
			}
			switch m.Type {
			case chromedp.ConsoleError, chromedp.ConsoleException, "assert":
				mu.Lock()
				problems = append(problems, fmt.Sprintf("%s: %s (%s:%d)", m.Type, m.Text, m.URL, m.Line))
				mu.Unlock()
			}
		}
	}()
	fn(bctx)
	if _, err := chromedp.Run(bctx, chromedp.Evaluate[bool](fmt.Sprintf("console.log(%q), true", marker))); err != nil {
		t.Errorf("logging the end marker: %v", err)
	} else {
		select {
		case <-sawMarker:
		case <-bctx.Done():
			t.Errorf("the page's console never delivered the end marker: %v", bctx.Err())
		}
	}
	mu.Lock()
	for _, p := range problems {
		t.Errorf("page console: %s", p)
	}
	mu.Unlock()
	cancel()
	<-done
}

// chartPoints reads the data-points attribute of a chart's inlined SVG.
func chartPoints(ctx context.Context, chart string) (map[string]int, error) {
	res, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.CSS("#chart-"+chart+" svg"), "data-points"))
	if err != nil {
		return nil, err
	}
	attr := res.Value
	if !res.Exists {
		return nil, fmt.Errorf("chart %s: no data-points attribute", chart)
	}
	out := map[string]int{}
	for _, f := range strings.Fields(attr) {
		var k string
		var v int
		i := strings.LastIndexByte(f, ':')
		if i < 0 {
			return nil, fmt.Errorf("chart %s: bad data-points %q", chart, attr)
		}
		k = f[:i]
		if _, err := fmt.Sscan(f[i+1:], &v); err != nil {
			return nil, fmt.Errorf("chart %s: bad data-points %q", chart, attr)
		}
		out[k] = v
	}
	return out, nil
}

func checkDashboard(t *testing.T, ctx context.Context, url string, committed int, unpause func(), planned int) {
	waitFor := func(what, js string) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](js, chromedp.WithPollingTimeout(45*time.Second))); err != nil {
			t.Fatalf("dashboard: waiting for %s: %v", what, err)
		}
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatal(err)
	}
	waitFor("the charts", fmt.Sprintf(`document.body.dataset.committed === "%d" && %s`, committed, allCharts()))
	for chart, want := range map[string]map[string]int{
		"epsilon":       {"public": committed, "global_operator": committed, "open": 1},
		"metric":        {"accuracy": committed},
		"loss":          {"loss": committed},
		"participation": {"total": committed, "region_eu": committed, "region_us": committed},
	} {
		got, err := chartPoints(ctx, chart)
		if err != nil {
			t.Fatal(err)
		}
		for series, n := range want {
			if got[series] != n {
				t.Errorf("chart %s, series %q: %d points, want %d (one per completed round); all: %v", chart, series, got[series], n, got)
			}
		}
	}
	texts, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]string](`({
		committed: document.getElementById("committed").textContent,
		audit: document.getElementById("audit-head").textContent,
		policy: document.getElementById("policy-result").textContent,
		alerts: String(document.querySelectorAll("#alerts tbody tr").length),
		members: document.getElementById("members").textContent,
		noise: document.getElementById("noise-regional").textContent,
	})`))
	if err != nil {
		t.Fatal(err)
	}
	if texts["committed"] != fmt.Sprint(committed) || len(texts["audit"]) != 64 || !strings.Contains(texts["policy"], "meets its policy") ||
		texts["alerts"] != "4" || !strings.Contains(texts["members"], "leader") || texts["noise"] != "0.8000" {
		t.Errorf("dashboard panels: %v", texts)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(t.ArtifactDir(), "dashboard.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", shot, len(png))
	if *updateScreenshot {
		if err := os.WriteFile(filepath.Join("..", "..", "docs", "dashboard.png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Live: once released, the page follows the job to its end by itself.
	unpause()
	waitFor("the finished job", fmt.Sprintf(`document.body.dataset.committed === "%d" && document.getElementById("live").textContent === "job finished"`, planned))
	got, err := chartPoints(ctx, "metric")
	if err != nil {
		t.Fatal(err)
	}
	if got["accuracy"] != planned {
		t.Errorf("after the job: accuracy chart has %d points, want %d", got["accuracy"], planned)
	}
}

func allCharts() string {
	var parts []string
	for _, c := range dashboard.Charts {
		parts = append(parts, fmt.Sprintf(`document.querySelector("#chart-%s svg") !== null`, c))
	}
	return strings.Join(parts, " && ")
}

// checkReport opens the HTML report with the network switched off and
// checks that every plot decoded.
func checkReport(t *testing.T, ctx context.Context, path string) {
	var requests []string
	var mu sync.Mutex
	err := chromedp.Listen(ctx, func(ev any) {
		if e, ok := ev.(*network.EventRequestWillBeSent); ok && !strings.HasPrefix(e.Request.URL, "file:") && !strings.HasPrefix(e.Request.URL, "data:") {
			mu.Lock()
			requests = append(requests, e.Request.URL)
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, network.EmulateNetworkConditionsByRule, network.EmulateNetworkConditionsByRuleParams{
		MatchedNetworkConditions: []*network.Conditions{{Offline: true, DownloadThroughput: -1, UploadThroughput: -1}},
	}); err != nil {
		t.Fatalf("switch the network off: %v", err)
	}
	if err := chromedp.Do(ctx, chromedp.Navigate("file://"+path), chromedp.WaitReady(chromedp.CSS("#plot-epsilon"))); err != nil {
		t.Fatalf("open report offline: %v", err)
	}
	type plot struct {
		ID    string `json:"id"`
		Width int    `json:"width"`
	}
	plots, err := chromedp.Run(ctx, chromedp.Poll[[]plot](`(() => {
		const imgs = [...document.querySelectorAll("img[id^=plot-]")];
		return imgs.length > 0 && imgs.every(i => i.complete) && imgs.map(i => ({id: i.id, width: i.naturalWidth}));
	})()`, chromedp.WithPollingTimeout(20*time.Second)))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"plot-privacy_utility", "plot-epsilon", "plot-metric", "plot-loss", "plot-client_spend"}
	if len(plots) != len(want) {
		t.Fatalf("report has plots %v, want %v", plots, want)
	}
	for i, p := range plots {
		if p.ID != want[i] || p.Width < 100 {
			t.Errorf("plot %d: %s decoded %d px wide, want %s at least 100 px", i, p.ID, p.Width, want[i])
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(requests) > 0 {
		t.Errorf("the report asked the network for %v; it must be self-contained", requests)
	}
}

func primaryOf(m ledger.Model) float64 {
	_, v := m.Primary()
	return v
}
