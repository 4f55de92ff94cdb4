// Package dashboard serves the global tier's web page and its JSON API
// (/api/v1/...). Everything the page needs ships in the binary (embed): the
// charts are drawn server-side as SVG with gonum/plot (package report), so
// there is no JavaScript chart library to vendor, audit or keep up to date,
// and the dashboard, the report and a test all draw the same charts from
// the same ledger. The page is a few lines of plain JavaScript that inline
// those SVGs and re-fetch when the server-sent event stream
// (/api/v1/events) says the ledger changed.
package dashboard

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/observe/metrics"
	"github.com/strata-fl/strata/observe/report"
)

//go:embed static
var static embed.FS

// ErrConfig is wrapped by every error about a Config.
var ErrConfig = errors.New("dashboard: invalid configuration")

// Config configures the dashboard. Zero fields take the defaults given
// with each.
type Config struct {
	// Tracker is the global tier's tracker (ledger, partials, alerts,
	// policy); required.
	Tracker *metrics.Global
	// Heartbeat is how often an idle event stream gets a comment line so
	// proxies keep it open; default 15s, ≥ 0.
	Heartbeat time.Duration
	// Logger receives the server's warnings; nil is silent.
	Logger *slog.Logger
}

// Validate names the field that is wrong. Zero fields are valid where they
// have a default.
func (c Config) Validate() error {
	switch {
	case c.Tracker == nil:
		return fmt.Errorf("%w: Config.Tracker is required", ErrConfig)
	case c.Heartbeat < 0:
		return fmt.Errorf("%w: Config.Heartbeat %v: want ≥ 0 (0 means 15s)", ErrConfig, c.Heartbeat)
	}
	return nil
}

// withDefaults returns a copy of c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.Heartbeat == 0 {
		c.Heartbeat = 15 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Server is the dashboard's HTTP handler.
type Server struct {
	cfg Config
	g   *metrics.Global
	mux *http.ServeMux

	mu     sync.Mutex
	cached uint64
	charts map[string][]byte
}

// Charts the dashboard draws, by the name in /api/v1/charts/NAME.svg.
var Charts = []string{"epsilon", "metric", "loss", "participation", "rejections"}

// New checks the configuration (Validate) and builds the routes.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	s := &Server{cfg: cfg, g: cfg.Tracker, mux: http.NewServeMux(), charts: map[string][]byte{}}
	sub, err := fs.Sub(static, "static")
	if err != nil {
		return nil, err
	}
	files := http.FileServerFS(sub)
	s.mux.Handle("GET /static/", http.StripPrefix("/static/", files))
	s.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'")
		http.ServeFileFS(w, r, sub, "index.html")
	})
	s.mux.HandleFunc("GET /api/v1/status", s.status)
	s.mux.HandleFunc("GET /api/v1/rounds", s.rounds)
	s.mux.HandleFunc("GET /api/v1/alerts", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, s.g.Alerts()) })
	s.mux.HandleFunc("GET /api/v1/policy", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, s.g.Policy()) })
	s.mux.HandleFunc("GET /api/v1/charts/{name}", s.chart)
	s.mux.HandleFunc("GET /api/v1/events", s.events)
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(append(b, '\n'))
}

// Member is one raft voter.
type Member struct {
	ID     string `json:"id"`
	Addr   string `json:"addr"`
	Leader bool   `json:"leader"`
}

