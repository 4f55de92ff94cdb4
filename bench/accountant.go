package bench

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"time"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/privacy"
	"github.com/strata-fl/strata/topology"
)

// AccountantConfig sizes the accountant scenario.
type AccountantConfig struct {
	// Rounds are the schedule lengths timed with each accountant, each
	// ≥ 1; default 10…10 000 (quick: 10…1000).
	Rounds []int
	// Clients are the ledger sizes of the per-client part, each ≥ 1;
	// default 1e3, 1e4, 1e5 (quick: 1e3, 1e4).
	Clients []int
	// LedgerRounds is how many rounds each ledger records; default 20
	// (quick 5), ≥ 0.
	LedgerRounds int
	// Q (in (0, 1]) and Sigma (finite > 0) are the mechanism (default:
	// the default job's public observer, q = 0.05, σ = 1.04); Delta the δ,
	// in (0, 1) (default 1e-5).
	Q, Sigma, Delta float64
}

// Validate names the field that is wrong. Zero fields are valid: they take
// their defaults.
func (c AccountantConfig) Validate() error {
	if err := checkInts("AccountantConfig.Rounds", c.Rounds, 1, math.MaxInt32); err != nil {
		return err
	}
	if err := checkInts("AccountantConfig.Clients", c.Clients, 1, math.MaxInt32); err != nil {
		return err
	}
	switch {
	case c.LedgerRounds < 0:
		return fmt.Errorf("%w: AccountantConfig.LedgerRounds %d: want ≥ 0 (0 means 20, quick 5)", ErrConfig, c.LedgerRounds)
	case c.Q != 0 && !(c.Q > 0 && c.Q <= 1):
		return fmt.Errorf("%w: AccountantConfig.Q %v: want a sampling rate in (0, 1] (0 means 0.05)", ErrConfig, c.Q)
	case c.Sigma != 0 && !(c.Sigma > 0 && finite(c.Sigma)):
		return fmt.Errorf("%w: AccountantConfig.Sigma %v: want finite > 0 (0 means 1.04)", ErrConfig, c.Sigma)
	case c.Delta != 0 && !(c.Delta > 0 && c.Delta < 1):
		return fmt.Errorf("%w: AccountantConfig.Delta %v: want δ in (0, 1) (0 means 1e-5)", ErrConfig, c.Delta)
	}
	return nil
}

// AccountantRow is one timing: Kind "schedule" (an accountant over a
// schedule of Rounds steps) or "ledger" (per-client accounting of a
// ledger of Clients clients).
type AccountantRow struct {
	Kind       string  `json:"kind"`
	Accountant string  `json:"accountant"`
	Rounds     int     `json:"rounds"`
	Clients    int     `json:"clients"`
	Epsilon    float64 `json:"epsilon"`
	Millis     float64 `json:"ms"` // one ε computation (schedule) or one pass over every client (ledger)
	// Ledger rows: the mean raft-free Apply of one OpenRound, the ε of
	// every client, per client, and the snapshot's size.
	ApplyMs       float64 `json:"apply_open_round_ms"`
	PerClientUs   float64 `json:"per_client_us"`
	SnapshotBytes int     `json:"snapshot_bytes"`
	SnapshotMs    float64 `json:"snapshot_ms"`
}

// withDefaults returns a copy of c with zero fields set to their defaults
// (full-size, or quick).
func (c AccountantConfig) withDefaults(quick bool) AccountantConfig {
	if len(c.Rounds) == 0 {
		c.Rounds = []int{10, 100, 1000, 10000}
		if quick {
			c.Rounds = []int{10, 100, 1000}
		}
	}
	if len(c.Clients) == 0 {
		c.Clients = []int{1e3, 1e4, 1e5}
		if quick {
			c.Clients = []int{1e3, 1e4}
		}
	}
	if c.LedgerRounds <= 0 {
		c.LedgerRounds = 20
		if quick {
			c.LedgerRounds = 5
		}
	}
	if c.Q == 0 {
		c.Q = 0.05
	}
	if c.Sigma == 0 {
		c.Sigma = 1.04
	}
	if c.Delta == 0 {
		c.Delta = 1e-5
	}
	return c
}

