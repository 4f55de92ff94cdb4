// Package history checks what a fault test saw happen against the
// invariants of DESIGN.md §4. A test records events from outside the
// system under test — what crossed the wire (round announcements, client
// updates, regional partials, released models), what each global node's
// ledger held each time it was read, and which nodes were restarted — and
// Check names the first event that breaks an invariant, with the events
// around it.
//
// The checker trusts nothing the system says about itself beyond the
// ledgers it reads: a round counts as charged when the ledgers of a
// majority of the nodes hold it, and everything that left a client, or
// was released, must be covered by such a round.
package history

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"

	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/internal/seal"
)

// Kind says what an event records.
type Kind string

// The kinds of event.
const (
	// Announce is a round.open seen on the wire: Round, Region, the
	// region's sampled Clients, ModelVersion.
	Announce Kind = "announce"
	// Update is a client's update for a round seen on the wire: Round,
	// Region, Client.
	Update Kind = "update"
	// Partial is a region's partial sum seen on the wire: Round, Region,
	// Count (the updates it says it summed).
	Partial Kind = "partial"
	// Model is a released model version: Version, Round (0 when the
	// observer does not know it, as for a version seen as the base of an
	// announced round), Hash, and ReadOK (its blob read back from the
	// object store and matched the hash). Version 0, the pre-trained
	// checkpoint, is no round's release and is not checked.
	Model Kind = "model"
	// Round is one round on one node's ledger as read (one view): Node,
	// View, Index (of its OpenRound), Round, ModelVersion (trained from),
	// Status, Version (the result, once committed), Count (participants),
	// Clients (sampled), EpsAfter and Cost (digest of the charged curves).
	Round Kind = "round"
	// Version is one model version on one node's ledger (one view): Node,
	// View, Version, Round, Hash.
	Version Kind = "version"
	// Restart is a node restarted from its data dir: Node.
	Restart Kind = "restart"
)

// Event is one observation. Which fields are set depends on Kind.
type Event struct {
	Kind         Kind
	Node         string
	View         int // the node's ledger read this event belongs to (1, 2, …)
	Index        uint64
	Round        uint64
	Region       string
	Client       string
	Clients      []string
	ModelVersion uint64
	Version      uint64
	Hash         string
	Status       string
	Count        int
	// EpsAfter is the cumulative ε after the round, per observer (public,
	// global operator, regional operator).
	EpsAfter [3]float64
	Cost     string
	ReadOK   bool
}

func (e Event) String() string {
	switch e.Kind {
	case Announce:
		return fmt.Sprintf("announce round %d region %s (%d sampled, from v%d)", e.Round, e.Region, len(e.Clients), e.ModelVersion)
	case Update:
		return fmt.Sprintf("update round %d region %s client %s", e.Round, e.Region, e.Client)
	case Partial:
		return fmt.Sprintf("partial round %d region %s count %d", e.Round, e.Region, e.Count)
	case Model:
		return fmt.Sprintf("model v%d round %d hash %.12s read %v", e.Version, e.Round, e.Hash, e.ReadOK)
	case Round:
		return fmt.Sprintf("%s view %d: round %d @%d %s v%d→v%d ε %.4g cost %.8s (%d sampled)", e.Node, e.View, e.Round, e.Index, e.Status, e.ModelVersion, e.Version, e.EpsAfter[0], e.Cost, len(e.Clients))
	case Version:
		return fmt.Sprintf("%s view %d: v%d of round %d hash %.12s", e.Node, e.View, e.Version, e.Round, e.Hash)
	case Restart:
		return fmt.Sprintf("restart %s", e.Node)
	}
	return fmt.Sprintf("%s (unknown kind)", e.Kind)
}

// ErrViolation is what every *Violation wraps.
var ErrViolation = errors.New("history: invariant violated")

