package bench

import (
	"cmp"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/strata-fl/strata/internal/accum"
	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/secagg"
)

// SecAggConfig sizes the secagg scenario.
type SecAggConfig struct {
	// Ns are the clients in one region's session, each 2..secagg.MaxClients;
	// default 10, 100, 1000 (quick: 10, 100).
	Ns []int
	// Ds are the input lengths, each 1..secagg.MaxDim; default 1e4, 1e5,
	// 1e6 (quick: 1e4, 1e5).
	Ds []int
	// Dropout is the fraction of clients that drop before their masked
	// input (the server's worst case: their pairwise masks are rebuilt and
	// removed), in (0, 1); the sessions' parameters are chosen for it.
	// Default 0.3.
	Dropout float64
	// MaskSamples is how many clients' MaskInput are timed per point (the
	// median counts); default 3, ≥ 0.
	MaskSamples int
	// CompleteUpTo runs the same sessions on the complete graph (Bonawitz
	// et al. 2017, k = n-1, work like n²·d) for n up to it, for contrast;
	// default 100 (its setup alone is n² key agreements), negative never.
	CompleteUpTo int
}

// Validate names the field that is wrong. Zero fields are valid: they take
// their defaults.
func (c SecAggConfig) Validate() error {
	if err := checkInts("SecAggConfig.Ns", c.Ns, 2, secagg.MaxClients); err != nil {
		return err
	}
	if err := checkInts("SecAggConfig.Ds", c.Ds, 1, secagg.MaxDim); err != nil {
		return err
	}
	switch {
	case c.Dropout != 0 && !(c.Dropout > 0 && c.Dropout < 1):
		return fmt.Errorf("%w: SecAggConfig.Dropout %v: want a fraction in (0, 1) (0 means 0.3)", ErrConfig, c.Dropout)
	case c.MaskSamples < 0:
		return fmt.Errorf("%w: SecAggConfig.MaskSamples %d: want ≥ 0 (0 means 3)", ErrConfig, c.MaskSamples)
	}
	return nil
}

// withDefaults returns a copy of c with zero fields set to their defaults
// (full-size, or quick).
func (c SecAggConfig) withDefaults(quick bool) SecAggConfig {
	if len(c.Ns) == 0 {
		c.Ns = []int{10, 100, 1000}
		if quick {
			c.Ns = []int{10, 100}
		}
	}
	if len(c.Ds) == 0 {
		c.Ds = []int{1e4, 1e5, 1e6}
		if quick {
			c.Ds = []int{1e4, 1e5}
		}
	}
	if c.Dropout <= 0 || c.Dropout >= 1 {
		c.Dropout = 0.3
	}
	if c.MaskSamples <= 0 {
		c.MaskSamples = 3
	}
	if c.CompleteUpTo == 0 {
		c.CompleteUpTo = 100
	}
	return c
}

// SecAggRow is one (n, d) point: the server's whole session and one
// client's work, beside a plain round's server work (summing the same
// survivors' float32 vectors with the aggregation kernel) and the PRG
// beside the raw AES-128-CTR key stream over the same bytes, all in the
// same run.
type SecAggRow struct {
	N          int `json:"n"`
	D          int `json:"d"`
	K          int `json:"k"` // graph degree used
	T          int `json:"t"`
	Survivors  int `json:"survivors"`
	Expansions int `json:"expansions"` // server PRG vector expansions
	// ServerS is the server's whole session (graph, forwarding, summing
	// masked inputs, rebuilding secrets, removing masks), one core.
	ServerS float64 `json:"server_s"`
	// PlainS is a plain round's server work on the same survivors.
	PlainS          float64 `json:"plain_s"`
	ServerOverPlain float64 `json:"server_over_plain"`
	// NsPerNLogND is ServerS in ns ÷ (n·log2 n·d): flat when the server's
	// work grows like n·log n·d.
	NsPerNLogND float64 `json:"ns_per_nlog2n_d"`
	// NsPerElem is ServerS in ns ÷ the ring elements the server expands
	// and sums, (Expansions + Survivors)·d: flat when the d-dependent work
	// dominates (the secret rebuilding, O(n·k) key agreements, does not
	// depend on d and dominates at small d).
	NsPerElem float64 `json:"ns_per_elem"`
	// ClientKeysS is one client's AdvertiseKeys + ShareKeys (independent
	// of d); ClientMaskS its MaskInput at d (median of MaskSamples).
	ClientKeysS float64 `json:"client_keys_s"`
	ClientMaskS float64 `json:"client_mask_s"`
	// PRG and raw AES-128-CTR throughput over 4·d bytes, GB/s.
	PRGGBs      float64 `json:"prg_gb_s"`
	AESCTRGBs   float64 `json:"aes_ctr_gb_s"`
	PRGOverAES  float64 `json:"prg_time_over_aes_ctr"`
	PlainFloats float64 `json:"plain_gb_s"` // the plain sum's float32 input rate
	// CompleteS and CompleteExpansions are the same session on the
	// complete graph (0 where not run: n above CompleteUpTo).
	CompleteS          float64 `json:"complete_graph_server_s"`
	CompleteExpansions int     `json:"complete_graph_expansions"`
}

