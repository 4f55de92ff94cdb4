package ledger

import (
	"errors"
	"fmt"
	"sort"

	"github.com/strata-fl/strata/privacy"
)

// Client statuses.
const (
	ClientActive    = "active"
	ClientRetired   = "retired"   // left the eligible population: its next round would exceed its budget
	ClientWithdrawn = "withdrawn" // consent withdrawn
)

// Errors of per-client commands.
var (
	ErrUnknownClient = errors.New("ledger: unknown client")
	ErrNotEligible   = errors.New("ledger: client is not eligible")
	ErrKeyConflict   = errors.New("ledger: a different key is already enrolled")
)

// Client is one enrolled client and what the ledger needs to account it:
// the rounds it was eligible for (public ε composes over them, sampled or
// not) and the rounds it was sampled in (operator ε composes over them).
type Client struct {
	// Clients are the bulk of a snapshot: encode them as arrays, not maps.
	_msgpack struct{} `msgpack:",as_array" json:"-"`

	ID     string  `msgpack:"id" json:"id"`
	Region string  `msgpack:"region" json:"region"`
	Budget float64 `msgpack:"budget" json:"budget"` // public ε the client may spend
	Status string  `msgpack:"status" json:"status"`
	// EligibleFrom is the first round it could be sampled in; EligibleUntil
	// the first round it no longer could (0 while active).
	EligibleFrom  uint64   `msgpack:"eligible_from" json:"eligible_from"`
	EligibleUntil uint64   `msgpack:"eligible_until" json:"eligible_until"`
	Sampled       []uint64 `msgpack:"sampled" json:"sampled"`
	EnrolledMs    int64    `msgpack:"enrolled_ms" json:"enrolled_ms"`
	Purpose       string   `msgpack:"purpose" json:"purpose"`
	WithdrawnMs   int64    `msgpack:"withdrawn_ms,omitempty" json:"withdrawn_ms,omitempty"`
	// PubKey is the client's enrolled Ed25519 public key (NKey form); its
	// updates are accepted only when signed by it.
	PubKey string `msgpack:"pub_key" json:"pub_key,omitempty"`
}

// Enrollment is one client in an EnrollClients command.
type Enrollment struct {
	ID     string  `msgpack:"id"`
	Region string  `msgpack:"region"`
	Budget float64 `msgpack:"budget"`
	// PubKey registers the client's key; a client enrolled without one
	// may get one later, once. A different key for a keyed client is
	// refused: withdraw it and enrol a new ID.
	PubKey string `msgpack:"pub_key,omitempty"`
}

// EnrollClients adds clients with their consent record; a client already
// enrolled is left as it is, so a retried command changes nothing.
type EnrollClients struct {
	Clients []Enrollment `msgpack:"clients"`
	Purpose string       `msgpack:"purpose"`
	UnixMs  int64        `msgpack:"unix_ms"`
}

// Withdraw revokes a client's consent: it is never sampled again and its
// spend stays on record.
type Withdraw struct {
	Client string `msgpack:"client"`
	Reason string `msgpack:"reason"`
	UnixMs int64  `msgpack:"unix_ms"`
}

// Kind implementations.
func (*EnrollClients) Kind() Kind { return KindEnrollClients }
func (*Withdraw) Kind() Kind      { return KindWithdraw }

// client returns the index of id in the sorted client list.
func (l *Ledger) client(id string) (int, bool) {
	i := sort.Search(len(l.Clients), func(i int) bool { return l.Clients[i].ID >= id })
	return i, i < len(l.Clients) && l.Clients[i].ID == id
}

// Client returns a copy of one client's record.
func (l *Ledger) Client(id string) (Client, bool) {
	i, ok := l.client(id)
	if !ok {
		return Client{}, false
	}
	c := l.Clients[i]
	c.Sampled = append([]uint64(nil), c.Sampled...)
	return c, true
}

func (l *Ledger) enroll(c *EnrollClients) Result {
	if l.Job == nil {
		return Result{Err: ErrNoJob}
	}
	for _, e := range c.Clients { // check all before changing anything
		if i, ok := l.client(e.ID); ok && e.PubKey != "" && l.Clients[i].PubKey != "" && l.Clients[i].PubKey != e.PubKey {
			return Result{Err: fmt.Errorf("%w: client %q", ErrKeyConflict, e.ID)}
		}
	}
	changed := 0
	for _, e := range c.Clients {
		i, ok := l.client(e.ID)
		if ok {
			if e.PubKey != "" && l.Clients[i].PubKey == "" {
				l.Clients[i].PubKey = e.PubKey
				changed++
			}
			continue
		}
		l.Clients = append(l.Clients, Client{})
		copy(l.Clients[i+1:], l.Clients[i:])
		l.Clients[i] = Client{ID: e.ID, Region: e.Region, Budget: e.Budget, Status: ClientActive,
			EligibleFrom: l.NextRound(), EnrolledMs: c.UnixMs, Purpose: c.Purpose, PubKey: e.PubKey}
		changed++
	}
	if changed > 0 {
		l.RegistryVersion++
	}
	return Result{Duplicate: changed == 0 && len(c.Clients) > 0}
}

