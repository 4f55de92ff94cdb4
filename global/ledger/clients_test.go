package ledger

import (
	"errors"
	"math"
	"testing"
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