// SecAggScenario measures secure aggregation (package secagg) at one
// region: server and client cost vs n and d, with 30% of the clients
// dropping before their masked input, beside a plain round and the
// machine's AES-CTR in the same run. The server's work should grow like
// n·log n·d (SecAgg+, degree k = O(log n)), not n²·d: the summary gives the
// log-log slope of its time against n·log2 n·d.
func SecAggScenario(ctx context.Context, env Env, cfg SecAggConfig) (Output, error) {
	if err := cfg.Validate(); err != nil {
		return Output{}, err
	}
	cfg = cfg.withDefaults(env.Quick)
	out := begin("secagg", env, cfg)
	bar := NewProgress(env.Progress, "secagg", len(cfg.Ns)*(len(cfg.Ds)+1))
	prg := map[int][2]float64{}
	for _, d := range cfg.Ds {
		prg[d] = prgSpeed(d)
	}
	var rows []SecAggRow
	for _, n := range cfg.Ns {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		bar.Label("n=%d: keys and shares", n)
		f, err := newSecAggFixture(n, cfg.Dropout, false)
		if err != nil {
			return out, fmt.Errorf("bench secagg: n = %d: %w", n, err)
		}
		var full *secAggFixture
		if n <= cfg.CompleteUpTo {
			if full, err = newSecAggFixture(n, cfg.Dropout, true); err != nil {
				return out, fmt.Errorf("bench secagg: n = %d, complete graph: %w", n, err)
			}
		}
		bar.Step()
		for _, d := range cfg.Ds {
			if err := ctx.Err(); err != nil {
				return out, err
			}
			bar.Label("n=%d d=%.0e", n, float64(d))
			row, err := f.measure(d, cfg.MaskSamples)
			if err != nil {
				return out, fmt.Errorf("bench secagg: n = %d, d = %d: %w", n, d, err)
			}
			if full != nil {
				fr, err := full.measureServer(d)
				if err != nil {
					return out, fmt.Errorf("bench secagg: n = %d, d = %d, complete graph: %w", n, d, err)
				}
				row.CompleteS, row.CompleteExpansions = fr.ServerS, fr.Expansions
			}
			p := prg[d]
			row.PRGGBs, row.AESCTRGBs, row.PRGOverAES = p[0], p[1], p[1]/p[0]
			rows = append(rows, row)
			bar.Step()
		}
	}
	bar.Done()
	out.Report.Rows = rows
	t := Table{Title: fmt.Sprintf("secagg: one region's session, %.0f%% of clients dropping before their masked input (server on one core)", 100*cfg.Dropout),
		Header: []string{"n", "d", "k", "t", "survivors", "expansions", "server s", "plain s", "server/plain", "ns/(n·log2n·d)", "ns/elem", "client keys ms", "client mask ms", "PRG GB/s", "AES-CTR GB/s", "PRG/AES time", "complete-graph s", "complete/secagg+"}}
	var x, y []float64
	server := Series{Name: "secagg server"}
	plain := Series{Name: "plain round (sum)"}
	client := Series{Name: "client mask"}
	complete := Series{Name: "complete graph (Bonawitz 2017)"}
	for _, r := range rows {
		cs, cr := "-", "-"
		if r.CompleteS > 0 {
			cs, cr = fmt.Sprintf("%.4g", r.CompleteS), fmt.Sprintf("%.3g", r.CompleteS/r.ServerS)
			complete.X, complete.Y = append(complete.X, float64(r.N)*math.Log2(float64(r.N))*float64(r.D)), append(complete.Y, r.CompleteS)
		}
		t.Add(r.N, r.D, r.K, r.T, r.Survivors, r.Expansions, r.ServerS, r.PlainS, r.ServerOverPlain, r.NsPerNLogND, r.NsPerElem, 1e3*r.ClientKeysS, 1e3*r.ClientMaskS, r.PRGGBs, r.AESCTRGBs, r.PRGOverAES, cs, cr)
		w := float64(r.N) * math.Log2(float64(r.N)) * float64(r.D)
		x, y = append(x, w), append(y, r.ServerS)
		server.X, server.Y = append(server.X, w), append(server.Y, r.ServerS)
		plain.X, plain.Y = append(plain.X, w), append(plain.Y, r.PlainS)
		client.X, client.Y = append(client.X, w), append(client.Y, r.ClientMaskS)
	}
	slope, intercept, r2 := FitLogLog(x, y)
	out.Report.Summary = map[string]float64{}
	if !math.IsNaN(slope) {
		out.Report.Summary["server_loglog_slope_vs_nlog2n_d"] = slope
		out.Report.Summary["server_loglog_r2"] = r2
		fit := Series{Name: fmt.Sprintf("fit: slope %.2f", slope), Dashed: true}
		for _, w := range x {
			fit.X, fit.Y = append(fit.X, w), append(fit.Y, math.Exp(intercept)*math.Pow(w, slope))
		}
		fig := Figure{Name: "secagg_server", Title: "SecAgg+ server vs a plain round", XLabel: "n·log2(n)·d", YLabel: "seconds", LogX: true, LogY: true,
			Series: []Series{sortByX(server), sortByX(complete), sortByX(plain), sortByX(client), sortByX(fit)}}
		out.Figures = append(out.Figures, fig)
	}
	// At the largest d the d-dependent work dominates: the slope there
	// is the server's growth in n·log n.
	dmax := slices.Max(cfg.Ds)
	var xd, yd []float64
	for _, r := range rows {
		if r.D == dmax {
			xd, yd = append(xd, float64(r.N)*math.Log2(float64(r.N))), append(yd, r.ServerS)
		}
	}
	if s, _, _ := FitLogLog(xd, yd); !math.IsNaN(s) {
		out.Report.Summary["server_loglog_slope_vs_nlog2n_at_max_d"] = s
	}
	var nl, ne []float64
	for _, r := range rows {
		nl = append(nl, r.NsPerNLogND)
		ne = append(ne, r.NsPerElem)
	}
	if len(ne) > 0 {
		out.Report.Summary["ns_per_elem_min"] = slices.Min(ne)
		out.Report.Summary["ns_per_elem_max"] = slices.Max(ne)
	}
	if len(nl) > 0 {
		out.Report.Summary["ns_per_nlog2n_d_min"] = slices.Min(nl)
		out.Report.Summary["ns_per_nlog2n_d_max"] = slices.Max(nl)
	}
	var ratios []float64
	for _, r := range rows {
		ratios = append(ratios, r.PRGOverAES)
	}
	out.Report.Summary["prg_over_aes_ctr_median"] = percentile(ratios, 0.5)
	out.Report.Notes = append(out.Report.Notes,
		"client mask time is measured in a session of k+1 clients on the complete graph, which gives the client the same k neighbours and k+1 mask expansions as the n-client session",
		"masked inputs are synthetic: the server's work does not depend on their values")
	out.Tables = []Table{t}
	out.end()
	return out, nil
}