// Status is GET /api/v1/status.
type Status struct {
	Version  uint64           `json:"version"` // increases with every change the event stream announces
	Node     string           `json:"node"`
	LeaderID string           `json:"leader_id"`
	Raft     global.RaftStats `json:"raft"`
	Members  []Member         `json:"members"`
	Job      *ledger.Job      `json:"job"`
	Rounds   struct {
		Opened    int     `json:"opened"`
		Committed int     `json:"committed"`
		Aborted   int     `json:"aborted"`
		Planned   int     `json:"planned"`
		Open      *uint64 `json:"open"` // the round open now, if any
	} `json:"rounds"`
	Finished        bool                             `json:"finished"`
	FinishReason    string                           `json:"finish_reason,omitempty"`
	Epsilon         ledger.PerObserver[report.Float] `json:"epsilon"`
	Budget          report.Float                     `json:"budget"`
	BudgetRemaining report.Float                     `json:"budget_remaining"`
	ServingVersion  uint64                           `json:"serving_version"`
	LatestVersion   uint64                           `json:"latest_version"`
	Metric          string                           `json:"metric"` // the latest model's primary metric
	Value           *float64                         `json:"value"`  // and its value
	Loss            *float64                         `json:"loss"`
	Noise           ledger.Noise                     `json:"noise"`     // multipliers ×C of the latest round (or the plan before any)
	ClipNorm        float64                          `json:"clip_norm"` // of the latest round (or the plan)
	AuditHead       string                           `json:"audit_head"`
	AuditRecords    int                              `json:"audit_records"`
	Clients         map[string]int                   `json:"clients"`
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	n := s.g.Node()
	t := s.g.Topology()
	st := Status{Version: s.g.Version(), Raft: n.RaftStats(), Noise: ledger.Noise(t.Privacy.Noise), ClipNorm: t.Privacy.ClipNorm,
		Budget: report.Float(t.Privacy.Budget), Clients: map[string]int{}, Members: []Member{}}
	ns := n.Status()
	st.Node, st.LeaderID = ns.ID, ns.LeaderID
	for _, m := range ns.Members {
		st.Members = append(st.Members, Member{ID: m.ID, Addr: m.Addr, Leader: m.ID == ns.LeaderID})
	}
	n.Read(func(l *ledger.Ledger) {
		if l.Job != nil {
			j := *l.Job
			st.Job = &j
			st.Budget = report.Float(j.Budget)
			st.Rounds.Planned = j.PlannedRounds
		} else {
			st.Rounds.Planned = t.Train.Rounds
		}
		for _, e := range l.Rounds {
			st.Rounds.Opened++
			switch e.Status {
			case "committed":
				st.Rounds.Committed++
			case "aborted":
				st.Rounds.Aborted++
			case "open":
				rn := e.Round
				st.Rounds.Open = &rn
			}
		}
		if k := len(l.Rounds); k > 0 {
			st.Noise, st.ClipNorm = l.Rounds[k-1].Noise, l.Rounds[k-1].ClipNorm
		}
		st.Finished, st.FinishReason = l.Finished, l.FinishReason
		for _, o := range ledger.Observers {
			st.Epsilon.Set(o, report.Float(l.Spent(o)))
		}
		st.BudgetRemaining = st.Budget - st.Epsilon.Public
		st.ServingVersion, st.LatestVersion = l.Serving, l.LatestVersion()
		if k := len(l.Models); k > 0 {
			m := l.Models[k-1]
			name, v := m.Primary()
			st.Metric, st.Value, st.Loss = name, &v, &m.Loss
		}
		st.AuditHead, st.AuditRecords = l.AuditHead(), len(l.Audit)
		for _, c := range l.Clients {
			st.Clients[c.Status]++
		}
	})
	writeJSON(w, st)
}

// RoundView is one element of GET /api/v1/rounds.
type RoundView struct {
	report.Round
	// RegionCounts is what each region reported (accepted, rejected by
	// reason), for rounds whose partials this node saw.
	RegionCounts map[string]metrics.RegionRound `json:"region_counts,omitempty"`
	// DurationSeconds is how long the round took to close, for rounds this
	// node watched close.
	DurationSeconds *float64 `json:"duration_seconds,omitempty"`
}

func (s *Server) ledgerRounds() []report.Round {
	var rounds []report.Round
	s.g.Node().Read(func(l *ledger.Ledger) { rounds = report.Rounds(l) })
	return rounds
}

