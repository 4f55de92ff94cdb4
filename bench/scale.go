package bench

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"runtime/debug"
)

// ScaleConfig sizes the scale scenario. Zero fields take the defaults
// given with each.
type ScaleConfig struct {
	// Clients are the total client counts, spread over Regions regions
	// (each at least Regions); default 100, 1000, 10 000 (quick: 100,
	// 1000).
	Clients []int
	// Ds are the model sizes, each ≥ 1; default 1e3, 1e4, 1e5 (quick:
	// 1e3, 1e4).
	Ds []int
	// MaxND skips pairs whose N·d exceeds it, finite and ≥ 0; default
	// 1e9.
	MaxND float64
	// Regions the clients are spread over; default 10, ≥ 0.
	Regions int
	// RegionSweep are region counts (each ≥ 1) run at SweepClients
	// clients (at least every count) and SweepD parameters (≥ 1); nil
	// means 1, 3, 10 at 1000 × 1e4 (quick: 1, 10 at 100 × 1e3), empty
	// runs no sweep.
	RegionSweep  []int
	SweepClients int
	SweepD       int
	// Rounds measured per point after a warm-up; default 3 (quick 2), ≥ 0.
	Rounds int
	// GlobalNodes of the raft tier; default 1 (raft with its bolt store,
	// in-memory transport), ≥ 0. 3 runs a raft cluster over TCP loopback
	// inside the same process: on a loaded 2-core machine the load
	// generator then starves its heartbeats and elections abort rounds
	// (docs/benchmarks.md).
	GlobalNodes int
}

// Validate names the field that is wrong. Zero fields are valid: they take
// their defaults.
func (c ScaleConfig) Validate() error {
	regions := c.Regions
	if regions == 0 {
		regions = 10
	}
	switch {
	case c.Regions < 0:
		return fmt.Errorf("%w: ScaleConfig.Regions %d: want ≥ 1 (0 means 10)", ErrConfig, c.Regions)
	case !(c.MaxND >= 0) || !finite(c.MaxND):
		return fmt.Errorf("%w: ScaleConfig.MaxND %v: want finite ≥ 0 (0 means 1e9)", ErrConfig, c.MaxND)
	case c.Rounds < 0:
		return fmt.Errorf("%w: ScaleConfig.Rounds %d: want ≥ 0 (0 means 3, quick 2)", ErrConfig, c.Rounds)
	case c.GlobalNodes < 0:
		return fmt.Errorf("%w: ScaleConfig.GlobalNodes %d: want ≥ 1 (0 means 1)", ErrConfig, c.GlobalNodes)
	}
	if err := checkInts("ScaleConfig.Clients", c.Clients, regions, math.MaxInt32); err != nil {
		return fmt.Errorf("%w (at least one client in each of ScaleConfig.Regions %d)", err, regions)
	}
	if err := checkInts("ScaleConfig.Ds", c.Ds, 1, math.MaxInt32); err != nil {
		return err
	}
	if len(c.RegionSweep) > 0 {
		if err := checkInts("ScaleConfig.RegionSweep", c.RegionSweep, 1, max(1, c.SweepClients)); err != nil {
			return fmt.Errorf("%w (at most ScaleConfig.SweepClients %d)", err, c.SweepClients)
		}
		if c.SweepD < 1 {
			return fmt.Errorf("%w: ScaleConfig.SweepD %d: want ≥ 1 with a RegionSweep", ErrConfig, c.SweepD)
		}
	}
	return nil
}

// ScaleRow is one point: N clients (one NATS connection each) in R
// regions, model size d, every client sampled every round.
type ScaleRow struct {
	Clients      int     `json:"clients"`
	Regions      int     `json:"regions"`
	D            int     `json:"d"`
	ND           float64 `json:"n_d"`
	Participants int     `json:"participants"`
	P50          float64 `json:"p50_s"`
	P95          float64 `json:"p95_s"`
	Max          float64 `json:"max_s"`
	// Memory of the whole process (server, raft, regions, every client):
	// the highest VmRSS sampled during the run, the same less the RSS
	// before the mesh started, and the Go heap in use.
	PeakRSS    int64   `json:"peak_rss_bytes"`
	RSSGrowth  int64   `json:"rss_growth_bytes"`
	PeakHeap   uint64  `json:"peak_heap_bytes"`
	ConnectSec float64 `json:"connect_s"`
	Goroutines int     `json:"goroutines"`
	// Raft commit latency of a barrier entry through the global tier
	// (log append with fsync to bolt, and the quorum when GlobalNodes > 1),
	// probed every 50 ms while the rounds ran.
	RaftProbes int     `json:"raft_probes"`
	RaftP50    float64 `json:"raft_commit_p50_ms"`
	RaftP99    float64 `json:"raft_commit_p99_ms"`
	Sweep      bool    `json:"region_sweep"`
	// LeaderChanges counts raft elections during the run (the machine's
	// load can starve heartbeats); a round in flight is then aborted.
	LeaderChanges int `json:"leader_changes"`
	// SlowConsumers counts connections the NATS server cut off for falling
	// behind; MinParticipants is the smallest round (below N when updates
	// were lost and the round ended at its deadline).
	SlowConsumers   int `json:"slow_consumers"`
	MinParticipants int `json:"min_participants"`
	Aborted         int `json:"aborted_rounds"`
}

