package metrics

import (
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-fl/strata/edge"
	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/regional"
)

// constant metric helpers: the collectors below read the tiers' own state
// at scrape time and emit it as const metrics.
type emitter struct{ ch chan<- prometheus.Metric }

func (e emitter) emit(name, help string, t prometheus.ValueType, v float64, labels ...string) {
	var keys, vals []string
	for i := 0; i+1 < len(labels); i += 2 {
		keys, vals = append(keys, labels[i]), append(vals, labels[i+1])
	}
	d := prometheus.NewDesc(name, help, keys, nil)
	e.ch <- prometheus.MustNewConstMetric(d, t, v, vals...)
}

func (e emitter) gauge(name, help string, v float64, labels ...string) {
	e.emit(name, help, prometheus.GaugeValue, v, labels...)
}

func (e emitter) counter(name, help string, v float64, labels ...string) {
	e.emit(name, help, prometheus.CounterValue, v, labels...)
}

// connStats emits a NATS connection's traffic (or several connections'
// sum) for one role.
func (e emitter) connStats(role string, s nats.Statistics) {
	e.counter("strata_nats_bytes_total", "Bytes this role's NATS connections sent (out) and received (in).", float64(s.InBytes), "role", role, "direction", "in")
	e.counter("strata_nats_bytes_total", "Bytes this role's NATS connections sent (out) and received (in).", float64(s.OutBytes), "role", role, "direction", "out")
	e.counter("strata_nats_messages_total", "Messages this role's NATS connections sent (out) and received (in).", float64(s.InMsgs), "role", role, "direction", "in")
	e.counter("strata_nats_messages_total", "Messages this role's NATS connections sent (out) and received (in).", float64(s.OutMsgs), "role", role, "direction", "out")
}

// collectPartials emits what this node's coordinator did with the
// regions' partials: accepted (and the updates they carried, and those
// their regions reported rejected) and refused, by reason.
func (g *Global) collectPartials(e emitter) {
	pc := g.cfg.Node.PartialCounts()
	label := func(region string) string {
		if region == "" {
			return "unknown"
		}
		return region
	}
	for region, n := range pc.Accepted {
		e.counter("strata_global_partials_total", "Partials this node's coordinator accepted from each region.", float64(n), "region", region)
	}
	for region, n := range pc.Updates {
		e.counter("strata_global_region_updates_accepted_total", "Updates each region summed in the partials this node's coordinator accepted.", float64(n), "region", region)
	}
	for region, m := range pc.UpdatesRejected {
		for reason, n := range cleanRejected(m) {
			e.counter("strata_global_region_updates_rejected_total", "Updates each region reported rejected in the partials this node's coordinator accepted, by reason.", float64(n), "region", region, "reason", reason)
		}
	}
	e.counter("strata_global_control_drops_total", "Control requests (membership, rollback, enrolment) this node's full queue turned away.", float64(g.cfg.Node.ControlDrops()))
	for region, m := range pc.Rejected {
		for reason, n := range m {
			e.counter("strata_global_partials_rejected_total", "Partials this node's coordinator refused, by region (unknown: none of the topology's) and reason.", float64(n), "region", label(region), "reason", reason)
		}
	}
}

// Describe sends nothing: the collectors here are unchecked, as their
// label sets (observers, reasons, regions) follow the job.
func (g *Global) Describe(chan<- *prometheus.Desc) {}