// Accountant times the RDP and PLD accountants over schedules of growing
// length, and the ledger's per-client accounting (every client's ε per
// observer) over ledgers of growing population. The reference beside each
// timing is the other accountant on the same schedule, and the ε both
// report (PLD is the tighter; RDP is what the ledger composes exactly).
func Accountant(ctx context.Context, env Env, cfg AccountantConfig) (Output, error) {
	if err := cfg.Validate(); err != nil {
		return Output{}, err
	}
	cfg = cfg.withDefaults(env.Quick)
	out := begin("accountant", env, cfg)
	bar := NewProgress(env.Progress, "accountant", 2*len(cfg.Rounds)+len(cfg.Clients))
	var rows []AccountantRow
	accs := []privacy.Accountant{privacy.NewRDP(), privacy.NewPLD()}
	for _, n := range cfg.Rounds {
		for _, acc := range accs {
			if err := ctx.Err(); err != nil {
				return out, err
			}
			bar.Label("%s, %d rounds", acc.Name(), n)
			parts := []privacy.Part{{Q: cfg.Q, Sigma: cfg.Sigma, Steps: n}}
			// The best of 3 (the first call of a process also builds the
			// accountant's tables).
			var eps float64
			best := time.Duration(math.MaxInt64)
			for range 3 {
				start := time.Now()
				e, err := acc.Epsilon(parts, cfg.Delta)
				best = min(best, time.Since(start))
				if err != nil {
					return out, fmt.Errorf("bench accountant: %s over %d rounds: %w", acc.Name(), n, err)
				}
				eps = e
			}
			rows = append(rows, AccountantRow{Kind: "schedule", Accountant: acc.Name(), Rounds: n, Epsilon: eps, Millis: best.Seconds() * 1e3})
			bar.Step()
		}
	}
	for _, n := range cfg.Clients {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		bar.Label("ledger of %d clients", n)
		r, err := ledgerRow(n, cfg)
		if err != nil {
			return out, err
		}
		rows = append(rows, r)
		bar.Step()
	}
	bar.Done()
	out.Report.Rows = rows

	ts := Table{Title: fmt.Sprintf("accountant: ε of a schedule (q = %g, σ = %g, δ = %g)", cfg.Q, cfg.Sigma, cfg.Delta),
		Header: []string{"rounds", "accountant", "ε", "ms"}}
	tl := Table{Title: fmt.Sprintf("accountant: per-client accounting in the ledger (%d rounds, q = %g)", cfg.LedgerRounds, cfg.Q),
		Header: []string{"clients", "ε (public, every client)", "Apply OpenRound ms", "all clients ms", "µs/client", "snapshot MB", "snapshot ms"}}
	fig := Figure{Name: "accountant_rounds", Title: "Accounting time vs rounds", XLabel: "rounds", YLabel: "ms per ε", LogX: true, LogY: true}
	figL := Figure{Name: "accountant_clients", Title: "Per-client accounting vs clients in the ledger", XLabel: "clients", YLabel: "ms", LogX: true, LogY: true}
	ser := map[string]*Series{}
	var allc, apply Series
	allc.Name, apply.Name = "ε of every client", "Apply one OpenRound"
	for _, r := range rows {
		switch r.Kind {
		case "schedule":
			ts.Add(r.Rounds, r.Accountant, r.Epsilon, r.Millis)
			s, ok := ser[r.Accountant]
			if !ok {
				s = &Series{Name: r.Accountant}
				ser[r.Accountant] = s
			}
			s.X, s.Y = append(s.X, float64(r.Rounds)), append(s.Y, r.Millis)
		case "ledger":
			tl.Add(r.Clients, r.Epsilon, r.ApplyMs, r.Millis, r.PerClientUs, float64(r.SnapshotBytes)/1e6, r.SnapshotMs)
			allc.X, allc.Y = append(allc.X, float64(r.Clients)), append(allc.Y, r.Millis)
			apply.X, apply.Y = append(apply.X, float64(r.Clients)), append(apply.Y, r.ApplyMs)
		}
	}
	for _, a := range accs {
		if s := ser[a.Name()]; s != nil {
			fig.Series = append(fig.Series, *s)
		}
	}
	figL.Series = []Series{allc, apply}
	out.Tables = []Table{ts, tl}
	out.Figures = []Figure{fig, figL}
	out.end()
	return out, nil
}