// The invariants Check verifies, as Violation.Invariant names them.
const (
	WriteAhead          = "write-ahead"           // what left a client or was announced is covered by a charged round (§4.1)
	ReleaseAfterCommit  = "release-after-commit"  // a released model is on the ledgers, its round committed (§4.1, §4.4)
	ModelStored         = "model-stored"          // a released model reads back from the object store (§4.4)
	OneModelPerVersion  = "one-model-per-version" // a version is released with one hash only
	ChargedIdentically  = "charged-identically"   // a round's index and cost are the same on every node
	ChargedOnEveryNode  = "charged-on-every-node" // every node's last read holds every round
	SpendMonotonic      = "spend-monotonic"       // ε never decreases on any node (§4.2, §4.7)
	RoundsConsecutive   = "rounds-consecutive"    // rounds 1, 2, … each once
	VersionsConsecutive = "versions-consecutive"  // model versions 1, 2, … each once
	LedgerModelRound    = "ledger-model-round"    // a ledger's model versions and committed rounds name each other
	Resume              = "resume"                // a node's later read extends its earlier one, across restarts (§4.7)
	CountedOnce         = "counted-once"          // no update counted twice (§4.3)
)

// Violation is the first event that breaks an invariant.
type Violation struct {
	Invariant string
	Pos       int // position of the event in the history
	Event     Event
	Detail    string
	// Before and After are the events around it.
	Before, After []Event
}

func (v *Violation) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "history: %s violated at event #%d (%v): %s", v.Invariant, v.Pos, v.Event, v.Detail)
	b.WriteString("\n  events around it:")
	for i, e := range v.Before {
		fmt.Fprintf(&b, "\n     #%d %v", v.Pos-len(v.Before)+i, e)
	}
	fmt.Fprintf(&b, "\n  >> #%d %v", v.Pos, v.Event)
	for i, e := range v.After {
		fmt.Fprintf(&b, "\n     #%d %v", v.Pos+1+i, e)
	}
	return b.String()
}

// Unwrap makes errors.Is(err, ErrViolation) true.
func (v *Violation) Unwrap() error { return ErrViolation }

// Around is how many events a Violation shows on each side.
const Around = 3

// Check verifies the history and returns the violation at the earliest
// event (a *Violation), or nil.
func Check(events []Event) error {
	c := checker{events: events}
	c.run()
	if c.first == nil {
		return nil
	}
	v := c.first
	v.Event = events[v.Pos]
	v.Before = append([]Event(nil), events[max(0, v.Pos-Around):v.Pos]...)
	v.After = append([]Event(nil), events[v.Pos+1:min(len(events), v.Pos+1+Around)]...)
	return v
}

type checker struct {
	events []Event
	first  *Violation
}

func (c *checker) fail(pos int, inv, format string, args ...any) {
	if c.first == nil || pos < c.first.Pos {
		c.first = &Violation{Invariant: inv, Pos: pos, Detail: fmt.Sprintf(format, args...)}
	}
}

// view is one read of one node's ledger: positions of its events.
type view struct {
	node     string
	n        int
	rounds   []int
	versions []int
}

func (c *checker) run() {
	views := map[string][]*view{} // per node, in view order
	byKey := map[[2]any]*view{}
	for i, e := range c.events {
		if e.Kind != Round && e.Kind != Version {
			continue
		}
		k := [2]any{e.Node, e.View}
		v := byKey[k]
		if v == nil {
			v = &view{node: e.Node, n: e.View}
			byKey[k] = v
			if vs := views[e.Node]; len(vs) > 0 && vs[len(vs)-1].n >= e.View {
				c.fail(i, Resume, "view %d of %s read after its view %d", e.View, e.Node, vs[len(vs)-1].n)
			}
			views[e.Node] = append(views[e.Node], v)
		}
		if e.Kind == Round {
			v.rounds = append(v.rounds, i)
		} else {
			v.versions = append(v.versions, i)
		}
	}
	nodes := make([]string, 0, len(views))
	for n := range views {
		nodes = append(nodes, n)
	}
	slices.Sort(nodes)
	for _, n := range nodes {
		for i, v := range views[n] {
			c.checkView(v)
			if i > 0 {
				c.checkExtends(views[n][i-1], v)
			}
		}
	}
	c.checkAcrossNodes(nodes, views)
	c.checkWire(nodes, views)
}

