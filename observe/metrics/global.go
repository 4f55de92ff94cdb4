package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/observe/report"
	"github.com/strata-fl/strata/topology"
)

// ErrConfig is wrapped by every error about a GlobalConfig.
var ErrConfig = errors.New("metrics: invalid configuration")

// GlobalConfig configures the global tier's tracker and collector. Zero
// fields take the defaults given with each.
type GlobalConfig struct {
	// Node is the global node whose ledger is tracked; required.
	Node *global.Node
	// Conn is ignored. The tracker once listened to the regions' partials
	// on it and counted them, whether or not the coordinator merged them;
	// it now reports what this node's coordinator accepted and refused
	// (Node.PartialCounts), and for rounds it did not coordinate, the
	// provenance the ledger records. Kept so that callers still compile.
	Conn *nats.Conn
	// Traffic, when set, is the coordinator's connection, whose byte and
	// message counters are exported as the global role's. Nil: none.
	Traffic *nats.Conn
	// Topology is the job's plan (regions, budget, round timeout);
	// required.
	Topology *topology.Topology
	// Dim is the model's parameter count, for the policy check; ≥ 0.
	Dim int
	// Alerts are the thresholds checked after every round; zero fields
	// take Alerts.WithDefaults of the topology's round timeout, and the
	// result must pass Alerts.Validate.
	Alerts Alerts
	// Poll is how often the ledger is checked for change; default 250ms,
	// ≥ 0. Round durations are measured to within it.
	Poll time.Duration
	// Logger receives the tracker's warnings; nil is silent.
	Logger *slog.Logger
}

// Validate names the field that is wrong. Zero fields are valid where they
// have a default.
func (c GlobalConfig) Validate() error {
	switch {
	case c.Node == nil:
		return fmt.Errorf("%w: GlobalConfig.Node is required", ErrConfig)
	case c.Topology == nil:
		return fmt.Errorf("%w: GlobalConfig.Topology is required", ErrConfig)
	case c.Dim < 0:
		return fmt.Errorf("%w: GlobalConfig.Dim %d: want ≥ 0 parameters", ErrConfig, c.Dim)
	case c.Poll < 0:
		return fmt.Errorf("%w: GlobalConfig.Poll %v: want ≥ 0 (0 means 250ms)", ErrConfig, c.Poll)
	}
	if err := c.Alerts.WithDefaults(c.Topology.Round.Timeout.Seconds()).Validate(); err != nil {
		return fmt.Errorf("%w: GlobalConfig.Alerts: %w", ErrConfig, err)
	}
	return nil
}

// withDefaults returns a copy of c with zero fields set to their defaults;
// c.Topology must be set.
func (c GlobalConfig) withDefaults() GlobalConfig {
	c.Alerts = c.Alerts.WithDefaults(c.Topology.Round.Timeout.Seconds())
	if c.Poll == 0 {
		c.Poll = 250 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// RegionRound is what one region reported for one round.
type RegionRound struct {
	Accepted int            `json:"accepted"`
	Rejected map[string]int `json:"rejected"`
}

// Policy is the `strata check` result of the running topology.
type Policy struct {
	Rounds     int                              `json:"rounds"`
	Delta      float64                          `json:"delta"`
	Epsilon    ledger.PerObserver[report.Float] `json:"projected_epsilon"`
	Sigma      ledger.PerObserver[report.Float] `json:"sigma"`
	Violations []global.Violation               `json:"violations"`
	OK         bool                             `json:"ok"`
	Error      string                           `json:"error,omitempty"`
}

// Global tracks the global tier for metrics and the dashboard: it polls the
// ledger (round durations, change notifications) and reads what this
// node's coordinator did with the regions' partials (per-region
// participation and rejections). It is a prometheus.Collector.
type Global struct {
	cfg    GlobalConfig
	policy Policy

	mu        sync.Mutex
	durations map[uint64]float64
	seen      map[uint64]string // round → status when last polled
	applied   uint64
	logged    uint64 // Node.PartialCounts().Rounds when last polled
	version   uint64
	started   time.Time // rounds opened after it were opened while watched
	watchers  map[chan struct{}]struct{}

	roundSeconds prometheus.Histogram
}

// NewGlobal checks the configuration (Validate) and runs the policy check
// once.
func NewGlobal(cfg GlobalConfig) (*Global, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	g := &Global{
		cfg: cfg, durations: map[uint64]float64{}, seen: map[uint64]string{},
		watchers: map[chan struct{}]struct{}{},
		roundSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "strata_round_duration_seconds", Help: "Time from a round's opening (ledger) to its commit or abort, for rounds closed while this node watched.",
			Buckets: prometheus.ExponentialBuckets(0.25, 2, 12),
		}),
	}
	g.policy = checkPolicy(cfg.Topology, cfg.Dim)
	g.started = time.Now()
	return g, nil
}

