package dashboard

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/observe/metrics"
	"github.com/strata-fl/strata/privacy"
	"github.com/strata-fl/strata/topology"
)

// testTracker opens a real single-node raft ledger in a temp dir, commits
// rounds 1 and 2 and opens round 3 through raft, and tracks it.
func testTracker(t *testing.T, alerts metrics.Alerts) *metrics.Global {
	t.Helper()
	top, err := topology.Parse([]byte("job: t\nregions:\n  - {id: a, clients: 2}\n  - {id: b, clients: 2}\nprivacy: {budget: 10, noise: {regional: 0.7, global: 0.7}}\ntraining: {rounds: 5}\n"))
	if err != nil {
		t.Fatal(err)
	}
	n, err := global.OpenNode(global.NodeConfig{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := n.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	orders := privacy.Orders()
	curve, inf := make([]float64, len(orders)), make([]float64, len(orders))
	for i, a := range orders {
		curve[i], inf[i] = 0.01*a, math.Inf(1)
	}
	cmds := []ledger.Command{
		&ledger.StartJob{Job: ledger.Job{Name: "t", ConfigHash: "h", Delta: 1e-5, Budget: 10, Population: 4, PlannedRounds: 5, Accountant: "rdp", Orders: orders}},
		&ledger.EnrollClients{Clients: []ledger.Enrollment{{ID: "a-0", Region: "a", Budget: 10}, {ID: "b-0", Region: "b", Budget: 10}}},
	}
	for r := uint64(1); r <= 3; r++ {
		cmds = append(cmds, &ledger.OpenRound{Round: r, ModelVersion: r - 1, Sampled: 2, Q: 0.5, ClipNorm: 1, Noise: ledger.Noise{Regional: 0.7, Global: 0.7},
			RDP:          ledger.PerObserver[[]float64]{Public: curve, GlobalOperator: curve, RegionalOperator: inf},
			EpsilonAfter: ledger.PerObserver[float64]{Public: float64(r), GlobalOperator: 2 * float64(r), RegionalOperator: math.Inf(1)},
			OpenedUnixMs: time.Now().UnixMilli(), Eligible: 2, SampledClients: []string{"a-0", "b-0"}})
		if r < 3 {
			cmds = append(cmds, &ledger.CommitModel{Round: r, Version: r, Hash: "x", Score: 0.5, Loss: 1, Participants: 2, Regions: []string{"a", "b"}, Promoted: true})
		}
	}
	for _, c := range cmds {
		res, err := n.Apply(ctx, c)
		if err != nil || res.Err != nil {
			t.Fatalf("%T: %v %v", c, err, res.Err)
		}
	}
	g, err := metrics.NewGlobal(metrics.GlobalConfig{Node: n, Topology: top, Dim: 100, Alerts: alerts, Poll: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	changed, unwatch := g.Watch()
	defer unwatch()
	rctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); g.Run(rctx) }()
	t.Cleanup(func() { stop(); <-done })
	for g.Version() == 0 { // until the tracker has read the ledger once
		select {
		case <-changed:
		case <-time.After(time.Minute):
			t.Fatal("the tracker never read the ledger")
		}
	}
	return g
}

func get(t *testing.T, h http.Handler, path string) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
	return w
}

func TestAPI(t *testing.T) {
	s, err := New(Config{Tracker: testTracker(t, metrics.Alerts{})})
	if err != nil {
		t.Fatal(err)
	}
	w := get(t, s, "/api/v1/status")
	var st struct {
		Rounds struct {
			Committed int     `json:"committed"`
			Open      *uint64 `json:"open"`
		} `json:"rounds"`
		Epsilon         map[string]any `json:"epsilon"`
		BudgetRemaining float64        `json:"budget_remaining"`
		AuditHead       string         `json:"audit_head"`
		Members         []Member       `json:"members"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &st); err != nil {
		t.Fatalf("status: %v: %s", err, w.Body)
	}
	if st.Rounds.Committed != 2 || st.Rounds.Open == nil || *st.Rounds.Open != 3 {
		t.Errorf("status rounds: %+v, want 2 committed and round 3 open", st.Rounds)
	}
	if st.Epsilon["public"] != 3.0 || st.Epsilon["regional_operator"] != "inf" || st.BudgetRemaining != 7 {
		t.Errorf("status ε %v, remaining %v; want public 3, regional_operator \"inf\", remaining 7", st.Epsilon, st.BudgetRemaining)
	}
	if len(st.AuditHead) != 64 || len(st.Members) != 1 || !st.Members[0].Leader {
		t.Errorf("status audit head %q, members %+v", st.AuditHead, st.Members)
	}
	var rounds []map[string]any
	if err := json.Unmarshal(get(t, s, "/api/v1/rounds").Body.Bytes(), &rounds); err != nil || len(rounds) != 3 {
		t.Fatalf("rounds: %v, %d entries, want 3", err, len(rounds))
	}
	if rounds[2]["status"] != "open" || rounds[0]["model"] == nil {
		t.Errorf("rounds: %v", rounds)
	}
	svg := get(t, s, "/api/v1/charts/epsilon.svg")
	if ct := svg.Header().Get("Content-Type"); ct != "image/svg+xml" || !strings.HasPrefix(svg.Body.String(), `<svg data-chart="epsilon" data-points="fellow_clients:2 global_operator:2 open:1 public:2 regional_operator:0"`) {
		t.Errorf("epsilon chart: %s %.120s", ct, svg.Body)
	}
	if w := get(t, s, "/api/v1/charts/nope.svg"); w.Code != 404 || !strings.Contains(w.Body.String(), "charts are epsilon") {
		t.Errorf("unknown chart: %d %s", w.Code, w.Body)
	}
	var pol metrics.Policy
	if err := json.Unmarshal(get(t, s, "/api/v1/policy").Body.Bytes(), &pol); err != nil || !pol.OK || pol.Rounds != 5 {
		t.Errorf("policy: %v %+v", err, pol)
	}
	if w := get(t, s, "/"); !strings.Contains(w.Body.String(), `id="chart-epsilon"`) || w.Header().Get("Content-Security-Policy") == "" {
		t.Errorf("page: %d %.200s", w.Code, w.Body)
	}
	if w := get(t, s, "/static/app.js"); w.Code != 200 || !strings.Contains(w.Body.String(), "EventSource") {
		t.Errorf("app.js: %d", w.Code)
	}
}

func TestEventsStreamAnnouncesTheVersion(t *testing.T) {
	s, err := New(Config{Tracker: testTracker(t, metrics.Alerts{})})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/api/v1/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	r := bufio.NewReader(resp.Body)
	var lines []string
	for len(lines) < 2 {
		line, err := r.ReadString('\n')
		if err != nil && err != io.EOF {
			t.Fatal(err)
		}
		lines = append(lines, strings.TrimSpace(line))
	}
	if lines[0] != "event: update" || !strings.HasPrefix(lines[1], `data: {"version":`) {
		t.Errorf("first event: %q", lines)
	}
}

func TestCollectorAndAlerts(t *testing.T) {
	// ε public is 3 of a budget of 10: a fraction of 0.25 fires, 0.9 does not.
	for _, tc := range []struct {
		fraction float64
		firing   float64
	}{{0.25, 1}, {0.9, 0}} {
		g := testTracker(t, metrics.Alerts{EpsilonFraction: tc.fraction})
		reg := prometheus.NewRegistry()
		reg.MustRegister(g)
		fams, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]float64{}
		for _, f := range fams {
			for _, m := range f.Metric {
				key := f.GetName() + labels(m)
				switch {
				case m.Counter != nil:
					got[key] = m.Counter.GetValue()
				case m.Gauge != nil:
					got[key] = m.Gauge.GetValue()
				}
			}
		}
		for k, want := range map[string]float64{
			"strata_rounds_opened_total":                       3,
			"strata_rounds_completed_total":                    2,
			"strata_participants_total":                        4,
			"strata_round_open":                                1,
			"strata_epsilon_spent{observer=public}":            3,
			"strata_epsilon_spent{observer=regional_operator}": math.Inf(1),
			"strata_epsilon_budget_remaining":                  7,
			"strata_raft_leader":                               1,
			"strata_alert_firing{alert=epsilon_public}":        tc.firing,
			"strata_alert_threshold{alert=epsilon_public}":     tc.fraction * 10,
			"strata_clients{status=active}":                    2,
			"strata_model_version{which=latest}":               2,
			"strata_noise_multiplier{tier=regional}":           0.7,
			"strata_policy_violations":                         0,
		} {
			if v, ok := got[k]; !ok || v != want {
				t.Errorf("fraction %v: %s = %v (present %v), want %v", tc.fraction, k, v, ok, want)
			}
		}
	}
}

func labels(m *dto.Metric) string {
	if len(m.Label) == 0 {
		return ""
	}
	var parts []string
	for _, l := range m.Label {
		parts = append(parts, l.GetName()+"="+l.GetValue())
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func TestAlertsValidate(t *testing.T) {
	for _, tc := range []struct {
		a    metrics.Alerts
		flag string
	}{
		{metrics.Alerts{EpsilonFraction: 1.5}, "--alert-epsilon-fraction"},
		{metrics.Alerts{EpsilonFraction: math.NaN()}, "--alert-epsilon-fraction"},
		{metrics.Alerts{RejectionRate: -0.1}, "--alert-rejection-rate"},
		{metrics.Alerts{RoundSeconds: math.Inf(1)}, "--alert-round-seconds"},
	} {
		err := tc.a.WithDefaults(60).Validate()
		if err == nil || !strings.Contains(err.Error(), tc.flag) {
			t.Errorf("%+v: got %v, want an error naming %s", tc.a, err, tc.flag)
		}
	}
	if err := (metrics.Alerts{}).WithDefaults(60).Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
}