func (c *checker) checkView(v *view) {
	ev := c.events
	models := map[uint64]Event{}
	for i, p := range v.versions {
		e := ev[p]
		if e.Version != uint64(i+1) {
			c.fail(p, VersionsConsecutive, "%s view %d: version %d at position %d, want %d", v.node, v.n, e.Version, i+1, i+1)
		}
		models[e.Version] = e
	}
	for i, p := range v.rounds {
		e := ev[p]
		if e.Round != uint64(i+1) {
			c.fail(p, RoundsConsecutive, "%s view %d: round %d at position %d, want %d", v.node, v.n, e.Round, i+1, i+1)
		}
		if i > 0 {
			prev := ev[v.rounds[i-1]]
			for o := range e.EpsAfter {
				if e.EpsAfter[o] < prev.EpsAfter[o] {
					c.fail(p, SpendMonotonic, "%s: ε[%d] after round %d is %v, after round %d it was %v", v.node, o, e.Round, e.EpsAfter[o], prev.Round, prev.EpsAfter[o])
				}
			}
			if e.Index <= prev.Index {
				c.fail(p, RoundsConsecutive, "%s: round %d at raft index %d, not after round %d's %d", v.node, e.Round, e.Index, prev.Round, prev.Index)
			}
		}
		if e.Status == "committed" {
			if m, ok := models[e.Version]; !ok || m.Round != e.Round {
				c.fail(p, LedgerModelRound, "%s: round %d committed as v%d, which the same ledger does not record as its model", v.node, e.Round, e.Version)
			}
		}
	}
	for _, p := range v.versions {
		m := ev[p]
		r := int(m.Round) - 1
		if r < 0 || r >= len(v.rounds) || ev[v.rounds[r]].Status != "committed" || ev[v.rounds[r]].Version != m.Version {
			c.fail(p, LedgerModelRound, "%s: v%d names round %d, which the same ledger does not hold committed as v%d", v.node, m.Version, m.Round, m.Version)
		}
	}
}

// checkExtends: a later read of a node holds everything the earlier one
// did, unchanged but for open rounds closing.
func (c *checker) checkExtends(old, cur *view) {
	ev := c.events
	for i, p := range old.rounds {
		o := ev[p]
		if i >= len(cur.rounds) {
			at := p
			if len(cur.rounds) > 0 {
				at = cur.rounds[len(cur.rounds)-1]
			}
			c.fail(at, Resume, "%s view %d holds %d rounds, view %d held %d: round %d was lost", cur.node, cur.n, len(cur.rounds), old.n, len(old.rounds), o.Round)
			return
		}
		n := ev[cur.rounds[i]]
		if n.Index != o.Index || n.Cost != o.Cost || n.EpsAfter != o.EpsAfter {
			c.fail(cur.rounds[i], Resume, "%s round %d was @%d cost %.8s in view %d, is @%d cost %.8s in view %d", cur.node, o.Round, o.Index, o.Cost, old.n, n.Index, n.Cost, cur.n)
		}
		if o.Status != "open" && (n.Status != o.Status || n.Version != o.Version) {
			c.fail(cur.rounds[i], Resume, "%s round %d was %s (v%d) in view %d, is %s (v%d) in view %d", cur.node, o.Round, o.Status, o.Version, old.n, n.Status, n.Version, cur.n)
		}
	}
	for i, p := range old.versions {
		if i >= len(cur.versions) {
			c.fail(p, Resume, "%s view %d lost model v%d that view %d held", cur.node, cur.n, ev[p].Version, old.n)
			return
		}
		if n := ev[cur.versions[i]]; n.Hash != ev[p].Hash || n.Round != ev[p].Round {
			c.fail(cur.versions[i], Resume, "%s v%d changed between views %d and %d", cur.node, n.Version, old.n, cur.n)
		}
	}
}