// Collect reads the ledger and raft state.
func (g *Global) Collect(ch chan<- prometheus.Metric) {
	e := emitter{ch}
	g.roundSeconds.Collect(ch)
	g.collectPartials(e)
	n := g.cfg.Node
	g.cfg.Node.Read(func(l *ledger.Ledger) {
		opened, committed, aborted, participants, open := 0, 0, 0, 0, 0
		for _, r := range l.Rounds {
			opened++
			switch r.Status {
			case "committed":
				committed++
				participants += r.Participants
			case "aborted":
				aborted++
			case "open":
				open = 1
			}
		}
		e.counter("strata_rounds_opened_total", "Rounds opened (and so charged) in the ledger.", float64(opened))
		e.counter("strata_rounds_completed_total", "Rounds that released a model.", float64(committed))
		e.counter("strata_rounds_aborted_total", "Rounds aborted (their spend kept).", float64(aborted))
		e.gauge("strata_round_open", "1 while a round is open.", float64(open))
		e.counter("strata_participants_total", "Client updates merged into committed rounds, as the ledger recorded them.", float64(participants))
		if l.Job != nil {
			e.gauge("strata_rounds_planned", "Rounds the job plans.", float64(l.Job.PlannedRounds))
			e.gauge("strata_epsilon_budget", "The job's budget: public ε.", l.Job.Budget)
			e.gauge("strata_epsilon_budget_remaining", "Budget minus the public ε spent.", l.Job.Budget-l.Spent(ledger.Public))
			e.gauge("strata_delta", "The job's δ.", l.Job.Delta)
		}
		for _, o := range ledger.Observers {
			e.gauge("strata_epsilon_spent", "Cumulative ε against each observer (+Inf: unprotected).", l.Spent(o), "observer", string(o))
		}
		status := map[string]int{ledger.ClientActive: 0, ledger.ClientRetired: 0, ledger.ClientWithdrawn: 0}
		for _, c := range l.Clients {
			status[c.Status]++
		}
		for s, k := range status {
			e.gauge("strata_clients", "Enrolled clients by status (retired: left the population for budget).", float64(k), "status", s)
		}
		e.gauge("strata_model_version", "Model versions: serving (new rounds train from it) and latest recorded.", float64(l.Serving), "which", "serving")
		e.gauge("strata_model_version", "Model versions: serving (new rounds train from it) and latest recorded.", float64(l.LatestVersion()), "which", "latest")
		if k := len(l.Models); k > 0 {
			m := l.Models[k-1]
			metrics := m.Metrics
			if len(metrics) == 0 {
				name, v := m.Primary()
				metrics = []ledger.Metric{{Name: name, Value: v}}
			}
			for _, x := range metrics {
				e.gauge("strata_model_metric", "Evaluation metrics of the latest model version, by the task's names (accuracy, perplexity, …).", x.Value, "name", x.Name)
			}
			e.gauge("strata_model_loss", "Evaluation loss of the latest model version.", m.Loss)
		}
		if k := len(l.Rounds); k > 0 {
			r := l.Rounds[k-1]
			e.gauge("strata_noise_multiplier", "Noise multiplier (×C) per tier of the latest round.", r.Noise.Edge, "tier", "edge")
			e.gauge("strata_noise_multiplier", "Noise multiplier (×C) per tier of the latest round.", r.Noise.Regional, "tier", "regional")
			e.gauge("strata_noise_multiplier", "Noise multiplier (×C) per tier of the latest round.", r.Noise.Global, "tier", "global")
			e.gauge("strata_clip_norm", "Clip norm C of the latest round.", r.ClipNorm)
		}
		e.gauge("strata_audit_records", "Records in the hash-chained audit trail.", float64(len(l.Audit)))
		e.gauge("strata_job_finished", "1 once the ledger records the job as finished.", b2f(l.Finished))
	})
	rs := n.RaftStats()
	e.gauge("strata_raft_leader", "1 if this node is the raft leader.", b2f(rs.State == "Leader"))
	for _, s := range []string{"Leader", "Follower", "Candidate", "Shutdown"} {
		e.gauge("strata_raft_state", "This node's raft state (1 for the current one).", b2f(rs.State == s), "state", s)
	}
	e.gauge("strata_raft_term", "Current raft term.", float64(rs.Term))
	e.gauge("strata_raft_last_index", "Last raft log index.", float64(rs.LastIndex))
	e.gauge("strata_raft_commit_index", "Raft commit index.", float64(rs.CommitIndex))
	e.gauge("strata_raft_applied_index", "Last index the ledger applied.", float64(rs.AppliedIndex))
	e.gauge("strata_raft_apply_lag", "Commit index minus applied index.", float64(rs.CommitIndex)-float64(min(rs.AppliedIndex, rs.CommitIndex)))
	if ms, err := n.Members(); err == nil {
		e.gauge("strata_raft_members", "Voters in the raft configuration.", float64(len(ms)))
	}
	e.gauge("strata_policy_violations", "Policy rules the topology breaks (strata check).", float64(len(g.policy.Violations)))
	for _, a := range g.Alerts() {
		e.gauge("strata_alert_firing", "1 while the alert's value is past its threshold.", b2f(a.Firing), "alert", a.Name)
		e.gauge("strata_alert_value", "The value an alert watches.", float64(a.Value), "alert", a.Name)
		e.gauge("strata_alert_threshold", "An alert's threshold.", float64(a.Threshold), "alert", a.Name)
	}
	if g.cfg.Traffic != nil {
		e.connStats("global", g.cfg.Traffic.Stats())
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Regional collects one regional runner's counters and its aggregation
// latency (through OnPartial).
type Regional struct {
	region  string
	runner  *regional.Runner
	conn    *nats.Conn
	latency prometheus.Histogram
}

// NewRegional makes a collector for one region; call SetRunner once the
// runner exists (its Config.OnPartial should be r.OnPartial).
func NewRegional(region string, conn *nats.Conn) *Regional {
	return &Regional{region: region, conn: conn, latency: prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "strata_regional_aggregation_seconds", Help: "Time from a round's opening at the region to its partial being published.",
		Buckets: prometheus.ExponentialBuckets(0.05, 2, 14), ConstLabels: prometheus.Labels{"region": region},
	})}
}