func checkPolicy(t *topology.Topology, dim int) Policy {
	p, vs, err := global.Check(t, dim)
	out := Policy{Rounds: p.Rounds, Delta: p.Delta, Epsilon: report.Floats(p.Epsilon), Sigma: report.Floats(p.Sigma), Violations: vs, OK: err == nil && len(vs) == 0}
	if out.Violations == nil {
		out.Violations = []global.Violation{}
	}
	if err != nil {
		out.Error = err.Error()
	}
	return out
}

// Node is the tracked node.
func (g *Global) Node() *global.Node { return g.cfg.Node }

// Topology is the topology the node runs.
func (g *Global) Topology() *topology.Topology { return g.cfg.Topology }

// Policy is the policy check of the topology.
func (g *Global) Policy() Policy { return g.policy }

// Run polls the ledger and the node's partial counts until ctx ends.
func (g *Global) Run(ctx context.Context) error {
	t := time.NewTicker(g.cfg.Poll)
	defer t.Stop()
	for {
		g.poll()
		select {
		case <-ctx.Done():
			g.poll() // what the last moments changed
			return nil
		case <-t.C:
		}
	}
}

// cleanRejected keeps the reasons a region reported tidy as label values.
func cleanRejected(m map[string]int) map[string]int {
	out := map[string]int{}
	for reason, n := range m {
		if n > 0 {
			out[reasonLabel(reason)] += n
		}
	}
	return out
}

// reasonLabel keeps a rejection reason as it is when it looks like one
// (lower-case letters and underscores, at most 32) and calls it "other"
// otherwise.
func reasonLabel(r string) string {
	if len(r) == 0 || len(r) > 32 {
		return "other"
	}
	for _, c := range r {
		if (c < 'a' || c > 'z') && c != '_' {
			return "other"
		}
	}
	return r
}

// poll notices ledger changes, rounds that closed since the last poll, and
// rounds the node's coordinator reported.
func (g *Global) poll() {
	now := time.Now()
	if logged := g.cfg.Node.PartialCounts().Rounds; logged != g.loggedSeen() {
		g.mu.Lock()
		g.logged = logged
		g.bumpLocked()
		g.mu.Unlock()
	}
	var applied uint64
	type st struct {
		round  uint64
		status string
		opened int64
	}
	var rounds []st
	g.cfg.Node.Read(func(l *ledger.Ledger) {
		applied = l.Applied
		if applied == g.appliedSeen() {
			return
		}
		for _, r := range l.Rounds {
			rounds = append(rounds, st{r.Round, r.Status, r.OpenedUnixMs})
		}
	})
	g.mu.Lock()
	defer g.mu.Unlock()
	if applied == g.applied {
		return
	}
	g.applied = applied
	for _, r := range rounds {
		prev, known := g.seen[r.round]
		g.seen[r.round] = r.status
		// A round closed since the last poll: timed if it was seen open, or
		// opened (by its ledger time) after watching began — a round
		// shorter than one poll interval.
		wasOpen := prev == "open" || (!known && !time.UnixMilli(r.opened).Before(g.started.Truncate(time.Millisecond)))
		if r.status != "open" && (!known || prev == "open") && wasOpen {
			d := now.Sub(time.UnixMilli(r.opened)).Seconds()
			g.durations[r.round] = d
			g.roundSeconds.Observe(d)
		}
	}
	g.bumpLocked()
}

func (g *Global) loggedSeen() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.logged
}

func (g *Global) appliedSeen() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.applied
}

func (g *Global) bumpLocked() {
	g.version++
	for w := range g.watchers {
		select {
		case w <- struct{}{}:
		default: // already signalled
		}
	}
}

// Watch returns a channel signalled (coalesced) whenever the ledger or the
// per-region figures change, and a function that stops the signals.
func (g *Global) Watch() (<-chan struct{}, func()) {
	c := make(chan struct{}, 1)
	g.mu.Lock()
	g.watchers[c] = struct{}{}
	g.mu.Unlock()
	return c, func() {
		g.mu.Lock()
		delete(g.watchers, c)
		g.mu.Unlock()
	}
}

