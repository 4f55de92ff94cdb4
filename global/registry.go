package global

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/identity"
	"github.com/strata-fl/strata/mesh"
)

// RegistryOf is what a region verifies senders against: its clients'
// keys and consent, and the enrolled region and global node keys.
func RegistryOf(l *ledger.Ledger, region string) *identity.Registry {
	var es []identity.Entry
	for _, c := range l.Clients {
		if c.Region != region {
			continue
		}
		status := identity.StatusActive
		switch c.Status {
		case ledger.ClientWithdrawn:
			status = identity.StatusWithdrawn
		case ledger.ClientRetired:
			status = identity.StatusRetired
		}
		es = append(es, identity.Entry{ID: c.ID, Kind: identity.KindClient, Region: c.Region, Public: c.PubKey, Status: status})
	}
	for _, n := range l.Nodes {
		es = append(es, identity.Entry{ID: n.ID, Kind: n.Kind, Public: n.PubKey, Status: identity.StatusActive})
	}
	return identity.NewRegistry(l.RegistryVersion, es)
}

// ServeRegistry answers regions' registry requests on every global node
// whose ledger is at least as recent as the version asked for (the request
// body, 8 bytes big-endian); a lagging follower stays silent and the region
// takes the first answer.
func ServeRegistry(nc *nats.Conn, n *Node, job string) (*nats.Subscription, error) {
	subj, err := mesh.RegistryWildcard(job)
	if err != nil {
		return nil, err
	}
	return nc.Subscribe(subj, func(m *nats.Msg) {
		region := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
		var want uint64
		if len(m.Data) == 8 {
			want = binary.BigEndian.Uint64(m.Data)
		}
		var b []byte
		var err error
		n.Read(func(l *ledger.Ledger) {
			if l.RegistryVersion < want {
				return
			}
			b, err = identity.EncodeRegistry(RegistryOf(l, region))
		})
		if err == nil && b != nil {
			m.Respond(b)
		}
	})
}

// EnrollSubject takes enrolments and withdrawals; the leader applies them.
const EnrollSubject = "strata.global.enroll"

// EnrollRequest enrols clients (with their keys) and nodes, or withdraws
// one client's consent.
type EnrollRequest struct {
	Clients  []ledger.Enrollment `json:"clients,omitempty"`
	Purpose  string              `json:"purpose,omitempty"`
	Nodes    []ledger.Node       `json:"nodes,omitempty"`
	Withdraw string              `json:"withdraw,omitempty"`
	Reason   string              `json:"reason,omitempty"`
}

// ServeEnroll applies enrolment requests through raft when this node leads.
func ServeEnroll(ctx context.Context, nc *nats.Conn, n *Node) (*nats.Subscription, error) {
	return nc.Subscribe(EnrollSubject, func(m *nats.Msg) {
		if !n.IsLeader() {
			return
		}
		reply := map[string]string{}
		if err := n.enroll(ctx, m.Data); err != nil {
			reply["error"] = err.Error()
		}
		b, _ := json.Marshal(reply)
		m.Respond(b)
	})
}

func (n *Node) enroll(ctx context.Context, body []byte) error {
	var req EnrollRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return fmt.Errorf("malformed enrol request: %w", err)
	}
	now := time.Now().UnixMilli()
	var cmds []ledger.Command
	for _, c := range req.Clients {
		if err := identity.ValidPublic(c.PubKey); c.PubKey != "" && err != nil {
			return fmt.Errorf("client %q: %w", c.ID, err)
		}
	}
	if len(req.Nodes) > 0 {
		cmds = append(cmds, &ledger.EnrollNodes{Nodes: req.Nodes, UnixMs: now})
	}
	if len(req.Clients) > 0 {
		purpose := req.Purpose
		if purpose == "" {
			purpose = "federated fine-tuning"
		}
		cmds = append(cmds, &ledger.EnrollClients{Clients: req.Clients, Purpose: purpose, UnixMs: now})
	}
	if req.Withdraw != "" {
		cmds = append(cmds, &ledger.Withdraw{Client: req.Withdraw, Reason: req.Reason, UnixMs: now})
	}
	if len(cmds) == 0 {
		return fmt.Errorf("empty enrol request: give clients, nodes or withdraw")
	}
	for _, c := range cmds {
		res, err := n.Apply(ctx, c)
		if err != nil {
			return err
		}
		if res.Err != nil {
			return res.Err
		}
	}
	return nil
}