// ledgerRow builds a ledger of n clients over 10 regions, records rounds
// that Poisson-sample them at rate q (curves from the real accountant,
// as the coordinator computes them), and times Apply and every client's ε.
func ledgerRow(n int, cfg AccountantConfig) (AccountantRow, error) {
	row := AccountantRow{Kind: "ledger", Accountant: "rdp", Rounds: cfg.LedgerRounds, Clients: n}
	l := ledger.New()
	orders := privacy.Orders()
	if res := l.Apply(1, &ledger.StartJob{Job: ledger.Job{Name: "bench", ConfigHash: "bench", Delta: cfg.Delta, Budget: 1e9, Population: n,
		PlannedRounds: cfg.LedgerRounds, Accountant: "rdp", Orders: orders}}); res.Err != nil {
		return row, res.Err
	}
	const regions = 10
	ids := make([]string, 0, n)
	for r := range regions {
		for i := range (n + regions - 1 - r) / regions {
			ids = append(ids, topology.ClientID(fmt.Sprintf("r%d", r), i))
		}
	}
	sort.Strings(ids)
	es := make([]ledger.Enrollment, len(ids))
	for i, id := range ids {
		es[i] = ledger.Enrollment{ID: id, Region: id[:2], Budget: 1e9}
	}
	if res := l.Apply(2, &ledger.EnrollClients{Clients: es, Purpose: "bench", UnixMs: 1}); res.Err != nil {
		return row, res.Err
	}
	pub := privacy.RDPStep(cfg.Q, cfg.Sigma)
	gop := privacy.RDPStep(1, cfg.Sigma)
	inf := make([]float64, len(orders))
	for i := range inf {
		inf[i] = math.Inf(1)
	}
	cum := make([]float64, len(orders))
	rng := rand.New(rand.NewPCG(uint64(n), 1))
	var applyTotal time.Duration
	index := uint64(3)
	for round := 1; round <= cfg.LedgerRounds; round++ {
		var sampled []string
		for _, id := range ids {
			if rng.Float64() < cfg.Q {
				sampled = append(sampled, id)
			}
		}
		for i := range cum {
			cum[i] += pub[i]
		}
		eps, _, err := privacy.EpsilonFromRDP(cum, cfg.Delta)
		if err != nil {
			return row, err
		}
		open := &ledger.OpenRound{Round: uint64(round), ModelVersion: uint64(round - 1), Sampled: len(sampled), Q: cfg.Q, ClipNorm: 1,
			Noise: ledger.Noise{Global: cfg.Sigma}, Sigma: ledger.PerObserver[float64]{Public: cfg.Sigma, GlobalOperator: cfg.Sigma},
			RDP:          ledger.PerObserver[[]float64]{Public: pub, GlobalOperator: gop, RegionalOperator: inf},
			EpsilonAfter: ledger.PerObserver[float64]{Public: eps, GlobalOperator: math.Inf(1), RegionalOperator: math.Inf(1)},
			OpenedUnixMs: int64(round), Eligible: n, SampledClients: sampled}
		start := time.Now()
		res := l.Apply(index, open)
		applyTotal += time.Since(start)
		if res.Err != nil {
			return row, fmt.Errorf("bench accountant: round %d: %w", round, res.Err)
		}
		index++
		if res := l.Apply(index, &ledger.CommitModel{Round: uint64(round), Version: uint64(round), Hash: "h", Participants: len(sampled)}); res.Err != nil {
			return row, fmt.Errorf("bench accountant: commit %d: %w", round, res.Err)
		}
		index++
	}
	row.ApplyMs = applyTotal.Seconds() * 1e3 / float64(cfg.LedgerRounds)
	start := time.Now()
	maxEps := 0.0
	for _, id := range ids {
		e, err := l.ClientEpsilon(id)
		if err != nil {
			return row, err
		}
		maxEps = max(maxEps, e.Public)
	}
	el := time.Since(start)
	row.Millis = el.Seconds() * 1e3
	row.PerClientUs = el.Seconds() * 1e6 / float64(n)
	row.Epsilon = maxEps
	start = time.Now()
	snap, err := l.Snapshot()
	if err != nil {
		return row, err
	}
	row.SnapshotMs = time.Since(start).Seconds() * 1e3
	row.SnapshotBytes = len(snap)
	return row, nil
}