func (l *Ledger) withdraw(c *Withdraw) Result {
	i, ok := l.client(c.Client)
	if !ok {
		return Result{Err: fmt.Errorf("%w: %q", ErrUnknownClient, c.Client)}
	}
	cl := &l.Clients[i]
	if cl.Status == ClientWithdrawn {
		return Result{Duplicate: true}
	}
	if cl.Status == ClientActive {
		cl.EligibleUntil = l.NextRound()
	}
	cl.Status = ClientWithdrawn
	cl.WithdrawnMs = c.UnixMs
	l.RegistryVersion++
	return Result{}
}

// checkRoundClients validates an OpenRound's client lists before anything
// changes: retirees must be active, sampled clients active and not retiring.
func (l *Ledger) checkRoundClients(c *OpenRound) error {
	retiring := map[string]bool{}
	for _, id := range c.Retire {
		i, ok := l.client(id)
		if !ok {
			return fmt.Errorf("%w: retire %q", ErrUnknownClient, id)
		}
		if l.Clients[i].Status != ClientActive {
			return fmt.Errorf("%w: retire %q, which is %s", ErrNotEligible, id, l.Clients[i].Status)
		}
		retiring[id] = true
	}
	for _, id := range c.SampledClients {
		i, ok := l.client(id)
		if !ok {
			return fmt.Errorf("%w: sampled %q", ErrUnknownClient, id)
		}
		if l.Clients[i].Status != ClientActive || retiring[id] {
			return fmt.Errorf("%w: sampled %q, which is %s", ErrNotEligible, id, l.Clients[i].Status)
		}
		if l.Job.Signed && l.Clients[i].PubKey == "" {
			return fmt.Errorf("%w: sampled %q, which has no enrolled key", ErrNotEligible, id)
		}
	}
	return l.checkClientBudgets(c, retiring)
}

// checkClientBudgets holds every client that stays eligible through the
// round (sampled or not: public ε composes over eligible rounds) to its
// budget, by its group's ε as the proposer priced it. Only comparisons:
// a NaN ε is over any budget.
func (l *Ledger) checkClientBudgets(c *OpenRound, retiring map[string]bool) error {
	if c.Groups == nil && !l.Job.ClientBudgets {
		return nil // a round of a job started before rounds priced their groups
	}
	for i := 1; i < len(c.Groups); i++ {
		if c.Groups[i].From <= c.Groups[i-1].From {
			return fmt.Errorf("%w: round %d: groups not sorted by round (%d after %d)", ErrInvalid, c.Round, c.Groups[i].From, c.Groups[i-1].From)
		}
	}
	for _, cl := range l.Clients {
		if cl.Status != ClientActive || retiring[cl.ID] {
			continue
		}
		j := sort.Search(len(c.Groups), func(j int) bool { return c.Groups[j].From >= cl.EligibleFrom })
		if j == len(c.Groups) || c.Groups[j].From != cl.EligibleFrom {
			return fmt.Errorf("%w: round %d prices no group eligible from round %d (client %q)", ErrInvalid, c.Round, cl.EligibleFrom, cl.ID)
		}
		if e := c.Groups[j].Epsilon; !(e <= cl.Budget) {
			return fmt.Errorf("%w: round %d would bring client %q (eligible from round %d) to public ε %.4g, over its budget %.4g; it must be retired", ErrClientBudget, c.Round, cl.ID, cl.EligibleFrom, e, cl.Budget)
		}
	}
	return nil
}

func (l *Ledger) applyRoundClients(c *OpenRound) {
	for _, id := range c.Retire {
		i, _ := l.client(id)
		l.Clients[i].Status = ClientRetired
		l.Clients[i].EligibleUntil = c.Round
	}
	for _, id := range c.SampledClients {
		i, _ := l.client(id)
		l.Clients[i].Sampled = append(l.Clients[i].Sampled, c.Round)
	}
}

// Eligible returns the ids of the clients a round may sample, sorted:
// active ones, and in a signed job only those with an enrolled key.
func (l *Ledger) Eligible() []string {
	var out []string
	for _, c := range l.Clients {
		if c.Status == ClientActive && (l.Job == nil || !l.Job.Signed || c.PubKey != "") {
			out = append(out, c.ID)
		}
	}
	return out
}

// ClientCurves returns a client's cumulative RDP curves: public (and
// fellow clients, unless they could see the round's sample) over the rounds
// it was eligible for, operators over the rounds it was sampled in. It only
// adds recorded per-round curves; it is safe on any replica.
func (l *Ledger) ClientCurves(id string) (PerObserver[[]float64], error) {
	var out PerObserver[[]float64]
	i, ok := l.client(id)
	if !ok {
		return out, fmt.Errorf("%w: %q", ErrUnknownClient, id)
	}
	n := len(l.Job.Orders)
	for _, o := range Observers {
		out.Set(o, make([]float64, n))
	}
	l.countedRounds(l.Clients[i], func(step *PerObserver[[]float64], _ PerObserver[float64], times float64, o Observer) {
		addCurve(out.Get(o), step.Get(o), times)
	})
	return out, nil
}