// secAggFixture is a session of n clients recorded up to the unmasking
// responses at d = 1, with the dropouts chosen; the server's graph comes
// from a fixed seed, so a fresh server at any d replays it exactly (the
// key and share messages do not depend on d).
type secAggFixture struct {
	p         secagg.Params
	adverts   []*secagg.AdvertiseKeys
	shares    []*secagg.ShareKeys
	survivors []secagg.ID
	responses []*secagg.UnmaskResponse
	keysS     float64
}

const secAggServerSeed = 42

func chacha(seed uint64) *rand.ChaCha8 {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	return rand.NewChaCha8(s)
}

func newSecAggFixture(n int, dropout float64, complete bool) (*secAggFixture, error) {
	p, err := secagg.ChooseParams(n, 1, 32, secagg.Security{Dropout: dropout})
	if err != nil {
		return nil, err
	}
	if complete { // everyone is everyone's neighbour; t leaves room for the dropouts
		p.Degree, p.Threshold = n-1, max(1, (n-1)-int(dropout*float64(n))-1)
	}
	f := &secAggFixture{p: p}
	srv, err := secagg.NewServer(secagg.ServerConfig{Params: p, Rand: chacha(secAggServerSeed)})
	if err != nil {
		return nil, err
	}
	r := chacha(uint64(n))
	cs := make([]*secagg.Client, n+1)
	keys := make([]float64, n+1)
	for i := 1; i <= n; i++ {
		if cs[i], err = secagg.NewClient(secagg.ClientConfig{ID: secagg.ID(i), Params: p, Rand: r}); err != nil {
			return nil, err
		}
		t0 := time.Now()
		m, err := cs[i].AdvertiseKeys()
		if err != nil {
			return nil, err
		}
		keys[i] = time.Since(t0).Seconds()
		f.adverts = append(f.adverts, m)
		if err := srv.HandleAdvertiseKeys(m); err != nil {
			return nil, err
		}
	}
	nks, err := srv.FinishAdvertiseKeys()
	if err != nil {
		return nil, err
	}
	for _, nk := range nks {
		t0 := time.Now()
		m, err := cs[nk.To].ShareKeys(nk)
		if err != nil {
			return nil, err
		}
		keys[nk.To] += time.Since(t0).Seconds()
		f.shares = append(f.shares, m)
		if err := srv.HandleShareKeys(m); err != nil {
			return nil, err
		}
	}
	f.keysS = percentile(keys[1:], 0.5)
	bundles, err := srv.FinishShareKeys()
	if err != nil {
		return nil, err
	}
	// ⌊δn⌋ clients drop, drawn at random (independently of the graph).
	order := rand.New(rand.NewPCG(uint64(n), 3)).Perm(n)
	dropped := map[secagg.ID]bool{}
	for _, i := range order[:int(dropout*float64(n))] {
		dropped[secagg.ID(i+1)] = true
	}
	for _, b := range bundles {
		if dropped[b.To] {
			continue
		}
		m, err := cs[b.To].MaskInput(b, []uint32{0})
		if err != nil {
			return nil, err
		}
		if err := srv.HandleMaskedInput(m); err != nil {
			return nil, err
		}
		f.survivors = append(f.survivors, b.To)
	}
	reqs, err := srv.FinishMaskedInput()
	if err != nil {
		return nil, err
	}
	for _, rq := range reqs {
		m, err := cs[rq.To].Unmask(rq)
		if err != nil {
			return nil, err
		}
		f.responses = append(f.responses, m)
	}
	return f, nil
}

