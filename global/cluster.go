package global

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/raft"
)

// Peer is one voter of the global tier's raft cluster.
type Peer struct {
	ID   string
	Addr string // host:port of its raft transport
}

// ParsePeers reads "g1=127.0.0.1:7001,g2=…" into peers, naming what is wrong.
func ParsePeers(s string) ([]Peer, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []Peer
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		id, addr, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || id == "" || addr == "" {
			return nil, fmt.Errorf("global: peer %q: want ID=HOST:PORT, e.g. g1=127.0.0.1:7001", part)
		}
		if seen[id] {
			return nil, fmt.Errorf("global: peer id %q listed twice", id)
		}
		seen[id] = true
		out = append(out, Peer{ID: id, Addr: addr})
	}
	return out, nil
}

// LeaderID returns the id of the current leader ("" if none is known).
func (n *Node) LeaderID() string {
	_, id := n.raft.LeaderWithID()
	return string(id)
}

// AppliedIndex returns the last log index applied to this node's ledger.
func (n *Node) AppliedIndex() uint64 { return n.raft.AppliedIndex() }

// Members lists the cluster's voters, sorted by id.
func (n *Node) Members() ([]Peer, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("global %s: configuration: %w", n.cfg.ID, err)
	}
	var out []Peer
	for _, s := range f.Configuration().Servers {
		out = append(out, Peer{ID: string(s.ID), Addr: string(s.Address)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// AddVoter adds a node to the cluster; only the leader can.
func (n *Node) AddVoter(p Peer) error {
	if !n.IsLeader() {
		return fmt.Errorf("%w (leader is %q)", ErrNotLeader, n.LeaderID())
	}
	return n.raft.AddVoter(raft.ServerID(p.ID), raft.ServerAddress(p.Addr), 0, 10*time.Second).Error()
}

// RemoveServer removes a node from the cluster; only the leader can.
func (n *Node) RemoveServer(id string) error {
	if !n.IsLeader() {
		return fmt.Errorf("%w (leader is %q)", ErrNotLeader, n.LeaderID())
	}
	return n.raft.RemoveServer(raft.ServerID(id), 0, 10*time.Second).Error()
}

// TakeSnapshot forces a raft snapshot and returns its size in bytes.
func (n *Node) TakeSnapshot() (int64, error) {
	f := n.raft.Snapshot()
	if err := f.Error(); err != nil {
		return 0, fmt.Errorf("global %s: snapshot: %w", n.cfg.ID, err)
	}
	meta, rc, err := f.Open()
	if err != nil {
		return 0, fmt.Errorf("global %s: open snapshot: %w", n.cfg.ID, err)
	}
	rc.Close()
	return meta.Size, nil
}
