package ledger

import (
	"bytes"
	"errors"
	"math"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

func enrolled() *Ledger {
	l := New()
	l.Apply(1, job())
	l.Apply(2, &EnrollClients{Clients: []Enrollment{{ID: "c", Region: "r", Budget: 1}, {ID: "a", Region: "r", Budget: 1}, {ID: "b", Region: "r", Budget: 0.5}}})
	return l
}

func TestClientsAreSortedAndEnrolOnce(t *testing.T) {
	l := enrolled()
	if got := l.Eligible(); len(got) != 3 || got[0] != "a" || got[2] != "c" {
		t.Fatalf("eligible %v", got)
	}
	res := l.Apply(3, &EnrollClients{Clients: []Enrollment{{ID: "a", Budget: 99}}})
	if !res.Duplicate {
		t.Fatal("re-enrolment should be a duplicate")
	}
	if c, _ := l.Client("a"); c.Budget != 1 {
		t.Fatalf("re-enrolment changed the budget to %v", c.Budget)
	}
}

func TestWithdrawnAndRetiredClientsCannotBeSampled(t *testing.T) {
	l := enrolled()
	if res := l.Apply(3, &Withdraw{Client: "a"}); res.Err != nil {
		t.Fatal(res.Err)
	}
	if res := l.Apply(4, &Withdraw{Client: "zz"}); !errors.Is(res.Err, ErrUnknownClient) {
		t.Fatalf("unknown client: got %v", res.Err)
	}
	o := open(1, 0.1)
	o.SampledClients = []string{"a"}
	if res := l.Apply(5, o); !errors.Is(res.Err, ErrNotEligible) {
		t.Fatalf("sampling a withdrawn client: got %v, want ErrNotEligible", res.Err)
	}
	o = open(1, 0.1)
	o.SampledClients, o.Retire = []string{"b"}, []string{"b"}
	if res := l.Apply(6, o); !errors.Is(res.Err, ErrNotEligible) {
		t.Fatalf("sampling a retiring client: got %v, want ErrNotEligible", res.Err)
	}
	o = open(1, 0.1)
	o.SampledClients, o.Retire = []string{"c"}, []string{"b"}
	if res := l.Apply(7, o); res.Err != nil {
		t.Fatal(res.Err)
	}
	if got := l.Eligible(); len(got) != 1 || got[0] != "c" {
		t.Fatalf("eligible after withdraw and retire: %v", got)
	}
	b, _ := l.Client("b")
	if b.Status != ClientRetired || b.EligibleUntil != 1 {
		t.Fatalf("b: %+v", b)
	}
	a, _ := l.Client("a")
	if a.Status != ClientWithdrawn || a.EligibleUntil != 1 {
		t.Fatalf("a: %+v", a)
	}
}

func TestClientCurvesComposeOverOwnRounds(t *testing.T) {
	l := enrolled()
	for r := uint64(1); r <= 3; r++ {
		o := open(r, 0.1*float64(r))
		if r == 2 {
			o.SampledClients = []string{"a"}
		}
		if r == 3 {
			o.Retire = []string{"c"}
		}
		if res := l.Apply(2*r+1, o); res.Err != nil {
			t.Fatal(res.Err)
		}
		l.Apply(2*r+2, &CommitModel{Round: r, Version: r})
	}
	a, _ := l.ClientCurves("a")
	c, _ := l.ClientCurves("c")
	// open() charges 0.1, 0.2, 0.3 at the three orders per round.
	if math.Abs(a.Public[0]-0.3) > 1e-15 || math.Abs(c.Public[0]-0.2) > 1e-15 {
		t.Fatalf("public curves: a %v (eligible 3 rounds), c %v (retired before round 3)", a.Public, c.Public)
	}
	if a.GlobalOperator[0] != 0.1 || c.GlobalOperator[0] != 0 {
		t.Fatalf("operator curves: a %v (sampled once), c %v (never)", a.GlobalOperator, c.GlobalOperator)
	}
	if !math.IsInf(a.RegionalOperator[0], 1) {
		t.Fatal("a's regional operator curve should be +Inf")
	}
}

// TestApplyHoldsClientsToTheirBudgets: the proposer prices each group of
// clients eligible since the same round; Apply refuses a round in which a
// client that stays eligible would exceed its budget — a leader that
// "forgets" to retire one gets its OpenRound refused on every replica.
// enrolled() gives a and c a budget of 1, b one of 0.5, all eligible from
// round 1.
func TestApplyHoldsClientsToTheirBudgets(t *testing.T) {
	groups := func(eps float64) []GroupEpsilon { return []GroupEpsilon{{From: 1, Epsilon: eps}} }
	tests := []struct {
		name     string
		flag     bool // the job prices its groups (Job.ClientBudgets)
		groups   []GroupEpsilon
		retire   []string
		withdraw string
		wantErr  error
	}{
		{"all within budget", true, groups(0.4), nil, "", nil},
		{"leader forgets to retire b", true, groups(0.7), nil, "", ErrClientBudget},
		{"b retired", true, groups(0.7), []string{"b"}, "", nil},
		{"b withdrawn is not held", true, groups(0.7), nil, "b", nil},
		{"over everyone's budget", true, groups(1.2), []string{"b"}, "", ErrClientBudget},
		{"NaN is over any budget", true, groups(math.NaN()), nil, "", ErrClientBudget},
		{"a group missing", true, []GroupEpsilon{{From: 2, Epsilon: 0}}, nil, "", ErrInvalid},
		{"groups missing in a job that prices them", true, nil, nil, "", ErrInvalid},
		{"groups unsorted", true, []GroupEpsilon{{From: 2}, {From: 1}}, nil, "", ErrInvalid},
		{"a job started before groups were priced", false, nil, nil, "", nil},
		{"an old job's round that carries groups is checked", false, groups(0.7), nil, "", ErrClientBudget},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := New()
			j := job()
			j.Job.ClientBudgets = tt.flag
			l.Apply(1, j)
			l.Apply(2, &EnrollClients{Clients: []Enrollment{{ID: "c", Region: "r", Budget: 1}, {ID: "a", Region: "r", Budget: 1}, {ID: "b", Region: "r", Budget: 0.5}}})
			if tt.withdraw != "" {
				l.Apply(3, &Withdraw{Client: tt.withdraw})
			}
			applied := l.Applied
			before, _ := l.Snapshot()
			o := open(1, 0.1)
			o.Groups, o.Retire = tt.groups, tt.retire
			res := l.Apply(4, o)
			if !errors.Is(res.Err, tt.wantErr) || (tt.wantErr == nil && res.Err != nil) {
				t.Fatalf("got %v, want %v", res.Err, tt.wantErr)
			}
			if res.Err != nil {
				l.Applied = applied // the index advances on every entry; compare the rest
				if after, _ := l.Snapshot(); !bytes.Equal(before, after) {
					t.Fatal("a refused round changed the ledger")
				}
			}
		})
	}
}