// checkAcrossNodes: a round holds the same index, cost and sample on every
// node, and every node's last read holds every round.
func (c *checker) checkAcrossNodes(nodes []string, views map[string][]*view) {
	ev := c.events
	ref := map[uint64]int{} // round → position of the first event holding it
	for i, e := range ev {
		if e.Kind != Round {
			continue
		}
		p, ok := ref[e.Round]
		if !ok {
			ref[e.Round] = i
			continue
		}
		r := ev[p]
		if r.Index != e.Index || r.Cost != e.Cost || r.EpsAfter != e.EpsAfter || !slices.Equal(r.Clients, e.Clients) || r.ModelVersion != e.ModelVersion {
			c.fail(i, ChargedIdentically, "round %d on %s (@%d, cost %.8s, ε %v, %d sampled) differs from %s's (@%d, cost %.8s, ε %v, %d sampled)", e.Round, e.Node, e.Index, e.Cost, e.EpsAfter, len(e.Clients), r.Node, r.Index, r.Cost, r.EpsAfter, len(r.Clients))
		}
	}
	most, mostNode := 0, ""
	for _, n := range nodes {
		last := views[n][len(views[n])-1]
		if len(last.rounds) > most {
			most, mostNode = len(last.rounds), n
		}
	}
	for _, n := range nodes {
		last := views[n][len(views[n])-1]
		if len(last.rounds) < most {
			full := views[mostNode][len(views[mostNode])-1]
			at := full.rounds[len(last.rounds)] // the first round n lacks
			c.fail(at, ChargedOnEveryNode, "the last read of %s holds %d rounds, %s's holds %d: round %d is missing on %s", n, len(last.rounds), mostNode, most, len(last.rounds)+1, n)
		}
	}
}

// checkWire: what crossed the wire is covered by the ledgers.
func (c *checker) checkWire(nodes []string, views map[string][]*view) {
	ev := c.events
	// A round is charged when the last reads of a majority hold it (they
	// agree on its content, or checkAcrossNodes said otherwise).
	holders := map[uint64]int{}
	charged := map[uint64]Event{}
	models := map[uint64]Event{}
	modelHolders := map[uint64]int{}
	for _, n := range nodes {
		last := views[n][len(views[n])-1]
		for _, p := range last.rounds {
			holders[ev[p].Round]++
			charged[ev[p].Round] = ev[p]
		}
		for _, p := range last.versions {
			modelHolders[ev[p].Version]++
			models[ev[p].Version] = ev[p]
		}
	}
	quorum := len(nodes)/2 + 1
	isCharged := func(r uint64) (Event, bool) {
		e, ok := charged[r]
		return e, ok && holders[r] >= quorum
	}
	released := map[uint64]string{}
	senders := map[[2]any]map[string]bool{} // (round, region) → clients
	for _, e := range ev {
		if e.Kind == Update {
			k := [2]any{e.Round, e.Region}
			if senders[k] == nil {
				senders[k] = map[string]bool{}
			}
			senders[k][e.Client] = true
		}
	}
	participants := map[uint64]int{}
	for k, s := range senders {
		participants[k[0].(uint64)] += len(s)
	}
	counted := map[[2]any]int{}
	for i, e := range ev {
		switch e.Kind {
		case Announce, Update:
			r, ok := isCharged(e.Round)
			if !ok {
				c.fail(i, WriteAhead, "round %d reached the wire but the ledgers of only %d of %d nodes hold it", e.Round, holders[e.Round], len(nodes))
				continue
			}
			if e.Kind == Announce && e.ModelVersion != r.ModelVersion {
				c.fail(i, WriteAhead, "round %d announced as training from v%d; the ledgers charged it as training from v%d", e.Round, e.ModelVersion, r.ModelVersion)
				continue
			}
			who := e.Clients
			if e.Kind == Update {
				who = []string{e.Client}
			}
			for _, cl := range who {
				if !slices.Contains(r.Clients, cl) {
					c.fail(i, WriteAhead, "client %s is on the wire for round %d, which the ledgers charged to %d other clients but not to it", cl, e.Round, len(r.Clients))
					break
				}
			}
		case Partial:
			if _, ok := isCharged(e.Round); !ok {
				c.fail(i, WriteAhead, "a partial of round %d reached the wire but the ledgers of only %d of %d nodes hold the round", e.Round, holders[e.Round], len(nodes))
			}
			k := [2]any{e.Round, e.Region}
			if s := senders[k]; e.Count > len(s) && len(senders) > 0 {
				c.fail(i, CountedOnce, "region %s's partial of round %d counts %d updates; %d distinct clients sent one", e.Region, e.Round, e.Count, len(s))
			}
			counted[k] += e.Count
		case Model:
			if e.Version == 0 {
				continue // the pre-trained checkpoint: no round released it
			}
			if h, ok := released[e.Version]; ok && h != e.Hash {
				c.fail(i, OneModelPerVersion, "v%d released as %.12s and as %.12s", e.Version, h, e.Hash)
			}
			released[e.Version] = e.Hash
			m, ok := models[e.Version]
			switch {
			case !ok || modelHolders[e.Version] < quorum:
				c.fail(i, ReleaseAfterCommit, "v%d was released but the ledgers of only %d of %d nodes record it", e.Version, modelHolders[e.Version], len(nodes))
			case m.Hash != e.Hash || e.Round != 0 && m.Round != e.Round:
				c.fail(i, ReleaseAfterCommit, "v%d released as round %d hash %.12s, the ledgers record round %d hash %.12s", e.Version, e.Round, e.Hash, m.Round, m.Hash)
			default:
				if r, ok := isCharged(m.Round); !ok || r.Status != "committed" || r.Version != e.Version {
					c.fail(i, ReleaseAfterCommit, "v%d released for round %d, which the ledgers do not hold committed as v%d", e.Version, m.Round, e.Version)
				}
			}
			if !e.ReadOK {
				c.fail(i, ModelStored, "v%d is not readable from the object store with its hash", e.Version)
			}
		}
	}
	if len(senders) == 0 {
		return // no updates recorded: nothing to count against
	}
	for r, e := range charged {
		if e.Status == "committed" && e.Count > participants[r] {
			p := slices.IndexFunc(ev, func(x Event) bool { return x.Kind == Round && x.Round == r })
			c.fail(p, CountedOnce, "round %d committed with %d participants; %d distinct clients sent an update", r, e.Count, participants[r])
		}
	}
}