// SetRunner attaches the runner whose Stats are exported.
func (r *Regional) SetRunner(rn *regional.Runner) { r.runner = rn }

// OnPartial observes aggregation latency; use it as regional.Config.OnPartial.
func (r *Regional) OnPartial(_ *wire.Partial, elapsed time.Duration) {
	r.latency.Observe(elapsed.Seconds())
}

// Describe implements prometheus.Collector (unchecked).
func (r *Regional) Describe(chan<- *prometheus.Desc) {}

// Collect implements prometheus.Collector.
func (r *Regional) Collect(ch chan<- prometheus.Metric) {
	r.latency.Collect(ch)
	e := emitter{ch}
	if r.runner != nil {
		s := r.runner.Stats()
		e.counter("strata_regional_updates_accepted_total", "Client updates the region accepted.", float64(s.Accepted), "region", r.region)
		for _, reason := range keys(s.Rejected) {
			e.counter("strata_regional_updates_rejected_total", "Client updates the region rejected, by reason.", float64(s.Rejected[reason]), "region", r.region, "reason", reason)
		}
		e.counter("strata_regional_partials_total", "Partials the region published.", float64(s.Partials), "region", r.region)
		e.gauge("strata_regional_queue_depth", "Messages waiting in the region's queue.", float64(s.Queued), "region", r.region)
		e.counter("strata_regional_queue_drops_total", "Messages dropped because the region's queue was full.", float64(s.QueueDrops), "region", r.region)
		e.counter("strata_regional_slow_consumer_drops_total", "Messages NATS dropped because the region fell behind.", float64(s.SlowConsumerDrops), "region", r.region)
		e.counter("strata_regional_stray_chunks_total", "Chunks of no staged stream.", float64(s.StrayChunks), "region", r.region)
		e.counter("strata_regional_secagg_sessions_total", "Secure-aggregation sessions that delivered the survivors' sum.", float64(s.SecAggSessions), "region", r.region)
		for _, reason := range keys(s.SecAggFailed) {
			e.counter("strata_regional_secagg_failures_total", "Secure-aggregation sessions that ended without a sum (the region contributed nothing), by reason.", float64(s.SecAggFailed[reason]), "region", r.region, "reason", reason)
		}
	}
	if r.conn != nil {
		e.connStats("regional-"+r.region, r.conn.Stats())
	}
}