// Version increases with every change Watch signals.
func (g *Global) Version() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.version
}

// Regions returns the per-region figures of the given rounds: what this
// node's coordinator accepted of each region (its updates, and those it
// reported rejected by reason), or, for a committed round another node
// coordinated, the partials the ledger records as merged (accepted counts
// only). For a committed round only the regions whose partial the ledger
// says was merged are kept, so the regions' accepted counts add up to the
// round's participants.
func (g *Global) Regions(rounds []report.Round) map[uint64]map[string]RegionRound {
	out := map[uint64]map[string]RegionRound{}
	for _, r := range rounds {
		keep := map[string]RegionRound{}
		if merged, ok := g.cfg.Node.RoundPartials(r.Round); ok {
			for _, mp := range merged {
				if r.Status == "committed" && !contains(r.Regions, mp.Region) {
					continue
				}
				keep[mp.Region] = RegionRound{Accepted: mp.Count, Rejected: cleanRejected(mp.Rejected)}
			}
		} else if r.Model != nil && len(r.Model.Partials) > 0 {
			for _, p := range r.Model.Partials {
				keep[p.Region] = RegionRound{Accepted: p.Count, Rejected: map[string]int{}}
			}
		} else {
			continue
		}
		out[r.Round] = keep
	}
	return out
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// Durations returns how long each round this node watched took to close.
func (g *Global) Durations() map[uint64]float64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make(map[uint64]float64, len(g.durations))
	for k, v := range g.durations {
		out[k] = v
	}
	return out
}

// Alerts evaluates every threshold against the ledger and what was seen.
func (g *Global) Alerts() []Alert {
	a := g.cfg.Alerts
	var spent ledger.PerObserver[float64]
	var budget float64
	var rounds []report.Round
	g.cfg.Node.Read(func(l *ledger.Ledger) {
		for _, o := range ledger.Observers {
			spent.Set(o, l.Spent(o))
		}
		budget = g.cfg.Topology.Privacy.Budget
		if l.Job != nil {
			budget = l.Job.Budget
		}
		if n := len(l.Rounds); n > 0 {
			rounds = report.Rounds(&ledger.Ledger{Rounds: l.Rounds[max(0, n-3):]})
		}
	})
	var out []Alert
	for _, o := range ledger.Observers {
		limit, ok := g.cfg.Topology.Policy.MaxEpsilon[string(o)]
		what := "policy.max_epsilon." + string(o)
		if o == ledger.Public {
			limit, ok, what = budget, true, "the budget"
		}
		if !ok {
			continue
		}
		e := spent.Get(o)
		th := a.EpsilonFraction * limit
		out = append(out, Alert{Name: "epsilon_" + string(o), Value: report.Float(e), Threshold: report.Float(th), Firing: e >= th,
			Detail: fmt.Sprintf("ε against %s is %s, %.0f%% of %s (%.4g) fires the alert", o, fmtEps(e), 100*a.EpsilonFraction, what, limit)})
	}
	// The latest round with region figures: rejected / (accepted + rejected).
	regions := g.Regions(rounds)
	rate, seenRound := 0.0, uint64(0)
	for i := len(rounds) - 1; i >= 0; i-- {
		if m, ok := regions[rounds[i].Round]; ok && len(m) > 0 {
			acc, rej := 0, 0
			for _, rr := range m {
				acc += rr.Accepted
				for _, n := range rr.Rejected {
					rej += n
				}
			}
			if acc+rej > 0 {
				rate = float64(rej) / float64(acc+rej)
			}
			seenRound = rounds[i].Round
			break
		}
	}
	out = append(out, Alert{Name: "rejection_rate", Value: report.Float(rate), Threshold: report.Float(a.RejectionRate), Firing: rate >= a.RejectionRate,
		Detail: fmt.Sprintf("share of updates the regions rejected in round %d", seenRound)})
	lat, latRound := 0.0, uint64(0)
	for r, d := range g.Durations() {
		if r > latRound {
			lat, latRound = d, r
		}
	}
	out = append(out, Alert{Name: "round_latency", Value: report.Float(lat), Threshold: report.Float(a.RoundSeconds), Firing: lat > a.RoundSeconds,
		Detail: fmt.Sprintf("seconds round %d took from opening to closing", latRound)})
	return out
}

func fmtEps(e float64) string {
	if math.IsInf(e, 1) {
		return "∞"
	}
	return fmt.Sprintf("%.4g", e)
}
