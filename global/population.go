package global

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/identity"
	"github.com/strata-fl/strata/privacy"
	"github.com/strata-fl/strata/topology"
)

// enrollTopology enrolls the topology's clients with their budgets (the
// topology default, or a per-client override) and the public keys given,
// and the region and global node keys. Clients already enrolled keep their
// records (a client enrolled without a key gets the one given).
func (c *Coordinator) enrollTopology(ctx context.Context) error {
	t := c.top
	keys := map[string]string{}
	var nodes []ledger.Node
	for _, e := range c.cfg.Identities {
		switch e.Kind {
		case identity.KindClient:
			keys[e.ID] = e.Public
		case identity.KindRegion, identity.KindGlobal:
			nodes = append(nodes, ledger.Node{ID: e.ID, Kind: e.Kind, PubKey: e.Public})
		}
	}
	if len(nodes) > 0 {
		res, err := c.cfg.Node.Apply(ctx, &ledger.EnrollNodes{Nodes: nodes, UnixMs: time.Now().UnixMilli()})
		if err != nil {
			return err
		}
		if res.Err != nil {
			return res.Err
		}
	}
	var es []ledger.Enrollment
	for _, r := range t.Regions {
		for i := 0; i < r.Clients; i++ {
			id := topology.ClientID(r.ID, i)
			b := t.Privacy.Budget
			if v, ok := t.Privacy.ClientBudgets[id]; ok {
				b = v
			}
			es = append(es, ledger.Enrollment{ID: id, Region: r.ID, Budget: b, PubKey: keys[id]})
		}
	}
	// Canary clients (audit.canaries) are members like any other: enrolled,
	// budgeted, sampled and charged.
	for _, cc := range t.CanaryClients() {
		b := t.Privacy.Budget
		if v, ok := t.Privacy.ClientBudgets[cc.ID]; ok {
			b = v
		}
		es = append(es, ledger.Enrollment{ID: cc.ID, Region: cc.Region, Budget: b, PubKey: keys[cc.ID]})
	}
	res, err := c.cfg.Node.Apply(ctx, &ledger.EnrollClients{Clients: es, Purpose: "federated fine-tuning job " + t.Job, UnixMs: time.Now().UnixMilli()})
	if err != nil {
		return err
	}
	return res.Err
}

// population is the round's eligible clients after budget retirement.
type population struct {
	eligible []ledger.Client // active and staying
	retire   []string        // sorted
}

// choosePopulation drops from the eligible population every client whose
// public ε, charged for this round too, would exceed its budget. Clients
// eligible since the same round share a curve, so the ε is computed once
// per group, converted as the ledger converts a client's curve (at the δ
// left after every charge, plus the slack of the rounds that count).
func (c *Coordinator) choosePopulation(cost RoundCost) (population, error) {
	var pop population
	var clients []ledger.Client
	curves := map[uint64][]float64{}
	slack := map[uint64]float64{}
	var delta, charged float64
	var err error
	c.cfg.Node.Read(func(l *ledger.Ledger) {
		delta, charged = l.Job.Delta, l.DeltaCharged
		for _, cl := range l.Clients {
			if cl.Status != ledger.ClientActive {
				continue
			}
			clients = append(clients, cl)
			if _, ok := curves[cl.EligibleFrom]; !ok {
				var cv ledger.PerObserver[[]float64]
				if cv, err = l.ClientCurves(cl.ID); err != nil {
					return
				}
				curves[cl.EligibleFrom] = cv.Public
				for r := cl.EligibleFrom; r < l.NextRound(); r++ {
					slack[cl.EligibleFrom] += l.Rounds[r-1].Slack.Public
				}
			}
		}
	})
	if err != nil {
		return pop, err
	}
	eff, err := privacy.EffectiveDelta(delta, charged+cost.Delta)
	if err != nil {
		return pop, err
	}
	next := map[uint64]float64{}
	for from, cv := range curves {
		after := make([]float64, len(cv))
		for i := range cv {
			after[i] = cv[i] + cost.RDP.Public[i]
		}
		e, _, err := privacy.EpsilonFromRDP(after, eff)
		if err != nil {
			return pop, err
		}
		next[from] = e + slack[from] + cost.Slack.Public
	}
	for _, cl := range clients {
		if next[cl.EligibleFrom] > cl.Budget {
			pop.retire = append(pop.retire, cl.ID)
			continue
		}
		pop.eligible = append(pop.eligible, cl)
	}
	sort.Strings(pop.retire)
	return pop, nil
}

// sample Poisson-samples the eligible clients with rate q from a secure
// source, grouped by region; the ids of each region stay sorted.
func (c *Coordinator) sample(eligible []ledger.Client) (map[string][]string, []string, error) {
	q := c.top.Privacy.SamplingRate
	buf := make([]byte, 8)
	out := map[string][]string{}
	var all []string
	for _, cl := range eligible {
		if _, err := io.ReadFull(c.cfg.Rand, buf); err != nil {
			return nil, nil, fmt.Errorf("global: sampling: %w", err)
		}
		u := float64(binary.LittleEndian.Uint64(buf)>>11) / (1 << 53)
		if u < q {
			out[cl.Region] = append(out[cl.Region], cl.ID)
			all = append(all, cl.ID)
		}
	}
	sort.Strings(all)
	return out, all, nil
}

// sampledCanaries counts the canary clients sampled in the given regions:
// they are taken out of the participants reported for utility.
func (c *Coordinator) sampledCanaries(sampled map[string][]string, regions []string) int {
	if c.top.Audit.Canaries == 0 {
		return 0
	}
	canary := map[string]bool{}
	for _, cc := range c.top.CanaryClients() {
		canary[cc.ID] = true
	}
	n := 0
	for _, r := range regions {
		for _, id := range sampled[r] {
			if canary[id] {
				n++
			}
		}
	}
	return n
}