func keys(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// Edge collects a fleet's counters and the traffic of all its
// connections (gathered through mesh.Dialer.OnConnect).
type Edge struct {
	fleetName string
	fleet     *edge.Fleet
	mu        sync.Mutex
	conns     []*nats.Conn
}

// NewEdge makes a collector for a fleet named name (its region, or "all").
func NewEdge(name string) *Edge { return &Edge{fleetName: name} }

// OnConnect records a connection; use it as mesh.Dialer.OnConnect.
func (e *Edge) OnConnect(nc *nats.Conn) {
	e.mu.Lock()
	e.conns = append(e.conns, nc)
	e.mu.Unlock()
}

// SetFleet attaches the fleet whose Stats are exported.
func (e *Edge) SetFleet(f *edge.Fleet) { e.fleet = f }

// Describe implements prometheus.Collector (unchecked).
func (e *Edge) Describe(chan<- *prometheus.Desc) {}

// Collect implements prometheus.Collector.
func (e *Edge) Collect(ch chan<- prometheus.Metric) {
	em := emitter{ch}
	if e.fleet != nil {
		s := e.fleet.Stats()
		em.counter("strata_edge_updates_published_total", "Updates the fleet's clients published.", float64(s.Published), "fleet", e.fleetName)
		em.counter("strata_edge_updates_failed_total", "Client rounds that failed (training, fetching or publishing).", float64(s.Failed), "fleet", e.fleetName)
		em.counter("strata_edge_queue_drops_total", "Round announcements dropped because the fleet's queue was full.", float64(s.QueueDrops), "fleet", e.fleetName)
	}
	e.mu.Lock()
	var sum nats.Statistics
	for _, nc := range e.conns {
		s := nc.Stats()
		sum.InBytes += s.InBytes
		sum.OutBytes += s.OutBytes
		sum.InMsgs += s.InMsgs
		sum.OutMsgs += s.OutMsgs
	}
	k := len(e.conns)
	e.mu.Unlock()
	em.gauge("strata_edge_connections", "NATS connections the fleet opened.", float64(k), "fleet", e.fleetName)
	em.connStats("edge-"+e.fleetName, sum)
}

// NATS collects an embedded NATS server's statistics.
type NATS struct{ s *server.Server }

// NewNATS makes a collector for a running server.
func NewNATS(s *server.Server) *NATS { return &NATS{s: s} }

// Describe implements prometheus.Collector (unchecked).
func (n *NATS) Describe(chan<- *prometheus.Desc) {}

// Collect implements prometheus.Collector.
func (n *NATS) Collect(ch chan<- prometheus.Metric) {
	v, err := n.s.Varz(nil)
	if err != nil {
		return
	}
	e := emitter{ch}
	e.gauge("strata_nats_server_connections", "Client connections open.", float64(v.Connections))
	e.counter("strata_nats_server_bytes_total", "Bytes the server received (in) and sent (out).", float64(v.InBytes), "direction", "in")
	e.counter("strata_nats_server_bytes_total", "Bytes the server received (in) and sent (out).", float64(v.OutBytes), "direction", "out")
	e.counter("strata_nats_server_messages_total", "Messages the server received (in) and sent (out).", float64(v.InMsgs), "direction", "in")
	e.counter("strata_nats_server_messages_total", "Messages the server received (in) and sent (out).", float64(v.OutMsgs), "direction", "out")
	e.counter("strata_nats_server_slow_consumers_total", "Clients the server cut off as slow consumers.", float64(v.SlowConsumers))
	e.gauge("strata_nats_server_subscriptions", "Subscriptions.", float64(v.Subscriptions))
}
