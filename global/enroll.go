package global

import (
	"context"
	"time"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/identity"
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
