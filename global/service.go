package global

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/strata-fl/strata/global/ledger"
)

// Status is what a global node answers on its status subject.
type Status struct {
	ID        string `json:"id"`
	Leader    bool   `json:"leader"`
	LeaderID  string `json:"leader_id"`
	Applied   uint64 `json:"applied"`
	Rounds    int    `json:"rounds"`
	Committed int    `json:"committed"`
	Finished  bool   `json:"finished"`
	Members   []Peer `json:"members"`
}

// StatusSubject is where node id answers status requests.
func StatusSubject(id string) string { return "strata.global." + id + ".status" }

// ErrMalformedStatus is returned by RequestStatus when a node's answer is
// not a Status.
var ErrMalformedStatus = errors.New("malformed status")

// RequestStatus asks node id for its status over nc, until ctx ends.
func RequestStatus(ctx context.Context, nc *nats.Conn, id string) (Status, error) {
	m, err := nc.RequestWithContext(ctx, StatusSubject(id), nil)
	if err != nil {
		return Status{}, err
	}
	var s Status
	if err := json.Unmarshal(m.Data, &s); err != nil {
		return Status{}, fmt.Errorf("%w: %w", ErrMalformedStatus, err)
	}
	return s, nil
}

// LedgerSubject is where node id answers with its ledger's snapshot bytes
// (what `strata ledger --nats` reads from a running node).
func LedgerSubject(id string) string { return "strata.global." + id + ".ledger" }

// MembersSubject takes membership changes; the leader acts on them.
const MembersSubject = "strata.global.members"

// ModelSubject takes model rollbacks; the leader acts on them.
const ModelSubject = "strata.global.model"

// RollbackRequest asks the leader to roll the serving model back.
type RollbackRequest struct {
	To     uint64 `json:"to" msgpack:"to"`
	Reason string `json:"reason" msgpack:"reason"`
}

// MembersRequest asks the leader to add or remove a voter.
type MembersRequest struct {
	Op   string `json:"op" msgpack:"op"` // "add", "remove" or "list"
	ID   string `json:"id" msgpack:"id"`
	Addr string `json:"addr" msgpack:"addr"`
}

// MembersReply answers a MembersRequest sent in JSON (strata clients
// before msgpack requests); msgpack requests get a ControlReply.
type MembersReply struct {
	Members []Peer `json:"members"`
	Error   string `json:"error,omitempty"`
}

// ServiceConfig configures a global node process: raft node, NATS, and a
// coordinator made afresh for every term in which this node leads.
type ServiceConfig struct {
	// Node, Conn and NewCoordinator are required.
	Node           *Node
	Conn           *nats.Conn
	NewCoordinator func() (*Coordinator, error)
	// ExitWhenFinished makes Run return once the ledger records the job as
	// finished (on followers too), after FinishGrace (default 3s) so that
	// lagging followers receive the last entries first.
	ExitWhenFinished bool
	FinishGrace      time.Duration
	// Logger receives the service's logs; nil means none.
	Logger *slog.Logger
	// Job is the job whose regions this node answers registry requests
	// for; "" serves no registry.
	Job string
}

// withDefaults returns a copy with every unset field defaulted.
func (c ServiceConfig) withDefaults() ServiceConfig {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.FinishGrace == 0 {
		c.FinishGrace = 3 * time.Second
	}
	return c
}

// Validate names the first field that cannot work.
func (c ServiceConfig) Validate() error {
	switch {
	case c.Node == nil:
		return errors.New("global: ServiceConfig.Node is required")
	case c.Conn == nil:
		return errors.New("global: ServiceConfig.Conn is required")
	case c.NewCoordinator == nil:
		return errors.New("global: ServiceConfig.NewCoordinator is required")
	case c.FinishGrace < 0:
		return fmt.Errorf("global: ServiceConfig.FinishGrace %v is negative", c.FinishGrace)
	}
	return nil
}

// RunService serves status and control requests and runs the coordinator
// whenever this node leads; losing leadership stops it (the next leader
// aborts the open round, whose spend stays). Control requests (membership,
// rollback, enrolment) are queued by their NATS callbacks and served, and
// answered, by one goroutine the service owns: raft never runs on a NATS
// goroutine.
func RunService(ctx context.Context, cfg ServiceConfig) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg = cfg.withDefaults()
	stop, err := serve(ctx, cfg)
	if err != nil {
		return err
	}
	defer stop()
	return lead(ctx, cfg)
}

