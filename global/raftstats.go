package global

import (
	"strconv"

	"github.com/strata-fl/strata/global/ledger"
)

// RaftStats is the raft state of one node, as metrics and the dashboard
// show it.
type RaftStats struct {
	State       string `json:"state"` // Leader, Follower, Candidate, Shutdown
	Term        uint64 `json:"term"`
	LastIndex   uint64 `json:"last_index"`
	CommitIndex uint64 `json:"commit_index"`
	// AppliedIndex is the last entry the ledger has applied; CommitIndex −
	// AppliedIndex is the apply lag.
	AppliedIndex uint64 `json:"applied_index"`
}

// RaftStats reads this node's raft state. It takes no lock that Apply holds
// for long, so scraping it never stalls the ledger.
func (n *Node) RaftStats() RaftStats {
	s := RaftStats{State: n.raft.State().String(), LastIndex: n.raft.LastIndex(), CommitIndex: n.raft.CommitIndex()}
	s.Term, _ = strconv.ParseUint(n.raft.Stats()["term"], 10, 64)
	n.Read(func(l *ledger.Ledger) { s.AppliedIndex = l.Applied })
	return s
}