// Recorder collects events from concurrent observers, in the order it
// receives them. The zero value is ready.
type Recorder struct {
	mu     sync.Mutex
	events []Event
	views  map[string]int
}

// Add records e as it is.
func (r *Recorder) Add(e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

// Ledger records one read of node's ledger as a new view.
func (r *Recorder) Ledger(node string, l *ledger.Ledger) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.views == nil {
		r.views = map[string]int{}
	}
	r.views[node]++
	r.events = append(r.events, FromLedger(node, r.views[node], l)...)
}

// DataDir records the ledger of a stopped node read from its data dir (as
// `strata ledger --data` reads it).
func (r *Recorder) DataDir(node, dir string, key *seal.Key) error {
	l, err := global.ReadLedgerKey(dir, key)
	if err != nil {
		return fmt.Errorf("history: %s: %w", node, err)
	}
	r.Ledger(node, l)
	return nil
}

// Events returns a copy of the history so far.
func (r *Recorder) Events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// FromLedger turns one read of a node's ledger into events: one per
// round, then one per model version.
func FromLedger(node string, view int, l *ledger.Ledger) []Event {
	sampled := map[uint64][]string{}
	for _, cl := range l.Clients {
		for _, r := range cl.Sampled {
			sampled[r] = append(sampled[r], cl.ID)
		}
	}
	var out []Event
	for i := range l.Rounds {
		r := &l.Rounds[i]
		cs := sampled[r.Round]
		slices.Sort(cs)
		out = append(out, Event{Kind: Round, Node: node, View: view, Index: r.Index, Round: r.Round, ModelVersion: r.ModelVersion,
			Status: r.Status, Version: r.ResultVersion, Count: r.Participants, Clients: cs,
			EpsAfter: [3]float64{r.EpsilonAfter.Public, r.EpsilonAfter.GlobalOperator, r.EpsilonAfter.RegionalOperator},
			Cost:     costDigest(l.StepCurves(r), r.EpsilonAfter)})
	}
	for _, m := range l.Models {
		out = append(out, Event{Kind: Version, Node: node, View: view, Version: m.Version, Round: m.Round, Hash: m.Hash})
	}
	return out
}

// costDigest identifies what a round charged: its one-step curves and the
// ε after it, bit for bit.
func costDigest(step ledger.PerObserver[[]float64], after ledger.PerObserver[float64]) string {
	h := sha256.New()
	var b [8]byte
	put := func(v float64) { binary.BigEndian.PutUint64(b[:], math.Float64bits(v)); h.Write(b[:]) }
	for _, o := range ledger.Observers {
		c := step.Get(o)
		binary.BigEndian.PutUint64(b[:], uint64(len(c)))
		h.Write(b[:])
		for _, v := range c {
			put(v)
		}
		put(after.Get(o))
	}
	return hex.EncodeToString(h.Sum(nil))
}
