package global

import (
	"sync"

	"github.com/strata-fl/strata/global/round"
)

// MergedPartial is one region's partial a coordinator accepted in a round.
type MergedPartial = round.MergedPartial

// PartialRejection counts one region's partials a coordinator refused for
// one reason in a round (the reasons are round.Reason*).
type PartialRejection = round.Rejection

// PartialCounts is what this node's coordinators did with the regions'
// partials since the process started: the partials they accepted, and
// those they refused with the reason. Region "" stands for partials that
// named no region of the topology.
type PartialCounts struct {
	// Accepted counts accepted partials by region, Updates the updates
	// they summed, UpdatesRejected the updates their regions reported
	// rejected (region → reason → count).
	Accepted        map[string]int
	Updates         map[string]int
	UpdatesRejected map[string]map[string]int
	// Rejected counts refused partials: region → reason → count.
	Rejected map[string]map[string]int
	// Rounds counts the rounds reported, so that a reader knows when the
	// figures changed.
	Rounds uint64
}

// maxLoggedRounds bounds how many rounds' accepted partials a node keeps
// for the dashboard.
const maxLoggedRounds = 1024

// partialLog is what the coordinators of a node report after each round,
// kept across terms (a coordinator lives for one term; the node for the
// process) so that the metrics read what was merged rather than decode
// the bus themselves. The zero value is ready to use.
type partialLog struct {
	mu     sync.Mutex
	counts PartialCounts
	rounds map[uint64][]MergedPartial
	order  []uint64
}

func (p *partialLog) record(r RoundReport) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.rounds == nil {
		p.rounds = map[uint64][]MergedPartial{}
		p.counts = PartialCounts{Accepted: map[string]int{}, Updates: map[string]int{}, UpdatesRejected: map[string]map[string]int{}, Rejected: map[string]map[string]int{}}
	}
	for _, mp := range r.Merged {
		p.counts.Accepted[mp.Region]++
		p.counts.Updates[mp.Region] += mp.Count
		for reason, n := range mp.Rejected {
			add(p.counts.UpdatesRejected, mp.Region, reason, n)
		}
	}
	for _, rj := range r.Rejected {
		add(p.counts.Rejected, rj.Region, rj.Reason, rj.Count)
	}
	p.counts.Rounds++
	if _, seen := p.rounds[r.Round]; !seen {
		p.order = append(p.order, r.Round)
	}
	p.rounds[r.Round] = r.Merged
	for len(p.order) > maxLoggedRounds {
		delete(p.rounds, p.order[0])
		p.order = p.order[1:]
	}
}

func add(m map[string]map[string]int, k1, k2 string, n int) {
	if m[k1] == nil {
		m[k1] = map[string]int{}
	}
	m[k1][k2] += n
}

// PartialCounts returns a copy of what this node's coordinators did with
// partials since the process started.
func (n *Node) PartialCounts() PartialCounts {
	p := &n.partials
	p.mu.Lock()
	defer p.mu.Unlock()
	out := PartialCounts{Accepted: map[string]int{}, Updates: map[string]int{}, UpdatesRejected: map[string]map[string]int{}, Rejected: map[string]map[string]int{},
		Rounds: p.counts.Rounds}
	for k, v := range p.counts.Accepted {
		out.Accepted[k] = v
	}
	for k, v := range p.counts.Updates {
		out.Updates[k] = v
	}
	for k, m := range p.counts.UpdatesRejected {
		for r, v := range m {
			add(out.UpdatesRejected, k, r, v)
		}
	}
	for k, m := range p.counts.Rejected {
		for r, v := range m {
			add(out.Rejected, k, r, v)
		}
	}
	return out
}

// RoundPartials returns the partials this node's coordinator accepted in
// a round (false if it coordinated no such round, or too long ago).
func (n *Node) RoundPartials(round uint64) ([]MergedPartial, bool) {
	p := &n.partials
	p.mu.Lock()
	defer p.mu.Unlock()
	m, ok := p.rounds[round]
	return append([]MergedPartial(nil), m...), ok
}