func (s *Server) rounds(w http.ResponseWriter, r *http.Request) {
	rounds := s.ledgerRounds()
	regions := s.g.Regions(rounds)
	durs := s.g.Durations()
	out := make([]RoundView, 0, len(rounds))
	for _, rd := range rounds {
		v := RoundView{Round: rd, RegionCounts: regions[rd.Round]}
		if d, ok := durs[rd.Round]; ok {
			v.DurationSeconds = &d
		}
		out = append(out, v)
	}
	writeJSON(w, out)
}

// chart serves /api/v1/charts/NAME.svg, cached until the next change.
func (s *Server) chart(w http.ResponseWriter, r *http.Request) {
	name, ok := strings.CutSuffix(r.PathValue("name"), ".svg")
	known := false
	for _, c := range Charts {
		known = known || c == name
	}
	if !ok || !known {
		http.Error(w, fmt.Sprintf("no chart %q: charts are %s (as NAME.svg)", r.PathValue("name"), strings.Join(Charts, ", ")), http.StatusNotFound)
		return
	}
	b, err := s.render(name)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "image/svg+xml")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(b)
}

func (s *Server) render(name string) ([]byte, error) {
	v := s.g.Version()
	s.mu.Lock()
	if s.cached != v {
		s.cached, s.charts = v, map[string][]byte{}
	}
	b, ok := s.charts[name]
	s.mu.Unlock()
	if ok {
		return b, nil
	}
	rounds := s.ledgerRounds()
	var c report.Chart
	var err error
	switch name {
	case "epsilon":
		budget := s.g.Topology().Privacy.Budget
		s.g.Node().Read(func(l *ledger.Ledger) {
			if l.Job != nil {
				budget = l.Job.Budget
			}
		})
		c, err = report.EpsilonChart(rounds, budget, "svg")
	case "metric":
		c, err = report.MetricChart(rounds, "svg")
	case "loss":
		c, err = report.LossChart(rounds, "svg")
	case "participation", "rejections":
		regions := s.g.Regions(rounds)
		if name == "participation" {
			per := map[uint64]map[string]int{}
			for rd, m := range regions {
				per[rd] = map[string]int{}
				for id, rr := range m {
					per[rd][id] = rr.Accepted
				}
			}
			c, err = report.ParticipationChart(rounds, per, "svg")
		} else {
			per := map[uint64]map[string]int{}
			for rd, m := range regions {
				per[rd] = map[string]int{}
				for _, rr := range m {
					for reason, k := range rr.Rejected {
						per[rd][reason] += k
					}
				}
			}
			c, err = report.RejectionsChart(rounds, per, "svg")
		}
	}
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.cached == v {
		s.charts[name] = c.Bytes
	}
	s.mu.Unlock()
	return c.Bytes, nil
}

// events streams "update" events (data: {"version": N}) whenever the ledger
// or the per-region figures change, at most every 200ms.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	changed, stop := s.g.Watch()
	defer stop()
	send := func() bool {
		_, err := fmt.Fprintf(w, "event: update\ndata: {\"version\":%d}\n\n", s.g.Version())
		fl.Flush()
		return err == nil
	}
	if !send() {
		return
	}
	hb := time.NewTicker(s.cfg.Heartbeat)
	defer hb.Stop()
	ctx := r.Context()
	for {
		select {
		case <-ctx.Done():
			return
		case <-hb.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return
			}
			fl.Flush()
		case <-changed:
			if !send() {
				return
			}
			select { // coalesce bursts (a round's partials arrive together)
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
}

// Serve is a convenience for a role: it binds addr, logs the URL through
// announce and serves the dashboard until ctx ends.
func Serve(ctx context.Context, addr string, s *Server, announce func(url string)) error {
	hs, err := metrics.Listen(addr, s)
	if err != nil {
		return fmt.Errorf("dashboard: %w", err)
	}
	if announce != nil {
		announce(hs.URL())
	}
	return hs.Serve(ctx)
}