// countedRounds calls f, with a round's one-step curves and slack and how
// many times they count, for every round that charges client c against
// each observer: public over the rounds c was eligible for, fellow clients
// too unless the round exposed its sample to them, operators (and fellow
// clients in exposing rounds) over the rounds c was sampled in; and, for a
// client still eligible when a job stopped early, the planned rounds not
// run, against every observer as if it were sampled in each.
func (l *Ledger) countedRounds(c Client, f func(step *PerObserver[[]float64], slack PerObserver[float64], times float64, o Observer)) {
	until := c.EligibleUntil
	if until == 0 {
		until = l.NextRound()
	}
	for r := c.EligibleFrom; r < until && r <= uint64(len(l.Rounds)); r++ {
		e := &l.Rounds[r-1]
		st := l.StepCurves(e)
		f(&st, e.Slack, 1, Public)
		if !e.FellowExposed {
			f(&st, e.Slack, 1, FellowClients)
		}
	}
	for _, r := range c.Sampled {
		e := &l.Rounds[r-1]
		st := l.StepCurves(e)
		f(&st, e.Slack, 1, GlobalOperator)
		f(&st, e.Slack, 1, RegionalOperator)
		if e.FellowExposed {
			f(&st, e.Slack, 1, FellowClients)
		}
	}
	if p := l.Planned; p != nil && c.EligibleUntil == 0 && c.Status == ClientActive {
		for _, o := range Observers {
			f(&p.RDP, p.Slack, float64(p.Rounds), o)
		}
	}
}

func addCurve(dst, src []float64, times float64) {
	for i := range dst {
		if i < len(src) {
			dst[i] += times * src[i]
		}
	}
}

// ClientEpsilon converts a client's curves to ε per observer at the job's
// δ less every δ the rounds charged, plus the ε slack of the rounds that
// count for it. It reads state and never runs inside Apply.
func (l *Ledger) ClientEpsilon(id string) (PerObserver[float64], error) {
	var out PerObserver[float64]
	curves, err := l.ClientCurves(id)
	if err != nil {
		return out, err
	}
	delta, err := privacy.EffectiveDelta(l.Job.Delta, l.DeltaCharged)
	if err != nil {
		return out, err
	}
	i, _ := l.client(id)
	var slack PerObserver[float64]
	l.countedRounds(l.Clients[i], func(_ *PerObserver[[]float64], s PerObserver[float64], times float64, o Observer) {
		slack.Set(o, slack.Get(o)+times*s.Get(o))
	})
	for _, o := range Observers {
		e, _, err := privacy.EpsilonFromRDP(curves.Get(o), delta)
		if err != nil {
			return out, err
		}
		out.Set(o, e+slack.Get(o))
	}
	return out, nil
}

// Node is an enrolled region or global node identity.
type Node struct {
	ID         string `msgpack:"id" json:"id"`
	Kind       string `msgpack:"kind" json:"kind"` // "region" or "global"
	PubKey     string `msgpack:"pub_key" json:"pub_key"`
	EnrolledMs int64  `msgpack:"enrolled_ms" json:"enrolled_ms"`
}

// EnrollNodes records region and global node keys. Re-enrolling a node
// with a new key replaces it (key rotation); the audit chain keeps both.
type EnrollNodes struct {
	Nodes  []Node `msgpack:"nodes"`
	UnixMs int64  `msgpack:"unix_ms"`
}

// Kind implementation.
func (*EnrollNodes) Kind() Kind { return KindEnrollNodes }

func (l *Ledger) enrollNodes(c *EnrollNodes) Result {
	for _, n := range c.Nodes {
		if n.Kind != "region" && n.Kind != "global" {
			return Result{Err: fmt.Errorf("%w: node %q has kind %q; want region or global", ErrInvalid, n.ID, n.Kind)}
		}
		if n.ID == "" || n.PubKey == "" {
			return Result{Err: fmt.Errorf("%w: node needs an id and a key", ErrInvalid)}
		}
	}
	changed := 0
	for _, n := range c.Nodes {
		n.EnrolledMs = c.UnixMs
		i := sort.Search(len(l.Nodes), func(i int) bool {
			a := l.Nodes[i]
			return a.Kind > n.Kind || a.Kind == n.Kind && a.ID >= n.ID
		})
		if i < len(l.Nodes) && l.Nodes[i].Kind == n.Kind && l.Nodes[i].ID == n.ID {
			if l.Nodes[i].PubKey != n.PubKey {
				l.Nodes[i] = n
				changed++
			}
			continue
		}
		l.Nodes = append(l.Nodes, Node{})
		copy(l.Nodes[i+1:], l.Nodes[i:])
		l.Nodes[i] = n
		changed++
	}
	if changed > 0 {
		l.RegistryVersion++
	}
	return Result{Duplicate: changed == 0 && len(c.Nodes) > 0}
}

// NodeKey returns the enrolled key of a region or global node.
func (l *Ledger) NodeKey(kind, id string) (string, bool) {
	for _, n := range l.Nodes {
		if n.Kind == kind && n.ID == id {
			return n.PubKey, true
		}
	}
	return "", false
}
