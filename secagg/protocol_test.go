package secagg

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// seeded returns a deterministic randomness source for a test.
func seeded(seed uint64) *rand.ChaCha8 {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	return rand.NewChaCha8(s)
}

// quantizedInputs returns n quantized random vectors of length d: the
// inputs a real edge would mask.
func quantizedInputs(t testing.TB, n, d, bits int, seed uint64) [][]uint32 {
	t.Helper()
	q, err := NewQuantizer(bits, 1, float64(int64(1)<<(bits-2))/float64(n), n)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	src := seeded(seed)
	out := make([][]uint32, n)
	x := make([]float64, d)
	for i := range out {
		for j := range x {
			x[j] = 2.2*rng.Float64() - 1.1 // some coordinates clip
		}
		out[i] = make([]uint32, d)
		if _, err := q.Quantize(out[i], x, src); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// plainSum is Σ inputs[id-1] mod 2^bits over ids.
func plainSum(inputs [][]uint32, ids []ID, bits int) []uint32 {
	sum := make([]uint32, len(inputs[0]))
	for _, id := range ids {
		for j, v := range inputs[id-1] {
			sum[j] += v
		}
	}
	for j := range sum {
		sum[j] &= uint32(1<<bits - 1)
	}
	return sum
}

func testParams(t testing.TB, n, d int) Params {
	t.Helper()
	p, err := ChooseParams(n, d, 32, Security{Dropout: 0.3, Corrupt: 0.1})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// dropPlan drops a random 30% of n clients: the first `split` fraction of
// them at stage a, the rest at stage b.
func dropPlan(n int, frac float64, seed uint64, stages ...Stage) map[ID]Stage {
	rng := rand.New(rand.NewPCG(seed, 2))
	perm := rng.Perm(n)
	m := int(frac * float64(n))
	drop := make(map[ID]Stage, m)
	for i := range m {
		drop[ID(perm[i]+1)] = stages[i*len(stages)/m]
	}
	return drop
}

// expectedSurvivors are the clients whose masked input reaches the server.
func expectedSurvivors(n int, drop map[ID]Stage) []ID {
	var ids []ID
	for id := ID(1); int(id) <= n; id++ {
		if s := drop[id]; s == Stay || s == DropBeforeUnmask {
			ids = append(ids, id)
		}
	}
	return ids
}

// TestDropoutSumExact is the first Done-when item: n = 100, 30% of
// the clients drop, and the unmasked sum equals the plain sum of the
// survivors' quantized inputs exactly. "Survivors" are the clients whose
// masked inputs reached the server (U3). The 30% drop at each stage where a
// drop changes the work: before sending masked inputs (their pairwise masks
// must be rebuilt and removed), after sending them (they are summed, and
// their self masks are rebuilt without their help), and spread over every
// stage. Each case runs with several random dropout sets; the graph degree
// and threshold are the ones ChooseParams derives for δ = 0.3, so any
// dropout set independent of the graph succeeds except with probability
// 2^-20 (TestCompleteGraphAnyDropout covers sets chosen against the graph).
func TestDropoutSumExact(t *testing.T) {
	const n, d, bits = 100, 300, 32
	p := testParams(t, n, d)
	t.Logf("n = %d: degree k = %d, threshold t = %d, MinSurvivors = %d", n, p.Degree, p.Threshold, p.MinSurvivors)
	inputs := quantizedInputs(t, n, d, bits, 1)
	cases := []struct {
		name   string
		stages []Stage
	}{
		{"30% before masked input", []Stage{DropBeforeMaskedInput}},
		{"30% after masked input", []Stage{DropBeforeUnmask}},
		{"15% before and 15% after masked input", []Stage{DropBeforeMaskedInput, DropBeforeUnmask}},
		{"30% over every stage", []Stage{DropBeforeAdvertise, DropBeforeShareKeys, DropBeforeMaskedInput, DropBeforeUnmask}},
	}
	seeds := []uint64{1, 2, 3}
	if testing.Short() {
		seeds = seeds[:1]
	}
	for _, tc := range cases {
		for _, seed := range seeds {
			t.Run(fmt.Sprintf("%s/seed=%d", tc.name, seed), func(t *testing.T) {
				drop := dropPlan(n, 0.3, seed, tc.stages...)
				res, _, err := Simulate(Simulation{Session: SessionID{byte(seed)}, Params: p, Inputs: inputs, Drop: drop, Rand: seeded(seed)})
				if err != nil {
					t.Fatalf("Simulate: %v", err)
				}
				want := expectedSurvivors(n, drop)
				if !slices.Equal(res.Survivors, want) {
					t.Fatalf("survivors = %v, want %v", res.Survivors, want)
				}
				if got, want := res.Sum, plainSum(inputs, want, bits); !slices.Equal(got, want) {
					t.Fatalf("sum differs from the plain sum of the %d survivors: got[:4] = %v, want[:4] = %v", len(res.Survivors), got[:4], want[:4])
				}
			})
		}
	}
}

// TestCompleteGraphAnyDropout shows the "any 30%" guarantee where it holds
// deterministically: on the complete graph (Bonawitz et al.'s original
// protocol, Degree = n-1) with t = 0.7·(n-1) rounded down, every dropout
// set of 30% — here chosen adversarially: the lowest IDs, the highest, every
// third — leaves each client t live neighbours.
func TestCompleteGraphAnyDropout(t *testing.T) {
	const n, d, bits = 40, 64, 32
	p := Params{Clients: n, Degree: n - 1, Threshold: 7 * (n - 1) / 10, MinSurvivors: n - 3*n/10, Bits: bits, Dim: d}
	inputs := quantizedInputs(t, n, d, bits, 7)
	sets := map[string]func(i int) bool{
		"lowest IDs":  func(i int) bool { return i <= 3*n/10 },
		"highest IDs": func(i int) bool { return i > n-3*n/10 },
		"every third": func(i int) bool { return i%3 == 0 && i/3 <= 3*n/10 },
	}
	for name, in := range sets {
		for _, stage := range []Stage{DropBeforeMaskedInput, DropBeforeUnmask} {
			t.Run(fmt.Sprintf("%s/stage=%d", name, stage), func(t *testing.T) {
				drop := map[ID]Stage{}
				for i := 1; i <= n; i++ {
					if in(i) {
						drop[ID(i)] = stage
					}
				}
				res, _, err := Simulate(Simulation{Params: p, Inputs: inputs, Drop: drop, Rand: seeded(uint64(len(name)))})
				if err != nil {
					t.Fatal(err)
				}
				if got, want := res.Sum, plainSum(inputs, expectedSurvivors(n, drop), bits); !slices.Equal(got, want) {
					t.Fatalf("sum differs from the plain sum")
				}
			})
		}
	}
}

// TestEncodedSession runs a session through the wire encoding of every
// message, so the codecs carry a real session.
func TestEncodedSession(t *testing.T) {
	const n, d, bits = 20, 100, 16
	p, err := ChooseParams(n, d, bits, Security{})
	if err != nil {
		t.Fatal(err)
	}
	inputs := quantizedInputs(t, n, d, bits, 3)
	drop := dropPlan(n, 0.3, 3, DropBeforeMaskedInput, DropBeforeUnmask)
	res, tr, err := Simulate(Simulation{Params: p, Inputs: inputs, Drop: drop, Rand: seeded(3), Encode: true})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Sum, plainSum(inputs, expectedSurvivors(n, drop), bits)) {
		t.Fatal("sum differs from the plain sum")
	}
	t.Logf("k = %d, t = %d: %d bytes up, %d bytes down", p.Degree, p.Threshold, tr.Up, tr.Down)
}

// stepper runs a session by hand so tests can stop between rounds.
type stepper struct {
	t       *testing.T
	p       Params
	srv     *Server
	clients []*Client
	inputs  [][]uint32
}

func newStepper(t *testing.T, p Params, seed uint64) *stepper {
	t.Helper()
	r := seeded(seed)
	st := &stepper{t: t, p: p, clients: make([]*Client, p.Clients+1), inputs: quantizedInputs(t, p.Clients, p.Dim, p.Bits, seed)}
	var err error
	if st.srv, err = NewServer(ServerConfig{Params: p, Rand: r}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= p.Clients; i++ {
		if st.clients[i], err = NewClient(ClientConfig{ID: ID(i), Params: p, Rand: r}); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

// toMasked runs rounds 0-1 for everyone and round 2 for clients not in
// drop, returning the graph (neighbours by ID).
func (st *stepper) keysAndShares() [][]ID {
	t := st.t
	for i := 1; i <= st.p.Clients; i++ {
		m, err := st.clients[i].AdvertiseKeys()
		if err != nil {
			t.Fatal(err)
		}
		if err := st.srv.HandleAdvertiseKeys(m); err != nil {
			t.Fatal(err)
		}
	}
	nks, err := st.srv.FinishAdvertiseKeys()
	if err != nil {
		t.Fatal(err)
	}
	graph := make([][]ID, st.p.Clients+1)
	for _, nk := range nks {
		for _, pk := range nk.Neighbours {
			graph[nk.To] = append(graph[nk.To], pk.ID)
		}
		m, err := st.clients[nk.To].ShareKeys(nk)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.srv.HandleShareKeys(m); err != nil {
			t.Fatal(err)
		}
	}
	return graph
}

func (st *stepper) mask(skip func(ID) bool) ([]*UnmaskRequest, error) {
	t := st.t
	bundles, err := st.srv.FinishShareKeys()
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bundles {
		if skip(b.To) {
			continue
		}
		m, err := st.clients[b.To].MaskInput(b, st.inputs[b.To-1])
		if err != nil {
			t.Fatal(err)
		}
		if err := st.srv.HandleMaskedInput(m); err != nil {
			t.Fatal(err)
		}
	}
	return st.srv.FinishMaskedInput()
}

// TestTooFewSurvivors is the second Done-when item: below the
// threshold the session fails with ErrTooFewSurvivors and reveals nothing —
// the server issues no unmasking request (so no client reveals a share)
// and discards the masked sum, and a client refuses to answer a request
// below the threshold.
func TestTooFewSurvivors(t *testing.T) {
	const n, d = 100, 16
	p := testParams(t, n, d)

	t.Run("session below MinSurvivors", func(t *testing.T) {
		st := newStepper(t, p, 11)
		st.keysAndShares()
		cut := ID(n - p.MinSurvivors + 2) // drop one more client than allowed
		reqs, err := st.mask(func(id ID) bool { return id < cut })
		var se *SurvivorError
		if !errors.Is(err, ErrTooFewSurvivors) || !errors.As(err, &se) || se.Client != 0 || se.Have != p.MinSurvivors-1 {
			t.Fatalf("FinishMaskedInput: err = %v, want a session-wide ErrTooFewSurvivors with %d survivors", err, p.MinSurvivors-1)
		}
		if reqs != nil {
			t.Fatalf("server issued %d unmasking requests", len(reqs))
		}
		if _, err := st.srv.Finish(); !errors.Is(err, ErrWrongState) {
			t.Fatalf("Finish after failure: err = %v, want ErrWrongState", err)
		}
		if st.srv.sum != nil {
			t.Fatal("server kept the masked sum")
		}
	})

	t.Run("one neighbourhood below t", func(t *testing.T) {
		st := newStepper(t, p, 12)
		graph := st.keysAndShares()
		// Client 1 keeps t-1 live neighbours: its own secrets could not be
		// rebuilt, so nothing may be revealed.
		gone := map[ID]bool{}
		for _, v := range graph[1][:len(graph[1])-(p.Threshold-1)] {
			gone[v] = true
		}
		if len(gone) > n-p.MinSurvivors {
			t.Skipf("degree %d too large for this case", p.Degree)
		}
		reqs, err := st.mask(func(id ID) bool { return gone[id] })
		var se *SurvivorError
		if !errors.As(err, &se) || se.Have >= p.Threshold {
			t.Fatalf("FinishMaskedInput: err = %v, want ErrTooFewSurvivors naming a client with fewer than t = %d", err, p.Threshold)
		}
		t.Logf("error: %v", err)
		if reqs != nil {
			t.Fatalf("server issued %d unmasking requests", len(reqs))
		}
	})

	t.Run("shares below t in unmasking", func(t *testing.T) {
		st := newStepper(t, p, 13)
		graph := st.keysAndShares()
		reqs, err := st.mask(func(ID) bool { return false })
		if err != nil {
			t.Fatal(err)
		}
		// All but t-1 of client 1's neighbours stay silent in unmasking.
		silent := map[ID]bool{}
		for _, v := range graph[1][:len(graph[1])-(p.Threshold-1)] {
			silent[v] = true
		}
		for _, r := range reqs {
			if silent[r.To] {
				continue
			}
			m, err := st.clients[r.To].Unmask(r)
			if err != nil {
				t.Fatal(err)
			}
			if err := st.srv.HandleUnmaskResponse(m); err != nil {
				t.Fatal(err)
			}
		}
		res, err := st.srv.Finish()
		if !errors.Is(err, ErrTooFewSurvivors) || res != nil {
			t.Fatalf("Finish: res = %v, err = %v; want no result and ErrTooFewSurvivors", res, err)
		}
		t.Logf("error: %v", err)
	})

	t.Run("client refuses a request below MinSurvivors", func(t *testing.T) {
		st := newStepper(t, p, 14)
		st.keysAndShares()
		reqs, err := st.mask(func(ID) bool { return false })
		if err != nil {
			t.Fatal(err)
		}
		r := *reqs[0]
		r.Total = uint32(p.MinSurvivors - 1)
		c := st.clients[r.To]
		if m, err := c.Unmask(&r); !errors.Is(err, ErrTooFewSurvivors) || m != nil {
			t.Fatalf("Unmask: m = %v, err = %v; want nothing and ErrTooFewSurvivors", m, err)
		}
		// Aborted for good: the honest request gets nothing either.
		if m, err := c.Unmask(reqs[0]); !errors.Is(err, ErrWrongState) || m != nil {
			t.Fatalf("Unmask after refusal: m = %v, err = %v; want ErrWrongState", m, err)
		}
	})

	t.Run("client answers once", func(t *testing.T) {
		st := newStepper(t, p, 15)
		st.keysAndShares()
		reqs, err := st.mask(func(ID) bool { return false })
		if err != nil {
			t.Fatal(err)
		}
		c := st.clients[reqs[0].To]
		if _, err := c.Unmask(reqs[0]); err != nil {
			t.Fatal(err)
		}
		// A second request flipping the survivors to dropped would reveal
		// both secrets of a neighbour: refused.
		r := *reqs[0]
		r.Survivors, r.Dropped = r.Dropped, r.Survivors
		if _, err := c.Unmask(&r); !errors.Is(err, ErrWrongState) {
			t.Fatalf("second Unmask: err = %v, want ErrWrongState", err)
		}
	})
}

func TestServerRejects(t *testing.T) {
	p := Params{Clients: 4, Degree: 3, Threshold: 2, MinSurvivors: 3, Bits: 8, Dim: 4}
	srv, err := NewServer(ServerConfig{Params: p, Rand: seeded(1)})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := NewClient(ClientConfig{ID: 1, Params: p, Rand: seeded(2)})
	m, _ := c.AdvertiseKeys()
	tests := []struct {
		name string
		mut  func(m AdvertiseKeys) AdvertiseKeys
		want error
	}{
		{"other session", func(m AdvertiseKeys) AdvertiseKeys { m.Session[0] ^= 1; return m }, ErrProtocol},
		{"unknown client", func(m AdvertiseKeys) AdvertiseKeys { m.From = 5; return m }, ErrProtocol},
		{"zero client", func(m AdvertiseKeys) AdvertiseKeys { m.From = 0; return m }, ErrProtocol},
		{"version", func(m AdvertiseKeys) AdvertiseKeys { m.Version = 2; return m }, ErrProtocol},
		{"ok", func(m AdvertiseKeys) AdvertiseKeys { return m }, nil},
		{"duplicate", func(m AdvertiseKeys) AdvertiseKeys { return m }, ErrProtocol},
	}
	for _, tc := range tests {
		mm := tc.mut(*m)
		if err := srv.HandleAdvertiseKeys(&mm); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, err := srv.FinishAdvertiseKeys(); !errors.Is(err, ErrTooFewSurvivors) {
		t.Errorf("FinishAdvertiseKeys with 1 of 3: err = %v, want ErrTooFewSurvivors", err)
	}
	if err := srv.HandleAdvertiseKeys(m); !errors.Is(err, ErrWrongState) {
		t.Errorf("after failure: err = %v, want ErrWrongState", err)
	}
}

func TestParamsValidate(t *testing.T) {
	ok := Params{Clients: 10, Degree: 4, Threshold: 3, MinSurvivors: 7, Bits: 32, Dim: 10}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		mut  func(*Params)
	}{
		{"Clients", func(p *Params) { p.Clients = 1 }},
		{"Degree", func(p *Params) { p.Degree = 5 }},
		{"Threshold", func(p *Params) { p.Threshold = 5 }},
		{"MinSurvivors", func(p *Params) { p.MinSurvivors = 11 }},
		{"Bits", func(p *Params) { p.Bits = 33 }},
		{"Dim", func(p *Params) { p.Dim = 0 }},
	}
	for _, tc := range tests {
		p := ok
		tc.mut(&p)
		err := p.Validate()
		if !errors.Is(err, ErrParams) || !containsWord(err.Error(), tc.name) {
			t.Errorf("%s: err = %v, want ErrParams naming %s", tc.name, err, tc.name)
		}
	}
}

func containsWord(s, w string) bool { return slices.Contains(splitWords(s), w) }

func splitWords(s string) []string {
	var out []string
	cur := []rune{}
	for _, r := range s {
		if r == ' ' || r == ':' || r == ',' || r == '=' {
			if len(cur) > 0 {
				out = append(out, string(cur))
			}
			cur = cur[:0]
			continue
		}
		cur = append(cur, r)
	}
	return append(out, string(cur))
}

// TestChooseParamsGrowth checks that the degree grows like log n: each
// tenfold n adds a bounded number of neighbours.
func TestChooseParamsGrowth(t *testing.T) {
	prev := 0
	for _, n := range []int{100, 1000, 10000, 100000} {
		p, err := ChooseParams(n, 1, 32, Security{Dropout: 0.3, Corrupt: 0.1})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("n = %6d: k = %3d, t = %3d", n, p.Degree, p.Threshold)
		if p.Degree >= n-1 {
			t.Errorf("n = %d: complete graph", n)
		}
		if prev > 0 && p.Degree-prev > 60 {
			t.Errorf("n = %d: degree %d grew by %d from the previous decade", n, p.Degree, p.Degree-prev)
		}
		prev = p.Degree
	}
}

// TestWorkersSameSum checks that the server's parallel unmasking gives the
// sequential result, at a length that is not a multiple of the window.
func TestWorkersSameSum(t *testing.T) {
	const n, d, bits = 30, 5003, 32
	p, err := ChooseParams(n, d, bits, Security{Dropout: 0.3})
	if err != nil {
		t.Fatal(err)
	}
	inputs := quantizedInputs(t, n, d, bits, 4)
	drop := dropPlan(n, 0.3, 4, DropBeforeMaskedInput, DropBeforeUnmask)
	want := plainSum(inputs, expectedSurvivors(n, drop), bits)
	for _, w := range []int{1, 2, 3, 8} {
		res, _, err := Simulate(Simulation{Params: p, Inputs: inputs, Drop: drop, Rand: seeded(4), Workers: w})
		if err != nil {
			t.Fatalf("workers = %d: %v", w, err)
		}
		if !slices.Equal(res.Sum, want) {
			t.Fatalf("workers = %d: sum differs from the plain sum", w)
		}
	}
}