// measure times the server's whole session at d, the plain round on the
// same survivors and one client's MaskInput.
func (f *secAggFixture) measure(d, samples int) (SecAggRow, error) {
	row, err := f.measureServer(d)
	if err != nil {
		return row, err
	}
	p := f.p
	p.Dim = d
	row.ClientKeysS = f.keysS
	// The plain round: the region sums the survivors' float32 vectors.
	src := wire.AppendFloat64sAs32(nil, make([]float64, d))
	dst := make([]float64, d)
	row.PlainS = math.Inf(1)
	for range 3 {
		t0 := time.Now()
		for range f.survivors {
			if err := accum.Add(dst, src); err != nil {
				return row, err
			}
		}
		row.PlainS = min(row.PlainS, time.Since(t0).Seconds())
	}
	row.PlainFloats = float64(4*d*len(f.survivors)) / row.PlainS / 1e9
	row.ServerOverPlain = row.ServerS / row.PlainS
	n := float64(p.Clients)
	row.NsPerNLogND = row.ServerS * 1e9 / (n * math.Log2(n) * float64(d))
	row.NsPerElem = row.ServerS * 1e9 / (float64(row.Expansions+row.Survivors) * float64(d))
	row.ClientMaskS, err = clientMask(row.K, p.Threshold, d, samples)
	return row, err
}

// measureServer times the server's whole session at d: best of up to
// three runs, one when a run takes over 2 s.
func (f *secAggFixture) measureServer(d int) (SecAggRow, error) {
	p := f.p
	p.Dim = d
	vec := make([]uint32, d)
	secagg.AddMask(vec, &[secagg.SeedSize]byte{1})
	row := SecAggRow{N: p.Clients, D: d, T: p.Threshold, Survivors: len(f.survivors)}
	best := math.Inf(1)
	for rep := 0; rep < 3; rep++ {
		t0 := time.Now()
		res, err := f.serve(p, vec)
		if err != nil {
			return row, err
		}
		el := time.Since(t0).Seconds()
		best = min(best, el)
		row.K, row.Expansions = res.Degree, res.Expansions
		if el > 2 {
			break
		}
	}
	row.ServerS = best
	return row, nil
}

