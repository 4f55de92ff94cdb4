package ledger

import (
	"math"
	"testing"

	"github.com/strata-fl/strata/privacy"
)

// TestSecAggRecordedPerRound: a round's secagg sessions are recorded as
// opened, each region's survivors are set from the merged partials at
// commit (0 for a region that contributed nothing), and the record is a
// copy the command cannot alter afterwards.
func TestSecAggRecordedPerRound(t *testing.T) {
	orders := privacy.Orders()
	l := New()
	curve := make([]float64, len(orders))
	inf := make([]float64, len(orders))
	for i := range inf {
		curve[i], inf[i] = 0.01, math.Inf(1)
	}
	rec := &SecAggRecord{Bits: 32, Scale: 1 << 20, Dropout: 0.3, Sessions: []SecAggSession{
		{Region: "a", Clients: 10, Degree: 8, Threshold: 4, MinSurvivors: 7},
		{Region: "b", Clients: 12, Degree: 10, Threshold: 5, MinSurvivors: 9},
	}}
	cmds := []Command{
		&StartJob{Job: Job{Name: "j", ConfigHash: "h", Delta: 1e-5, Budget: 10, Population: 22, PlannedRounds: 2, Accountant: "rdp", Orders: orders}},
		&OpenRound{Round: 1, Sampled: 22, Q: 0.5, ClipNorm: 1, RDP: PerObserver[[]float64]{Public: curve, GlobalOperator: curve, RegionalOperator: inf},
			EpsilonAfter: PerObserver[float64]{Public: 1, GlobalOperator: 1, RegionalOperator: math.Inf(1)}, Eligible: 22, SecAgg: rec},
		&CommitModel{Round: 1, Version: 1, Hash: "x", Participants: 9, Regions: []string{"a"}, Promoted: true,
			Partials: []PartialRef{{Region: "a", Count: 9, Digest: "d"}}},
	}
	for i, c := range cmds {
		if res := l.Apply(uint64(i+1), c); res.Err != nil {
			t.Fatalf("command %d: %v", i, res.Err)
		}
	}
	rec.Sessions[0].Clients = 99 // the command's copy, not the ledger's
	got := l.Rounds[0].SecAgg
	if got == nil || got.Bits != 32 || got.Scale != 1<<20 || got.Dropout != 0.3 || len(got.Sessions) != 2 {
		t.Fatalf("recorded %+v", got)
	}
	a, b := got.Sessions[0], got.Sessions[1]
	if a.Clients != 10 || a.Degree != 8 || a.Threshold != 4 || a.Survivors != 9 {
		t.Fatalf("region a: %+v, want n 10, k 8, t 4 and 9 survivors", a)
	}
	if b.Survivors != 0 {
		t.Fatalf("region b contributed nothing but records %d survivors", b.Survivors)
	}
	snap, err := l.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Restore(snap)
	if err != nil {
		t.Fatal(err)
	}
	if r := back.Rounds[0].SecAgg; r == nil || r.Sessions[0] != a || r.Sessions[1] != b {
		t.Fatalf("snapshot lost the secagg record: %+v", r)
	}
}
