package regional

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/secagg"
)

type zeroNoise struct{}

func (zeroNoise) AddTo64([]float64, float64) error            { return nil }
func (zeroNoise) AddTo64On([]float64, float64, float64) error { return nil }

func secAggOpen(t testing.TB, n int) wire.RoundOpen {
	t.Helper()
	open := wire.RoundOpen{Job: "j", Round: 2, Region: "eu", ModelVersion: 1, Dim: 6, ClipNorm: 2, ClipBits: true,
		DeadlineUnixMs: time.Now().Add(time.Minute).UnixMilli()}
	for i := range n {
		open.Sampled = append(open.Sampled, "c"+string(rune('a'+i)))
	}
	p, err := secagg.ChooseParams(n, open.Dim+1, 32, secagg.Security{Dropout: 0.3})
	if err != nil {
		t.Fatal(err)
	}
	open.SecAgg = &wire.SecAggPlan{Degree: p.Degree, Threshold: p.Threshold, MinSurvivors: p.MinSurvivors, Bits: 32, Scale: 1 << 20, Range: 1}
	return open
}

func envelope(client string, m secagg.Message) []byte {
	body, _ := m.MarshalBinary()
	b, _ := wire.Encode(wire.TypeSecAggUp, &wire.SecAggUp{Job: "j", Round: 2, Region: "eu", Client: client, Body: body})
	return b
}

const subjPrefix = "strata.j.secagg.eu."