// serve subscribes the node's request handlers and starts the control
// goroutine; stop unsubscribes them, then stops and joins the goroutine.
func serve(ctx context.Context, cfg ServiceConfig) (stop func(), err error) {
	n := cfg.Node
	var subs []*nats.Subscription
	qctx, qcancel := context.WithCancel(ctx)
	var served sync.WaitGroup
	stop = func() {
		for _, s := range subs {
			s.Unsubscribe()
		}
		qcancel()
		served.Wait()
	}
	defer func() {
		if err != nil {
			stop()
		}
	}()
	sub := func(s *nats.Subscription, err error) error {
		if err == nil {
			subs = append(subs, s)
		}
		return err
	}
	if err := sub(cfg.Conn.Subscribe(StatusSubject(n.cfg.ID), func(m *nats.Msg) {
		b, err := json.Marshal(n.Status())
		if err == nil {
			err = m.Respond(b)
		}
		if err != nil {
			cfg.Logger.Warn("status not answered", "err", err)
		}
	})); err != nil {
		return nil, err
	}
	if err := sub(cfg.Conn.Subscribe(LedgerSubject(n.cfg.ID), func(m *nats.Msg) {
		b, err := n.Snapshot()
		if err != nil {
			// An empty answer tells the asker there is no ledger to read.
			cfg.Logger.Warn("ledger snapshot not served", "err", err)
			b = nil
		}
		m.Respond(b)
	})); err != nil {
		return nil, err
	}
	q := newControlQueue(n, cfg.Logger)
	served.Add(1)
	go func() {
		defer served.Done()
		q.serve(qctx)
	}()
	if err := sub(cfg.Conn.QueueSubscribe(MembersSubject, "leader-"+n.cfg.ID, q.handler(controlMembers))); err != nil {
		return nil, err
	}
	if err := sub(cfg.Conn.Subscribe(ModelSubject, q.handler(controlRollback))); err != nil {
		return nil, err
	}
	if err := sub(cfg.Conn.Subscribe(EnrollSubject, q.handler(controlEnroll))); err != nil {
		return nil, err
	}
	if cfg.Job != "" {
		if err := sub(ServeRegistry(cfg.Conn, n, cfg.Job)); err != nil {
			return nil, err
		}
	}
	return stop, nil
}

// lead runs a coordinator whenever this node leads, until ctx ends or (with
// ExitWhenFinished) the ledger records the job as finished.
func lead(ctx context.Context, cfg ServiceConfig) error {
	n := cfg.Node
	for {
		// Take both signals before reading the state they signal, so that
		// no change between the read and the wait is missed.
		applied, changed := n.finishedCh(), n.LeadershipChanged()
		if cfg.ExitWhenFinished && n.Status().Finished {
			select {
			case <-ctx.Done():
			case <-time.After(cfg.FinishGrace):
			}
			return nil
		}
		if n.IsLeader() {
			err := runTerm(ctx, cfg)
			switch {
			case ctx.Err() != nil:
				return nil
			case err == nil:
				continue // job finished: fall through to the finished check
			case n.IsLeader() && !errors.Is(err, ErrNotLeader):
				return err
			default:
				cfg.Logger.Warn("leadership lost during the term", "err", err)
			}
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-applied: // a follower re-reads whether the job ended
		}
	}
}

// runTerm runs a coordinator until it ends or this node stops leading.
func runTerm(ctx context.Context, cfg ServiceConfig) error {
	ctx, cancel := context.WithCancel(ctx)
	// lost records that this term ended because leadership was lost, even
	// if the node leads again by the time the coordinator returns (a
	// loaded machine can flap an election within one tick): the caller
	// must see ErrNotLeader, not the cancelled context, and start a new
	// term rather than stop the service.
	var lost atomic.Bool
	var watch sync.WaitGroup
	defer func() {
		cancel()
		watch.Wait()
	}()
	watch.Add(1)
	go func() {
		defer watch.Done()
		for {
			changed := cfg.Node.LeadershipChanged()
			if !cfg.Node.IsLeader() {
				lost.Store(true)
				cancel()
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-changed:
			}
		}
	}()
	c, err := cfg.NewCoordinator()
	if err != nil {
		return err
	}
	cfg.Logger.Info("leading: coordinator starts", "node", cfg.Node.cfg.ID)
	err = c.Run(ctx)
	if err != nil && (lost.Load() || !cfg.Node.IsLeader()) {
		return fmt.Errorf("%w: %w", ErrNotLeader, err)
	}
	return err
}

// Status reports this node's view of the cluster and the ledger.
func (n *Node) Status() Status {
	s := Status{ID: n.cfg.ID, Leader: n.IsLeader(), LeaderID: n.LeaderID(), Applied: n.AppliedIndex()}
	n.Read(func(l *ledger.Ledger) {
		s.Rounds, s.Committed, s.Finished = len(l.Rounds), l.CommittedRounds(), l.Finished
	})
	ms, err := n.Members()
	if err != nil {
		n.cfg.Logger.Warn("status: the raft configuration is unknown", "err", err)
	}
	s.Members = ms
	return s
}

// Rollback makes version `to` the serving model through the raft log. The
// ledger keeps every spend: rolling back never refunds privacy.
func (n *Node) Rollback(ctx context.Context, to uint64, reason string) error {
	res, err := n.Apply(ctx, &ledger.Rollback{To: to, Reason: reason, UnixMs: time.Now().UnixMilli()})
	if err != nil {
		return err
	}
	return res.Err
}