func (f *secAggFixture) serve(p secagg.Params, vec []uint32) (*secagg.Result, error) {
	srv, err := secagg.NewServer(secagg.ServerConfig{Params: p, Rand: chacha(secAggServerSeed)})
	if err != nil {
		return nil, err
	}
	for _, m := range f.adverts {
		if err := srv.HandleAdvertiseKeys(m); err != nil {
			return nil, err
		}
	}
	if _, err := srv.FinishAdvertiseKeys(); err != nil {
		return nil, err
	}
	for _, m := range f.shares {
		if err := srv.HandleShareKeys(m); err != nil {
			return nil, err
		}
	}
	if _, err := srv.FinishShareKeys(); err != nil {
		return nil, err
	}
	for _, id := range f.survivors {
		if err := srv.HandleMaskedInput(&secagg.MaskedInput{Version: secagg.Version, From: id, Bits: uint8(p.Bits), Vector: vec}); err != nil {
			return nil, err
		}
	}
	if _, err := srv.FinishMaskedInput(); err != nil {
		return nil, err
	}
	for _, m := range f.responses {
		if err := srv.HandleUnmaskResponse(m); err != nil {
			return nil, err
		}
	}
	return srv.Finish()
}

// clientMask times MaskInput of d elements for a client with k
// neighbours: in a session of k+1 clients on the complete graph each has
// exactly k, as in the n-client session. The median of samples clients.
func clientMask(k, t, d, samples int) (float64, error) {
	p := secagg.Params{Clients: k + 1, Degree: k, Threshold: t, MinSurvivors: t + 1, Bits: 32, Dim: d}
	srv, err := secagg.NewServer(secagg.ServerConfig{Params: p, Rand: chacha(1)})
	if err != nil {
		return 0, err
	}
	r := chacha(uint64(k))
	cs := make([]*secagg.Client, k+2)
	for i := 1; i <= k+1; i++ {
		if cs[i], err = secagg.NewClient(secagg.ClientConfig{ID: secagg.ID(i), Params: p, Rand: r}); err != nil {
			return 0, err
		}
		m, err := cs[i].AdvertiseKeys()
		if err != nil {
			return 0, err
		}
		if err := srv.HandleAdvertiseKeys(m); err != nil {
			return 0, err
		}
	}
	nks, err := srv.FinishAdvertiseKeys()
	if err != nil {
		return 0, err
	}
	for _, nk := range nks {
		m, err := cs[nk.To].ShareKeys(nk)
		if err != nil {
			return 0, err
		}
		if err := srv.HandleShareKeys(m); err != nil {
			return 0, err
		}
	}
	bundles, err := srv.FinishShareKeys()
	if err != nil {
		return 0, err
	}
	x := make([]uint32, d)
	var times []float64
	for _, b := range bundles[:min(samples, len(bundles))] {
		t0 := time.Now()
		if _, err := cs[b.To].MaskInput(b, x); err != nil {
			return 0, err
		}
		times = append(times, time.Since(t0).Seconds())
	}
	return percentile(times, 0.5), nil
}

// prgSpeed returns the PRG's and the raw AES-128-CTR key stream's GB/s
// over 4·d bytes, best of interleaved runs.
func prgSpeed(d int) [2]float64 {
	dst := make([]uint32, d)
	buf := make([]byte, 4*d)
	reps := max(3, int(4e7/float64(4*d)))
	var seed [secagg.SeedSize]byte
	bp, ba := math.Inf(1), math.Inf(1)
	for i := range reps {
		seed[0] = byte(i)
		t0 := time.Now()
		secagg.AddMask(dst, &seed)
		t1 := time.Now()
		block, _ := aes.NewCipher(seed[:])
		var iv [aes.BlockSize]byte
		cipher.NewCTR(block, iv[:]).XORKeyStream(buf, buf)
		t2 := time.Now()
		bp, ba = min(bp, t1.Sub(t0).Seconds()), min(ba, t2.Sub(t1).Seconds())
	}
	return [2]float64{float64(4*d) / bp / 1e9, float64(4*d) / ba / 1e9}
}

// sortByX orders a series' points by x, so its line does not zigzag.
func sortByX(s Series) Series {
	idx := make([]int, len(s.X))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(s.X[a], s.X[b]) })
	out := Series{Name: s.Name, Dashed: s.Dashed}
	for _, i := range idx {
		out.X, out.Y = append(out.X, s.X[i]), append(out.Y, s.Y[i])
	}
	return out
}