// TestSecAggSessionSumsSurvivors drives a region's session with real
// secagg clients: one drops before its masked input, one after; the
// round's partial holds exactly the survivors' sum (up to one quantization
// step per client and coordinate) and their clipping bits, and every
// message out of turn is refused with a named reason.
func TestSecAggSessionSumsSurvivors(t *testing.T) {
	const n = 8
	open := secAggOpen(t, n)
	r, err := NewRound(open)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Add(update(nil)); got != ReasonSecAggOnly {
		t.Fatalf("a plain update in a secagg round: %q, want %q", got, ReasonSecAggOnly)
	}
	s, err := NewSecAggSession(r, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	setup := s.Setup()
	rng := rand.New(rand.NewPCG(1, 2))
	clients := map[string]*secagg.Client{}
	inputs := map[string][]float64{}
	bits := map[string]uint8{}
	for _, c := range setup.Members {
		id, _ := setup.ID(c)
		if clients[c], err = secagg.NewClient(secagg.ClientConfig{ID: id, Session: setup.Session, Params: setup.Params}); err != nil {
			t.Fatal(err)
		}
		v := make([]float64, open.Dim)
		for i := range v {
			v[i] = open.ClipNorm * (2*rng.Float64() - 1) / math.Sqrt(float64(open.Dim))
		}
		inputs[c], bits[c] = v, uint8(rng.IntN(2))
	}
	dropBefore, dropAfter := setup.Members[1], setup.Members[4]
	handle := func(subj string, b []byte, want string) {
		t.Helper()
		if got := s.Handle(subj, b); got != want {
			t.Fatalf("handle on %s: %q, want %q", subj, got, want)
		}
	}
	// Stage 0.
	for _, c := range setup.Members {
		m, err := clients[c].AdvertiseKeys()
		if err != nil {
			t.Fatal(err)
		}
		handle(subjPrefix+setup.Members[0], envelope(c, m), map[bool]string{true: "", false: ReasonUnknownClient}[c == setup.Members[0]])
		if c != setup.Members[0] {
			handle(subjPrefix+c, envelope(c, m), "")
		}
		handle(subjPrefix+c, envelope(c, m), ReasonDuplicate)
	}
	handle(subjPrefix+"zz", envelope("zz", &secagg.AdvertiseKeys{Version: secagg.Version, Session: setup.Session, From: 1}), ReasonNotSampled)
	handle(subjPrefix+"x", []byte{20, 1, 0xc1}, ReasonMalformed)
	if !s.StageComplete() {
		t.Fatal("every client advertised but the stage is not complete")
	}
	step := func() map[string][]byte {
		t.Helper()
		out, err := s.Advance()
		if err != nil {
			t.Fatal(err)
		}
		m := map[string][]byte{}
		for _, a := range out {
			m[a.Client] = a.Body
		}
		return m
	}
	decode := func(b []byte) secagg.Message {
		m, err := secagg.Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	// Stage 1.
	for c, b := range step() {
		m, err := clients[c].ShareKeys(decode(b).(*secagg.NeighbourKeys))
		if err != nil {
			t.Fatal(err)
		}
		handle(subjPrefix+c, envelope(c, m), "")
	}
	// Stage 2: one client never sends its masked input; a masked input
	// sent as another client (before that one sent its own) is refused.
	bundles := step()
	for _, c := range setup.Members {
		b, ok := bundles[c]
		if !ok || c == dropBefore {
			continue
		}
		x, err := setup.Encode(inputs[c], bits[c])
		if err != nil {
			t.Fatal(err)
		}
		m, err := clients[c].MaskInput(decode(b).(*secagg.ShareBundle), x)
		if err != nil {
			t.Fatal(err)
		}
		if c == setup.Members[0] {
			handle(subjPrefix+setup.Members[2], envelope(setup.Members[2], m), ReasonSecAggProtocol)
		}
		handle(subjPrefix+c, envelope(c, m), "")
	}
	// Stage 3: one survivor never answers.
	reqs := step()
	if _, asked := reqs[dropBefore]; asked {
		t.Fatal("the client that dropped before its masked input was asked to unmask")
	}
	for c, b := range reqs {
		if c == dropAfter {
			continue
		}
		m, err := clients[c].Unmask(decode(b).(*secagg.UnmaskRequest))
		if err != nil {
			t.Fatal(err)
		}
		handle(subjPrefix+c, envelope(c, m), "")
	}
	if out := step(); len(out) != 0 || !s.Done() {
		t.Fatalf("the last stage sent %d messages, done %v", len(out), s.Done())
	}
	p, err := r.Finalize(zeroNoise{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Count != n-1 {
		t.Fatalf("partial counts %d, want %d survivors", p.Count, n-1)
	}
	got, err := wire.Float64s(p.Sum)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]float64, open.Dim)
	wantBits := 0.0
	for c, v := range inputs {
		if c == dropBefore {
			continue
		}
		for i, x := range v {
			want[i] += x
		}
		wantBits += float64(bits[c]) - 0.5
	}
	step1 := open.ClipNorm / open.SecAgg.Scale
	for i := range want {
		if d := math.Abs(float64(got[i]) - want[i]); d > float64(n-1)*step1+1e-6*math.Abs(want[i]) {
			t.Fatalf("sum[%d] = %v, want %v ± %v", i, got[i], want[i], float64(n-1)*step1)
		}
	}
	if p.BitSum != wantBits {
		t.Fatalf("bit sum %v, want %v", p.BitSum, wantBits)
	}
}

// TestSecAggSessionTooFewSurvivors: below MinSurvivors the session ends
// with ErrTooFewSurvivors and the round holds nothing.
func TestSecAggSessionTooFewSurvivors(t *testing.T) {
	open := secAggOpen(t, 6)
	r, _ := NewRound(open)
	s, err := NewSecAggSession(r, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	setup := s.Setup()
	for _, c := range setup.Members[:1] {
		id, _ := setup.ID(c)
		cl, _ := secagg.NewClient(secagg.ClientConfig{ID: id, Session: setup.Session, Params: setup.Params})
		m, _ := cl.AdvertiseKeys()
		if got := s.Handle(subjPrefix+c, envelope(c, m)); got != "" {
			t.Fatal(got)
		}
	}
	_, err = s.Advance()
	if secAggReason(err) != SecAggTooFew {
		t.Fatalf("err %v, reason %q; want %q", err, secAggReason(err), SecAggTooFew)
	}
	if r.Count() != 0 {
		t.Fatal("a failed session left updates in the round")
	}
}

func FuzzSecAggHandle(f *testing.F) {
	open := secAggOpen(f, 4)
	setup, err := secAggSetup(&open)
	if err != nil {
		f.Fatal(err)
	}
	cl, _ := secagg.NewClient(secagg.ClientConfig{ID: 1, Session: setup.Session, Params: setup.Params})
	m, _ := cl.AdvertiseKeys()
	f.Add(subjPrefix+setup.Members[0], envelope(setup.Members[0], m))
	f.Add(subjPrefix+"x", []byte{20, 1, 0x80})
	f.Fuzz(func(t *testing.T, subj string, b []byte) {
		r, _ := NewRound(open)
		s, err := NewSecAggSession(r, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		s.Handle(subj, b)
	})
}
