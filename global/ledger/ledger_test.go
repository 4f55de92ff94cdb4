package ledger

import (
	"bytes"
	"errors"
	"math"
	"testing"
)

var orders = []float64{2, 4, 8}

func job() *StartJob {
	return &StartJob{Job: Job{Name: "j", ConfigHash: "h", Delta: 1e-5, Budget: 1, Population: 10, PlannedRounds: 3, Accountant: "rdp", Orders: orders}}
}

func open(round uint64, eps float64) *OpenRound {
	curve := []float64{0.1, 0.2, 0.3}
	return &OpenRound{
		Round: round, ModelVersion: round - 1, Sampled: 3, Q: 0.5, ClipNorm: 1,
		Sigma:        PerObserver[float64]{Public: 1, GlobalOperator: 1, RegionalOperator: 0},
		RDP:          PerObserver[[]float64]{Public: curve, GlobalOperator: curve, RegionalOperator: []float64{math.Inf(1), math.Inf(1), math.Inf(1)}},
		EpsilonAfter: PerObserver[float64]{Public: eps, GlobalOperator: 2 * eps, RegionalOperator: math.Inf(1)},
		OpenedUnixMs: int64(round),
	}
}

func TestApplyTransitions(t *testing.T) {
	tests := []struct {
		name    string
		cmds    []Command
		wantErr error // of the last command
		wantDup bool
	}{
		{"open without job", []Command{open(1, 0.1)}, ErrNoJob, false},
		{"open in order", []Command{job(), open(1, 0.1)}, nil, false},
		{"open out of order", []Command{job(), open(2, 0.1)}, ErrRoundOrder, false},
		{"open while open", []Command{job(), open(1, 0.1), open(2, 0.2)}, ErrRoundOrder, false},
		{"retried open is a duplicate", []Command{job(), open(1, 0.1), open(1, 0.1)}, nil, true},
		{"conflicting open", []Command{job(), open(1, 0.1), func() Command { o := open(1, 0.1); o.Sampled = 9; return o }()}, ErrRoundConflict, false},
		{"over budget", []Command{job(), open(1, 1.5)}, ErrBudget, false},
		{"NaN epsilon is over budget", []Command{job(), open(1, math.NaN())}, ErrBudget, false},
		{"commit", []Command{job(), open(1, 0.1), &CommitModel{Round: 1, Version: 1}}, nil, false},
		{"commit twice is a duplicate", []Command{job(), open(1, 0.1), &CommitModel{Round: 1, Version: 1}, &CommitModel{Round: 1, Version: 1}}, nil, true},
		{"commit skips a version", []Command{job(), open(1, 0.1), &CommitModel{Round: 1, Version: 2}}, ErrVersion, false},
		{"commit names its metrics", []Command{job(), open(1, 0.1), &CommitModel{Round: 1, Version: 1, Score: -8, Metric: "perplexity", Metrics: []Metric{{"perplexity", 8}, {"top1", 0.3}}}}, nil, false},
		{"commit's primary metric is not among its metrics", []Command{job(), open(1, 0.1), &CommitModel{Round: 1, Version: 1, Metric: "perplexity", Metrics: []Metric{{"top1", 0.3}}}}, ErrInvalid, false},
		{"commit names a metric twice", []Command{job(), open(1, 0.1), &CommitModel{Round: 1, Version: 1, Metrics: []Metric{{"top1", 0.3}, {"top1", 0.4}}}}, ErrInvalid, false},
		{"commit an aborted round", []Command{job(), open(1, 0.1), &AbortRound{Round: 1}, &CommitModel{Round: 1, Version: 1}}, ErrRoundNotOpen, false},
		{"finish with an open round", []Command{job(), open(1, 0.1), &FinishJob{}}, ErrRoundOrder, false},
		{"open after finish", []Command{job(), &FinishJob{}, open(1, 0.1)}, ErrJobFinished, false},
		{"another job", []Command{job(), func() Command { j := job(); j.Job.Name = "k"; return j }()}, ErrJobExists, false},
		{"wrong curve length", []Command{job(), func() Command { o := open(1, 0.1); o.RDP.Public = []float64{1}; return o }()}, ErrCurve, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := New()
			var res Result
			for i, c := range tt.cmds {
				res = l.Apply(uint64(i+1), c)
			}
			if !errors.Is(res.Err, tt.wantErr) || (tt.wantErr == nil && res.Err != nil) {
				t.Fatalf("got err %v, want %v", res.Err, tt.wantErr)
			}
			if res.Duplicate != tt.wantDup {
				t.Fatalf("got duplicate %v, want %v", res.Duplicate, tt.wantDup)
			}
		})
	}
}

