package regional

import (
	"errors"
	"math"
	"testing"

	"github.com/strata-fl/strata/mesh/wire"
)

func openRound() wire.RoundOpen {
	return wire.RoundOpen{Job: "j", Round: 2, Region: "eu", ModelVersion: 1, Dim: 3, ClipNorm: 1, Sampled: []string{"c1", "c2"}}
}

func update(mut func(*wire.Update)) []byte {
	u := wire.Update{Job: "j", Round: 2, Region: "eu", Client: "c1", ModelVersion: 1, Vec: wire.AppendFloat32s(nil, []float32{0.6, 0, 0.8})}
	if mut != nil {
		mut(&u)
	}
	b, _ := wire.Encode(wire.TypeUpdate, &u)
	return b
}

func vec(v ...float32) func(*wire.Update) {
	return func(u *wire.Update) { u.Vec = wire.AppendFloat32s(nil, v) }
}

func TestAddRejectsWithNamedReasons(t *testing.T) {
	nan := float32(math.NaN())
	tests := []struct {
		name string
		b    []byte
		want string
	}{
		{"valid", update(nil), ""},
		{"malformed", []byte{2, 1, 0xc1}, ReasonMalformed},
		{"wrong type", func() []byte { b, _ := wire.Encode(wire.TypePartial, &wire.Partial{}); return b }(), ReasonMalformed},
		{"wrong job", update(func(u *wire.Update) { u.Job = "k" }), ReasonWrongJob},
		{"wrong region", update(func(u *wire.Update) { u.Region = "us" }), ReasonWrongRegion},
		{"old round", update(func(u *wire.Update) { u.Round = 1 }), ReasonStaleRound},
		{"wrong model version", update(func(u *wire.Update) { u.ModelVersion = 0 }), ReasonWrongVersion},
		{"not sampled", update(func(u *wire.Update) { u.Client = "c9" }), ReasonNotSampled},
		{"short vector", update(vec(1, 0)), ReasonWrongDim},
		{"odd byte count", update(func(u *wire.Update) { u.Vec = []byte{1, 2, 3, 4, 5} }), ReasonWrongDim},
		{"NaN", update(vec(0, nan, 0)), ReasonNonFinite},
		{"Inf", update(vec(0, float32(math.Inf(1)), 0)), ReasonNonFinite},
		{"norm over C", update(vec(1, 1, 0)), ReasonNorm},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := NewRound(openRound())
			if err != nil {
				t.Fatal(err)
			}
			if got := r.Add(tt.b); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
			wantCount := 0
			if tt.want == "" {
				wantCount = 1
			}
			if r.Count() != wantCount {
				t.Fatalf("count %d, want %d", r.Count(), wantCount)
			}
		})
	}
}

func TestDuplicateCountsOnceAndRejectedClientCanStillReport(t *testing.T) {
	r, _ := NewRound(openRound())
	if got := r.Add(update(vec(0, float32(math.NaN()), 0))); got != ReasonNonFinite {
		t.Fatalf("got %q", got)
	}
	if got := r.Add(update(nil)); got != "" {
		t.Fatalf("valid update after a rejected one: got %q", got)
	}
	if got := r.Add(update(nil)); got != ReasonDuplicate {
		t.Fatalf("second update: got %q, want duplicate", got)
	}
	if r.Count() != 1 || r.Complete() {
		t.Fatalf("count %d complete %v", r.Count(), r.Complete())
	}
	if r.Add(update(func(u *wire.Update) { u.Client = "c2" })) != "" || !r.Complete() {
		t.Fatal("round should be complete after both sampled clients")
	}
}

type fixedNoise float64

func (f fixedNoise) AddTo64(dst []float64, sigma float64) error {
	for i := range dst {
		dst[i] += float64(f) * sigma
	}
	return nil
}

func (f fixedNoise) AddTo64On(dst []float64, sigma, _ float64) error { return f.AddTo64(dst, sigma) }

func TestFinalizeAddsNoiseOnce(t *testing.T) {
	o := openRound()
	o.RegionalNoise = 2
	r, _ := NewRound(o)
	r.Add(update(nil))
	p, err := r.Finalize(fixedNoise(1))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := wire.Float64s(p.Sum)
	want := []float64{2.6, 2, 2.8}
	for i := range want {
		if math.Abs(float64(got[i]-want[i])) > 1e-6 {
			t.Fatalf("sum %v, want %v", got, want)
		}
	}
	if p.Count != 1 {
		t.Fatalf("count %d", p.Count)
	}
	if _, err := r.Finalize(fixedNoise(1)); !errors.Is(err, ErrRoundFinalized) {
		t.Fatalf("second finalize: got %v, want ErrRoundFinalized", err)
	}
	if got := r.Add(update(func(u *wire.Update) { u.Client = "c2" })); got == "" {
		t.Fatal("update accepted after finalize")
	}
}

func TestNewRoundRejectsBadAnnouncements(t *testing.T) {
	for _, mut := range []func(*wire.RoundOpen){
		func(o *wire.RoundOpen) { o.Dim = 0 },
		func(o *wire.RoundOpen) { o.Dim = -5 },
		func(o *wire.RoundOpen) { o.ClipNorm = math.NaN() },
		func(o *wire.RoundOpen) { o.ClipNorm = 0 },
	} {
		o := openRound()
		mut(&o)
		if _, err := NewRound(o); err == nil {
			t.Errorf("NewRound(%+v): got nil error", o)
		}
	}
}

// FuzzAdd feeds arbitrary bytes to the update handler: it must never panic
// and the sum must stay finite.
func FuzzAdd(f *testing.F) {
	f.Add(update(nil))
	f.Add(update(vec(1, 1, 1)))
	f.Add([]byte{2, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, _ := NewRound(openRound())
		r.Add(b)
		r.Add(b)
		p, err := r.Finalize(fixedNoise(0))
		if err != nil {
			t.Fatal(err)
		}
		v, _ := wire.Float64s(p.Sum)
		for _, x := range v {
			if math.IsNaN(x) || math.IsInf(x, 0) {
				t.Fatalf("non-finite sum %v", v)
			}
		}
	})
}
