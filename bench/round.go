package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime/debug"
)

// Shape is one synthetic topology of the round and scale scenarios.
type Shape struct {
	Regions   int `json:"regions"`
	PerRegion int `json:"per_region"`
	D         int `json:"d"`
}

// RoundConfig sizes the round scenario.
type RoundConfig struct {
	// Shapes default to 1×10, 1×100 and 10×100 clients at d = 1e4, 1e5,
	// 1e6 and 10×1000 at d = 1e4, 1e5 (quick: 1×10 at 1e4 and 1e5, 2×20
	// at 1e4); every count and d of a shape ≥ 1.
	Shapes []Shape
	// Rounds measured per shape after a warm-up round; default 5 (quick
	// 3), ≥ 0.
	Rounds int
	// MaxND skips shapes whose clients × parameters exceed it, finite and
	// ≥ 0; 0 (default) keeps all.
	MaxND float64
}

// Validate names the field that is wrong. Zero fields are valid: they take
// their defaults.
func (c RoundConfig) Validate() error {
	for i, s := range c.Shapes {
		if s.Regions < 1 || s.PerRegion < 1 || s.D < 1 {
			return fmt.Errorf("%w: RoundConfig.Shapes[%d] %d×%d clients, d = %d: want every one ≥ 1", ErrConfig, i, s.Regions, s.PerRegion, s.D)
		}
	}
	switch {
	case c.Rounds < 0:
		return fmt.Errorf("%w: RoundConfig.Rounds %d: want ≥ 0 (0 means 5, quick 3)", ErrConfig, c.Rounds)
	case !(c.MaxND >= 0) || !finite(c.MaxND):
		return fmt.Errorf("%w: RoundConfig.MaxND %v: want finite ≥ 0 (0 keeps every shape)", ErrConfig, c.MaxND)
	}
	return nil
}

// RoundRow is one shape's round latency.
type RoundRow struct {
	Shape
	Clients        int     `json:"clients"`
	Participants   int     `json:"participants"`
	Rounds         int     `json:"rounds"`
	P50            float64 `json:"p50_s"`
	P95            float64 `json:"p95_s"`
	P99            float64 `json:"p99_s"`
	Mean           float64 `json:"mean_s"`
	RoundsPerMin   float64 `json:"rounds_per_min"`
	UpdateMBs      float64 `json:"update_mb_s"` // float32 update bytes into the regions per second of round
	PeakRSS        int64   `json:"peak_rss_bytes"`
	ConnectSeconds float64 `json:"connect_s"`
	// MinParticipants is the smallest round; SlowConsumers the connections
	// the server cut off for falling behind.
	MinParticipants int `json:"min_participants"`
	Aborted         int `json:"aborted_rounds"`
	SlowConsumers   int `json:"slow_consumers"`
}

// withDefaults returns a copy of c with zero fields set to their defaults
// (full-size, or quick) and the shapes above MaxND dropped.
func (c RoundConfig) withDefaults(quick bool) RoundConfig {
	if len(c.Shapes) == 0 {
		if quick {
			c.Shapes = []Shape{{1, 10, 1e4}, {1, 10, 1e5}, {2, 20, 1e4}}
		} else {
			for _, rc := range [][2]int{{1, 10}, {1, 100}, {10, 100}} {
				for _, d := range []int{1e4, 1e5, 1e6} {
					c.Shapes = append(c.Shapes, Shape{rc[0], rc[1], d})
				}
			}
			c.Shapes = append(c.Shapes, Shape{10, 1000, 1e4}, Shape{10, 1000, 1e5})
		}
	}
	if c.MaxND > 0 {
		var kept []Shape
		for _, s := range c.Shapes {
			if float64(s.Regions*s.PerRegion)*float64(s.D) <= c.MaxND {
				kept = append(kept, s)
			}
		}
		c.Shapes = kept
	}
	if c.Rounds <= 0 {
		c.Rounds = 5
		if quick {
			c.Rounds = 3
		}
	}
	return c
}

// RoundScenario measures end-to-end round latency — the coordinator's
// write-ahead raft commit, round.open to every region and client, every
// client's update over NATS, the regions' checks, sums and noise, the
// merge, the model's store in JetStream and its commit — with clients that
// do no training, every client sampled every round (q = 1).
func RoundScenario(ctx context.Context, env Env, cfg RoundConfig) (Output, error) {
	if err := cfg.Validate(); err != nil {
		return Output{}, err
	}
	cfg = cfg.withDefaults(env.Quick)
	out := begin("round", env, cfg)
	bar := NewProgress(env.Progress, "round", len(cfg.Shapes)*(cfg.Rounds+1))
	var rows []RoundRow
	for i, s := range cfg.Shapes {
		bar.Label("%d×%d clients, d=%d", s.Regions, s.PerRegion, s.D)
		debug.FreeOSMemory()
		r, err := runSynth(ctx, synthConfig{Regions: s.Regions, PerRegion: s.PerRegion, Dim: s.D, Rounds: cfg.Rounds,
			Dir: filepath.Join(env.TempDir, fmt.Sprintf("round-%d", i)), OnRound: func(int, int) { bar.Step() }})
		if err != nil {
			return out, fmt.Errorf("bench round %d×%d d=%d: %w", s.Regions, s.PerRegion, s.D, err)
		}
		row := RoundRow{Shape: s, Clients: s.Regions * s.PerRegion, Participants: r.Participants, Rounds: len(r.RoundSeconds),
			P50: percentile(r.RoundSeconds, 0.5), P95: percentile(r.RoundSeconds, 0.95), P99: percentile(r.RoundSeconds, 0.99),
			PeakRSS: r.PeakRSS, ConnectSeconds: r.ConnectSec, MinParticipants: r.MinParticipants, SlowConsumers: r.SlowConsumers, Aborted: r.Aborted}
		for _, v := range r.RoundSeconds {
			row.Mean += v / float64(len(r.RoundSeconds))
		}
		row.RoundsPerMin = 60 / row.Mean
		row.UpdateMBs = float64(row.Participants) * 4 * float64(s.D) / row.Mean / 1e6
		rows = append(rows, row)
	}
	bar.Done()
	out.Report.Rows = rows
	t := Table{Title: "round: end-to-end round latency, no local training (q = 1)",
		Header: []string{"regions×clients", "d", "participants", "p50 s", "p95 s", "p99 s", "rounds/min", "update MB/s", "peak RSS MiB", "min part.", "slow cons.", "aborted"}}
	byShape := map[string]*Series{}
	var order []string
	for _, r := range rows {
		t.Add(fmt.Sprintf("%d×%d", r.Regions, r.PerRegion), r.D, r.Participants, r.P50, r.P95, r.P99, r.RoundsPerMin, r.UpdateMBs, r.PeakRSS>>20, r.MinParticipants, r.SlowConsumers, r.Aborted)
		k := fmt.Sprintf("%d×%d clients", r.Regions, r.PerRegion)
		s, ok := byShape[k]
		if !ok {
			s = &Series{Name: k}
			byShape[k] = s
			order = append(order, k)
		}
		s.X, s.Y = append(s.X, float64(r.D)), append(s.Y, r.P50)
	}
	fig := Figure{Name: "round_latency", Title: "Round latency (p50) vs model size", XLabel: "d (parameters)", YLabel: "seconds per round", LogX: true, LogY: true}
	for _, k := range order {
		fig.Series = append(fig.Series, *byShape[k])
	}
	out.Tables = []Table{t}
	out.Figures = []Figure{fig}
	out.end()
	return out, nil
}