func TestRejectionLeavesStateUnchanged(t *testing.T) {
	l := New()
	l.Apply(1, job())
	l.Apply(2, open(1, 0.5))
	l.Apply(3, &CommitModel{Round: 1, Version: 1})
	before, _ := l.Snapshot()
	res := l.Apply(4, open(2, 1.01))
	if !errors.Is(res.Err, ErrBudget) {
		t.Fatalf("got %v, want ErrBudget", res.Err)
	}
	l.Applied = 3 // the index advances on every entry; compare the rest
	after, _ := l.Snapshot()
	if !bytes.Equal(before, after) {
		t.Fatal("a refused round changed the ledger")
	}
	if got := l.Spent(Public); got != 0.5 {
		t.Fatalf("spent %v after refusal, want 0.5", got)
	}
}

func TestCurvesAddAndSpendNeverShrinks(t *testing.T) {
	l := New()
	l.Apply(1, job())
	prev := 0.0
	for r := uint64(1); r <= 3; r++ {
		if res := l.Apply(2*r, open(r, 0.3*float64(r))); res.Err != nil {
			t.Fatal(res.Err)
		}
		if r == 2 {
			l.Apply(2*r+1, &AbortRound{Round: r, Reason: "test"})
		} else {
			l.Apply(2*r+1, &CommitModel{Round: r, Version: l.LatestVersion() + 1})
		}
		if s := l.Spent(Public); s < prev {
			t.Fatalf("spend went from %v to %v", prev, s)
		}
		prev = l.Spent(Public)
	}
	want := []float64{0.3, 0.6, 0.9}
	for i, v := range l.Curve(Public) {
		if math.Abs(v-want[i]) > 1e-12 {
			t.Fatalf("curve[%d] = %v, want %v", i, v, want[i])
		}
	}
	if !math.IsInf(l.Curve(RegionalOperator)[0], 1) {
		t.Fatal("unprotected observer's curve should be +Inf")
	}
	if l.CommittedRounds() != 2 || l.Rounds[1].Status != "aborted" {
		t.Fatalf("committed %d, round 2 %s", l.CommittedRounds(), l.Rounds[1].Status)
	}
}

func TestSnapshotRoundTripIsByteIdentical(t *testing.T) {
	a := New()
	cmds := []Command{job(), open(1, 0.1), &CommitModel{Round: 1, Version: 1, Regions: []string{"b", "a"}}, open(2, 0.2)}
	for i, c := range cmds {
		a.Apply(uint64(i+1), c)
	}
	// A replica replays the same encoded log.
	b := New()
	for i, c := range cmds {
		enc, err := Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		dec, err := Decode(enc)
		if err != nil {
			t.Fatal(err)
		}
		b.Apply(uint64(i+1), dec)
	}
	sa, _ := a.Snapshot()
	sb, _ := b.Snapshot()
	if !bytes.Equal(sa, sb) {
		t.Fatal("replayed log produced different snapshot bytes")
	}
	r, err := Restore(sa)
	if err != nil {
		t.Fatal(err)
	}
	sr, _ := r.Snapshot()
	if !bytes.Equal(sa, sr) {
		t.Fatal("restore then snapshot changed the bytes")
	}
}

func FuzzDecode(f *testing.F) {
	for _, c := range []Command{job(), open(1, 0.1), &CommitModel{Round: 1}, &AbortRound{Round: 1}, &FinishJob{}} {
		b, _ := Encode(c)
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{9, 1, 2})
	f.Fuzz(func(t *testing.T, b []byte) {
		cmd, err := Decode(b)
		if err != nil {
			return
		}
		l := New()
		l.Apply(1, job())
		l.Apply(2, cmd) // must not panic
	})
}

// A version recorded before tasks named their metrics reads as accuracy;
// one that names them reads as the task reported it, not negated.
func TestModelPrimary(t *testing.T) {
	for _, c := range []struct {
		m     Model
		name  string
		value float64
	}{
		{Model{Score: 0.91}, "accuracy", 0.91},
		{Model{Score: -8.5, Metric: "perplexity", Metrics: []Metric{{"top1", 0.3}, {"perplexity", 8.5}}}, "perplexity", 8.5},
	} {
		if name, v := c.m.Primary(); name != c.name || v != c.value {
			t.Errorf("%+v: primary %s = %v, want %s = %v", c.m, name, v, c.name, c.value)
		}
	}
}
