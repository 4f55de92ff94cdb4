package global

import (
	"testing"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/global/round"
	"github.com/strata-fl/strata/privacy"
	"github.com/strata-fl/strata/topology"
)

// TestPricedGroupsAreWhatTheLedgerReports: the ε the pricer puts into an
// OpenRound for each group of clients — those eligible from round 1, those
// enrolled after round 1, and those that would be enrolled after the view
// was read — is, once the round is applied, exactly the public ε the
// ledger reports for each of their clients. Apply holds clients to these
// numbers, so they must be the ledger's own.
func TestPricedGroupsAreWhatTheLedgerReports(t *testing.T) {
	top, err := topology.Parse([]byte("job: t\nregions:\n  - {id: a, clients: 3}\nprivacy: {sampling_rate: 0.5, budget: 100, noise: {regional: 0.8, global: 0.6}}\ntraining: {rounds: 5}\n"))
	if err != nil {
		t.Fatal(err)
	}
	const dim = 50
	l := ledger.New()
	index := uint64(0)
	apply := func(cmd ledger.Command) {
		t.Helper()
		index++
		if res := l.Apply(index, cmd); res.Err != nil {
			t.Fatalf("%T: %v", cmd, res.Err)
		}
	}
	apply(&ledger.StartJob{Job: ledger.Job{Name: "t", Delta: top.Privacy.Delta, Budget: top.Privacy.Budget, Orders: privacy.Orders(), ClientBudgets: true}})
	apply(&ledger.EnrollClients{Clients: []ledger.Enrollment{{ID: "a-c00000", Region: "a", Budget: 100}, {ID: "a-c00001", Region: "a", Budget: 100}}})
	open := func() round.Plan {
		t.Helper()
		v, err := round.ViewOf(l)
		if err != nil {
			t.Fatal(err)
		}
		p, err := Pricer().Price(top, dim, v)
		if err != nil {
			t.Fatal(err)
		}
		apply(&ledger.OpenRound{Round: v.Next, Q: 0.5, ClipNorm: p.Clip, Noise: p.Noise, Sigma: p.Cost.Sigma, RDP: p.Cost.RDP,
			EpsilonAfter: p.Cost.EpsilonAfter, Eligible: len(v.Clients), Slack: p.Cost.Slack, DeltaCharge: p.Cost.Delta, Groups: p.Groups, OpenedUnixMs: int64(v.Next)})
		apply(&ledger.CommitModel{Round: v.Next, Version: l.LatestVersion() + 1, Promoted: true})
		return p
	}
	open()
	apply(&ledger.EnrollClients{Clients: []ledger.Enrollment{{ID: "a-c00002", Region: "a", Budget: 100}}})
	open()
	// A client enrolled after the view is read is eligible from round 3:
	// price round 3, enrol one, and apply the round.
	v, _ := round.ViewOf(l)
	p3, err := Pricer().Price(top, dim, v)
	if err != nil {
		t.Fatal(err)
	}
	if g := p3.Groups; len(g) != 3 || g[0].From != 1 || g[1].From != 2 || g[2].From != 3 {
		t.Fatalf("groups %+v, want those eligible from rounds 1, 2 and 3", g)
	}
	apply(&ledger.EnrollClients{Clients: []ledger.Enrollment{{ID: "a-c00003", Region: "a", Budget: 100}}})
	apply(&ledger.OpenRound{Round: 3, Q: 0.5, ClipNorm: p3.Clip, Noise: p3.Noise, Sigma: p3.Cost.Sigma, RDP: p3.Cost.RDP,
		EpsilonAfter: p3.Cost.EpsilonAfter, Eligible: len(v.Clients), Slack: p3.Cost.Slack, DeltaCharge: p3.Cost.Delta, Groups: p3.Groups, OpenedUnixMs: 3})
	for id, from := range map[string]uint64{"a-c00000": 1, "a-c00001": 1, "a-c00002": 2, "a-c00003": 3} {
		got, err := l.ClientEpsilon(id)
		if err != nil {
			t.Fatal(err)
		}
		var want float64
		for _, g := range p3.Groups {
			if g.From == from {
				want = g.Epsilon
			}
		}
		if got.Public != want || want == 0 {
			t.Errorf("%s (eligible from %d): ledger reports ε %v, the round priced %v", id, from, got.Public, want)
		}
	}
}
