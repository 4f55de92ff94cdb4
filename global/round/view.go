package round

import (
	"sort"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/identity"
)

// View is what the machine reads of the ledger: copied out under the
// runner's read lock (ViewOf), so that the machine never holds replicated
// state and a test can build one from a ledger it applied commands to.
type View struct {
	// Finished and FinishReason are the ledger's.
	Finished     bool
	FinishReason string
	// Next is the number the next OpenRound must carry; Committed counts
	// the rounds that released a model.
	Next      uint64
	Committed int
	// Serving is the version new rounds train from and ServingHash its
	// hash ("" for v0, whose hash the machine knows); ServingEval is
	// its recorded evaluation (HasServingModel false for v0).
	Serving         uint64
	ServingHash     string
	ServingEval     Evaluation
	HasServingModel bool
	// Latest is the latest recorded version, promoted or not.
	Latest uint64
	// ClipNorm is the clip norm adaptive clipping set for the next round
	// (0: the topology's).
	ClipNorm float64
	// Spent is what the ledger has charged; SpentPublic is l.Spent(Public),
	// as messages report it.
	Spent       Spent
	SpentPublic float64
	// Delta is the job's δ.
	Delta float64
	// Clients are the active clients, sorted by id.
	Clients []Client
	// Groups are the active clients' groups by the round they became
	// eligible from, sorted by From: each group shares a public curve.
	Groups []Group
	// Losses are the committed models' evaluation losses, in order (early
	// stopping reads them).
	Losses []float64
	// RegistryVersion is the ledger's identity version; RegionKeys the
	// enrolled region keys, which verify the round's partials (a region
	// whose key is rotated restarts, and so signs only later rounds with
	// the new one).
	RegistryVersion uint64
	RegionKeys      map[string]string
}

// Spent is what the ledger has charged so far: the cumulative curve, ε
// slack and δ per observer.
type Spent struct {
	Curve ledger.PerObserver[[]float64]
	Slack ledger.PerObserver[float64]
	Delta float64
}

// Client is one active client as the machine sees it.
type Client struct {
	ID           string
	Region       string
	Budget       float64
	EligibleFrom uint64
}

// Group is the clients eligible since round From: their public RDP curve
// and public ε slack so far, which a round adds to.
type Group struct {
	From   uint64
	Public []float64
	Slack  float64
}

// ViewOf copies what the machine needs out of l. It only reads l.
func ViewOf(l *ledger.Ledger) (*View, error) {
	v := &View{
		Finished: l.Finished, FinishReason: l.FinishReason, Next: l.NextRound(), Committed: l.CommittedRounds(),
		Serving: l.ServingVersion(), Latest: l.LatestVersion(), ClipNorm: l.ClipNorm,
		SpentPublic: l.Spent(ledger.Public), RegistryVersion: l.RegistryVersion, RegionKeys: map[string]string{},
	}
	if m, ok := l.ServingModel(); ok {
		v.ServingHash, v.ServingEval, v.HasServingModel = m.Hash, EvaluationOf(m), true
	}
	for _, o := range ledger.Observers {
		v.Spent.Curve.Set(o, l.Curve(o))
	}
	v.Spent.Slack, v.Spent.Delta = l.Slack, l.DeltaCharged
	if l.Job != nil {
		v.Delta = l.Job.Delta
	}
	for _, m := range l.Models {
		v.Losses = append(v.Losses, m.Loss)
	}
	for _, n := range l.Nodes {
		if n.Kind == identity.KindRegion {
			v.RegionKeys[n.ID] = n.PubKey
		}
	}
	groups := map[uint64]*Group{}
	for _, c := range l.Clients {
		if c.Status != ledger.ClientActive {
			continue
		}
		v.Clients = append(v.Clients, Client{ID: c.ID, Region: c.Region, Budget: c.Budget, EligibleFrom: c.EligibleFrom})
		if groups[c.EligibleFrom] != nil {
			continue
		}
		cv, err := l.ClientCurves(c.ID)
		if err != nil {
			return nil, err
		}
		g := &Group{From: c.EligibleFrom, Public: cv.Public}
		for r := c.EligibleFrom; r < l.NextRound(); r++ {
			g.Slack += l.Rounds[r-1].Slack.Public
		}
		groups[c.EligibleFrom] = g
	}
	for _, g := range groups {
		v.Groups = append(v.Groups, *g)
	}
	sort.Slice(v.Groups, func(i, j int) bool { return v.Groups[i].From < v.Groups[j].From })
	return v, nil
}

// RegionCounts counts the active clients of each region (the top-up caps
// are sized by them).
func (v *View) RegionCounts() map[string]int {
	out := map[string]int{}
	for _, c := range v.Clients {
		out[c.Region]++
	}
	return out
}