// withDefaults returns a copy of c with zero fields set to their defaults
// (full-size, or quick).
func (c ScaleConfig) withDefaults(quick bool) ScaleConfig {
	if len(c.Clients) == 0 {
		c.Clients = []int{100, 1000, 10000}
		if quick {
			c.Clients = []int{100, 1000}
		}
	}
	if len(c.Ds) == 0 {
		c.Ds = []int{1e3, 1e4, 1e5}
		if quick {
			c.Ds = []int{1e3, 1e4}
		}
	}
	if c.MaxND == 0 {
		c.MaxND = 1e9
	}
	if c.Regions == 0 {
		c.Regions = 10
	}
	if c.RegionSweep == nil {
		c.RegionSweep, c.SweepClients, c.SweepD = []int{1, 3, 10}, 1000, 1e4
		if quick {
			c.RegionSweep, c.SweepClients, c.SweepD = []int{1, 10}, 100, 1e3
		}
	}
	if c.Rounds <= 0 {
		c.Rounds = 3
		if quick {
			c.Rounds = 2
		}
	}
	if c.GlobalNodes == 0 {
		c.GlobalNodes = 1
	}
	return c
}

// Scale runs the synthetic mesh at growing N and d in one process — every
// simulated client with its own NATS connection — and fits log(round
// time) against log(N·d): a slope of 1 is cost proportional to the bytes
// moved; below 1, fixed per-round costs (raft commits, pings, the model's
// store) still dominate the small points.
func Scale(ctx context.Context, env Env, cfg ScaleConfig) (Output, error) {
	if err := cfg.Validate(); err != nil {
		return Output{}, err
	}
	cfg = cfg.withDefaults(env.Quick)
	out := begin("scale", env, cfg)
	type point struct {
		n, r, d int
		sweep   bool
	}
	var pts []point
	for _, n := range cfg.Clients {
		for _, d := range cfg.Ds {
			if float64(n)*float64(d) <= cfg.MaxND {
				pts = append(pts, point{n, cfg.Regions, d, false})
			}
		}
	}
	for _, r := range cfg.RegionSweep {
		if r != cfg.Regions || !containsInt(cfg.Clients, cfg.SweepClients) || !containsInt(cfg.Ds, cfg.SweepD) {
			pts = append(pts, point{cfg.SweepClients, r, cfg.SweepD, true})
		}
	}
	bar := NewProgress(env.Progress, "scale", len(pts)*(cfg.Rounds+1))
	var rows []ScaleRow
	for i, p := range pts {
		bar.Label("N=%d in %d regions, d=%d: connecting", p.n, p.r, p.d)
		debug.FreeOSMemory()
		res, err := runSynth(ctx, synthConfig{Regions: p.r, PerRegion: p.n / p.r, Dim: p.d, Rounds: cfg.Rounds, GlobalNodes: cfg.GlobalNodes,
			ProbeRaft: true, Dir: filepath.Join(env.TempDir, fmt.Sprintf("scale-%d", i)),
			OnRound: func(done, total int) {
				bar.Label("N=%d in %d regions, d=%d: round %d/%d", p.n, p.r, p.d, done, total)
				bar.Step()
			}})
		if err != nil {
			if ctx.Err() != nil {
				return out, err
			}
			// One point failing (a NATS request timing out on an
			// overloaded machine) is recorded and the others still run.
			out.Report.Notes = append(out.Report.Notes, fmt.Sprintf("N=%d in %d regions, d=%d failed: %v", p.n, p.r, p.d, err))
			continue
		}
		row := ScaleRow{Clients: p.r * (p.n / p.r), Regions: p.r, D: p.d, Participants: res.Participants,
			P50: percentile(res.RoundSeconds, 0.5), P95: percentile(res.RoundSeconds, 0.95), Max: percentile(res.RoundSeconds, 1),
			PeakRSS: res.PeakRSS, RSSGrowth: res.PeakRSS - res.BaseRSS, PeakHeap: res.PeakHeap, ConnectSec: res.ConnectSec,
			Goroutines: res.Goroutines, RaftProbes: len(res.RaftMs), Sweep: p.sweep, LeaderChanges: res.LeaderChanges,
			SlowConsumers: res.SlowConsumers, MinParticipants: res.MinParticipants, Aborted: res.Aborted}
		row.ND = float64(row.Clients) * float64(p.d)
		if len(res.RaftMs) > 0 {
			row.RaftP50, row.RaftP99 = percentile(res.RaftMs, 0.5), percentile(res.RaftMs, 0.99)
		}
		rows = append(rows, row)
	}
	bar.Done()
	if len(rows) == 0 {
		return out, fmt.Errorf("bench scale: every point failed: %v", out.Report.Notes)
	}
	out.Report.Rows = rows

	var x, y []float64
	for _, r := range rows {
		if !r.Sweep && r.Regions == cfg.Regions {
			x, y = append(x, r.ND), append(y, r.P50)
		}
	}
	slope, icpt, r2 := FitLogLog(x, y)
	out.Report.Summary = map[string]float64{}
	if !math.IsNaN(slope) {
		out.Report.Summary["loglog_slope_round_s_vs_nd"] = slope
		out.Report.Summary["loglog_r2"] = r2
	}
	maxN := 0
	for _, r := range rows {
		maxN = max(maxN, r.Clients)
	}
	out.Report.Summary["max_clients"] = float64(maxN)

	t := Table{Title: fmt.Sprintf("scale: one process, one NATS connection per client, %d-node raft global tier, q = 1, %d rounds per point", cfg.GlobalNodes, cfg.Rounds),
		Header: []string{"N", "regions", "d", "N·d", "p50 s", "p95 s", "peak RSS MiB", "RSS growth MiB", "heap MiB", "connect s", "raft p50 ms", "raft p99 ms", "elections", "min part.", "slow cons.", "aborted"}}
	for _, r := range rows {
		t.Add(r.Clients, r.Regions, r.D, r.ND, r.P50, r.P95, r.PeakRSS>>20, r.RSSGrowth>>20, r.PeakHeap>>20, r.ConnectSec, r.RaftP50, r.RaftP99, r.LeaderChanges, r.MinParticipants, r.SlowConsumers, r.Aborted)
	}
	if !math.IsNaN(slope) {
		t.Title += fmt.Sprintf("\nfitted log-log slope of round time vs N·d: %.3f (R² %.3f, %d points)", slope, r2, len(x))
	}
	fig := Figure{Name: "scale_cost", Title: "Round cost vs N·d", XLabel: "N·d (clients × parameters)", YLabel: "seconds per round (p50)", LogX: true, LogY: true}
	byD := map[int]*Series{}
	for _, r := range rows {
		if r.Sweep || r.Regions != cfg.Regions {
			continue
		}
		s, ok := byD[r.D]
		if !ok {
			s = &Series{Name: fmt.Sprintf("d = %.0e", float64(r.D))}
			byD[r.D] = s
		}
		s.X, s.Y = append(s.X, r.ND), append(s.Y, r.P50)
	}
	for _, d := range cfg.Ds {
		if s := byD[d]; s != nil {
			fig.Series = append(fig.Series, *s)
		}
	}
	if !math.IsNaN(slope) {
		lo, hi := x[0], x[0]
		for _, v := range x {
			lo, hi = min(lo, v), max(hi, v)
		}
		fig.Series = append(fig.Series, Series{Name: fmt.Sprintf("fit: slope %.2f", slope), Dashed: true,
			X: []float64{lo, hi}, Y: []float64{math.Exp(icpt) * math.Pow(lo, slope), math.Exp(icpt) * math.Pow(hi, slope)}})
	}
	mem := Figure{Name: "scale_memory", Title: "Process memory vs clients", XLabel: "clients N", YLabel: "peak RSS (MiB)", LogX: true}
	memByD := map[int]*Series{}
	for _, r := range rows {
		if r.Sweep || r.Regions != cfg.Regions {
			continue
		}
		s, ok := memByD[r.D]
		if !ok {
			s = &Series{Name: fmt.Sprintf("d = %.0e", float64(r.D))}
			memByD[r.D] = s
		}
		s.X, s.Y = append(s.X, float64(r.Clients)), append(s.Y, float64(r.PeakRSS)/(1<<20))
	}
	for _, d := range cfg.Ds {
		if s := memByD[d]; s != nil {
			mem.Series = append(mem.Series, *s)
		}
	}
	reg := Figure{Name: "scale_regions", Title: fmt.Sprintf("Round time vs regions (N = %d, d = %d)", cfg.SweepClients, cfg.SweepD), XLabel: "regions", YLabel: "seconds per round (p50)"}
	var rs Series
	rs.Name = "p50"
	for _, r := range rows {
		if r.Clients == cfg.SweepClients && r.D == cfg.SweepD {
			rs.X, rs.Y = append(rs.X, float64(r.Regions)), append(rs.Y, r.P50)
		}
	}
	reg.Series = []Series{rs}
	for _, n := range out.Report.Notes {
		t.Title += "\n" + n
	}
	out.Tables = []Table{t}
	out.Figures = []Figure{fig, mem, reg}
	out.end()
	return out, nil
}

func containsInt(v []int, x int) bool {
	for _, e := range v {
		if e == x {
			return true
		}
	}
	return false
}
