package global

import (
	"context"
	"encoding/binary"
	"log/slog"
	"strings"

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
		switch {
		case err != nil:
			n.cfg.Logger.Warn("registry not served", "region", region, "err", err)
		case b != nil:
			m.Respond(b)
		}
	})
}

// EnrollSubject takes enrolments and withdrawals; the leader applies them.
const EnrollSubject = "strata.global.enroll"

// EnrollRequest enrols clients (with their keys) and nodes, or withdraws
// one client's consent.
type EnrollRequest struct {
	Clients  []ledger.Enrollment `json:"clients,omitempty" msgpack:"clients,omitempty"`
	Purpose  string              `json:"purpose,omitempty" msgpack:"purpose,omitempty"`
	Nodes    []ledger.Node       `json:"nodes,omitempty" msgpack:"nodes,omitempty"`
	Withdraw string              `json:"withdraw,omitempty" msgpack:"withdraw,omitempty"`
	Reason   string              `json:"reason,omitempty" msgpack:"reason,omitempty"`
}

// ServeEnroll applies enrolment requests through raft when this node
// leads. The NATS callback only queues a request; a goroutine that ends
// with ctx applies it and replies (in the request's encoding: see
// ControlReply). RunService serves enrolments itself; this is for a
// process that runs no service (the standalone mesh).
func ServeEnroll(ctx context.Context, nc *nats.Conn, n *Node) (*nats.Subscription, error) {
	q := newControlQueue(n, slog.New(slog.DiscardHandler))
	sub, err := nc.Subscribe(EnrollSubject, q.handler(controlEnroll))
	if err != nil {
		return nil, err
	}
	go q.serve(ctx)
	return sub, nil
}