// TestOldRoundsReplay: an OpenRound encoded without groups (as every
// round was before they were priced) decodes and applies in a job that
// does not price them.
func TestOldRoundsReplay(t *testing.T) {
	type oldOpen struct { // OpenRound's fields before Groups, as msgpack saw them
		Round        uint64                 `msgpack:"round"`
		ModelVersion uint64                 `msgpack:"model_version"`
		Sampled      int                    `msgpack:"sampled"`
		Q            float64                `msgpack:"q"`
		RDP          PerObserver[[]float64] `msgpack:"rdp"`
		EpsilonAfter PerObserver[float64]   `msgpack:"epsilon_after"`
		Eligible     int                    `msgpack:"eligible"`
	}
	o := open(1, 0.1)
	body, err := msgpack.Marshal(&oldOpen{Round: 1, Sampled: 3, Q: 0.5, RDP: o.RDP, EpsilonAfter: o.EpsilonAfter, Eligible: 3})
	if err != nil {
		t.Fatal(err)
	}
	l := enrolled()
	res := l.ApplyEntry(3, append([]byte{byte(KindOpenRound)}, body...))
	if res.Err != nil || len(l.Rounds) != 1 {
		t.Fatalf("old round: %v, %d rounds", res.Err, len(l.Rounds))
	}
}
