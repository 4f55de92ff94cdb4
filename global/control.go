package global

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hashicorp/raft"
	"github.com/nats-io/nats.go"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/identity"
	"github.com/strata-fl/strata/internal/msgcheck"
)

// ControlCode says how the leader answered a control request (membership,
// rollback, enrolment). Values cross the wire: never reuse one.
type ControlCode uint16

// Control reply codes.
const (
	// CodeOK: done.
	CodeOK ControlCode = 0
	// CodeMalformed: the request could not be decoded.
	CodeMalformed ControlCode = 1
	// CodeInvalid: the request asks for something that cannot be (an
	// unknown op, a malformed key, nothing at all).
	CodeInvalid ControlCode = 2
	// CodeNotLeader: the node lost leadership before it could act; ask
	// again (the leader answers).
	CodeNotLeader ControlCode = 3
	// CodeBusy: the leader's control queue was full; ask again later.
	CodeBusy ControlCode = 4
	// CodeRejected: the ledger refused the command; Reason holds the
	// ledger's reason code (ledger.ReasonCode, e.g. "rollback").
	CodeRejected ControlCode = 5
	// CodeFailed: raft or something else failed; Error says what.
	CodeFailed ControlCode = 6
)

var codeNames = map[ControlCode]string{CodeOK: "ok", CodeMalformed: "malformed", CodeInvalid: "invalid",
	CodeNotLeader: "not_leader", CodeBusy: "busy", CodeRejected: "rejected", CodeFailed: "failed"}

func (c ControlCode) String() string {
	if s, ok := codeNames[c]; ok {
		return s
	}
	return fmt.Sprintf("code_%d", uint16(c))
}

// ControlReply answers every control request sent in msgpack (the
// Request* functions send them so). Requests sent in JSON, as strata
// clients before it did, get the JSON replies they expect.
type ControlReply struct {
	Version uint8       `msgpack:"v"`
	Code    ControlCode `msgpack:"code"`
	// Reason is the ledger's reason code when Code is CodeRejected.
	Reason string `msgpack:"reason,omitempty"`
	// Error is a human-readable detail; never compare it.
	Error string `msgpack:"error,omitempty"`
	// Members is the voter set after a membership request.
	Members []Peer `msgpack:"members,omitempty"`
}

// controlReplyVersion is ControlReply.Version.
const controlReplyVersion = 1

// ErrControl is what every *ControlError is (errors.Is).
var ErrControl = errors.New("global: control request refused")

// ControlError is a control request's refusal, as the leader coded it.
type ControlError struct {
	Code   ControlCode
	Reason string
	Msg    string
}

func (e *ControlError) Error() string {
	if e.Reason != "" {
		return fmt.Sprintf("global: control request %s (%s): %s", e.Code, e.Reason, e.Msg)
	}
	return fmt.Sprintf("global: control request %s: %s", e.Code, e.Msg)
}

// Is makes errors.Is(err, ErrControl) true, and ErrNotLeader for
// CodeNotLeader.
func (e *ControlError) Is(target error) bool {
	return target == ErrControl || (target == ErrNotLeader && e.Code == CodeNotLeader)
}

// Err is the reply's refusal, or nil.
func (r ControlReply) Err() error {
	if r.Code == CodeOK {
		return nil
	}
	return &ControlError{Code: r.Code, Reason: r.Reason, Msg: r.Error}
}

// codeOf codes the error a control request ended with.
func codeOf(err error) ControlReply {
	var rej *rejection
	switch {
	case err == nil:
		return ControlReply{Code: CodeOK}
	case errors.As(err, &rej):
		return ControlReply{Code: CodeRejected, Reason: ledger.ReasonCode(rej.err), Error: rej.err.Error()}
	case errors.Is(err, errMalformed):
		return ControlReply{Code: CodeMalformed, Error: err.Error()}
	case errors.Is(err, errInvalid):
		return ControlReply{Code: CodeInvalid, Error: err.Error()}
	case errors.Is(err, ErrNotLeader), errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost):
		return ControlReply{Code: CodeNotLeader, Error: err.Error()}
	}
	return ControlReply{Code: CodeFailed, Error: err.Error()}
}

var (
	errMalformed = errors.New("malformed request")
	errInvalid   = errors.New("invalid request")
)

// rejection carries a ledger's business rejection to codeOf.
type rejection struct{ err error }

func (r *rejection) Error() string { return r.err.Error() }
func (r *rejection) Unwrap() error { return r.err }

// applyAll commits cmds in order through raft, stopping at the first
// failure; a business rejection comes back as a *rejection.
func (n *Node) applyAll(ctx context.Context, cmds ...ledger.Command) error {
	for _, c := range cmds {
		res, err := n.Apply(ctx, c)
		if err != nil {
			return err
		}
		if res.Err != nil {
			return &rejection{res.Err}
		}
	}
	return nil
}

// controlKind is what a control request asks for.
type controlKind int

const (
	controlMembers controlKind = iota
	controlRollback
	controlEnroll
)

// isJSON reports a request sent in JSON (strata clients before msgpack
// requests: an object), rather than msgpack (whose map never starts with
// '{', the positive integer 123).
func isJSON(b []byte) bool {
	b = bytes.TrimLeft(b, " \t\r\n")
	return len(b) > 0 && b[0] == '{'
}

// decodeRequest decodes a JSON or msgpack request into v.
func decodeRequest(b []byte, v any) error {
	if isJSON(b) {
		if err := json.Unmarshal(b, v); err != nil {
			return fmt.Errorf("%w: %w", errMalformed, err)
		}
		return nil
	}
	if err := msgcheck.Validate(b); err != nil {
		return fmt.Errorf("%w: %w", errMalformed, err)
	}
	if err := msgpack.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: %w", errMalformed, err)
	}
	return nil
}

// controlQueueSize bounds the requests waiting for the control goroutine.
const controlQueueSize = 64

type controlRequest struct {
	kind controlKind
	msg  *nats.Msg
}

// controlQueue takes control requests off the NATS goroutines, which must
// never block (raft Apply and membership changes can take seconds), into a
// bounded queue that one goroutine serves in order and replies from, in
// the manner of nats-server's ipqueue. A full queue answers busy at once
// and counts the drop (Node.ControlDrops).
type controlQueue struct {
	node *Node
	ch   chan controlRequest
	log  *slog.Logger
}

func newControlQueue(n *Node, log *slog.Logger) *controlQueue {
	return &controlQueue{node: n, ch: make(chan controlRequest, controlQueueSize), log: log}
}

// handler is the NATS callback for one kind of request: only the leader
// takes requests, and it only queues them.
func (q *controlQueue) handler(kind controlKind) nats.MsgHandler {
	return func(m *nats.Msg) {
		if !q.node.IsLeader() {
			return // only the leader answers
		}
		select {
		case q.ch <- controlRequest{kind: kind, msg: m}:
		default:
			q.node.controlDrops.Add(1)
			q.reply(controlRequest{kind: kind, msg: m}, ControlReply{Code: CodeBusy, Error: "the leader's control queue is full: ask again later"})
		}
	}
}

// serve answers the queued requests until ctx ends.
func (q *controlQueue) serve(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-q.ch:
			q.reply(r, q.handle(ctx, r))
		}
	}
}

func (q *controlQueue) handle(ctx context.Context, r controlRequest) ControlReply {
	n := q.node
	switch r.kind {
	case controlMembers:
		var req MembersRequest
		err := decodeRequest(r.msg.Data, &req)
		if err == nil {
			err = n.changeMembers(req)
		}
		rep := codeOf(err)
		ms, merr := n.Members()
		if merr != nil {
			q.log.Warn("members not listed in the reply", "err", merr)
		}
		rep.Members = ms
		return rep
	case controlRollback:
		var req RollbackRequest
		err := decodeRequest(r.msg.Data, &req)
		if err == nil {
			err = n.applyAll(ctx, &ledger.Rollback{To: req.To, Reason: req.Reason, UnixMs: time.Now().UnixMilli()})
		}
		return codeOf(err)
	default:
		var req EnrollRequest
		err := decodeRequest(r.msg.Data, &req)
		if err == nil {
			err = n.enroll(ctx, req)
		}
		return codeOf(err)
	}
}

// reply answers in the request's own encoding: msgpack requests get a
// ControlReply, JSON requests the JSON their clients decode.
func (q *controlQueue) reply(r controlRequest, rep ControlReply) {
	rep.Version = controlReplyVersion
	var b []byte
	var err error
	switch {
	case !isJSON(r.msg.Data):
		b, err = msgpack.Marshal(&rep)
	case r.kind == controlMembers:
		b, err = json.Marshal(MembersReply{Members: rep.Members, Error: rep.Error})
	default:
		legacy := map[string]string{}
		if rep.Code != CodeOK {
			legacy["error"] = rep.Error
		}
		b, err = json.Marshal(legacy)
	}
	if err == nil {
		err = r.msg.Respond(b)
	}
	if err != nil {
		q.log.Warn("control reply not sent", "subject", r.msg.Subject, "err", err)
	}
}

// changeMembers adds or removes a voter, or does nothing for "list".
func (n *Node) changeMembers(req MembersRequest) error {
	switch req.Op {
	case "add":
		return n.AddVoter(Peer{ID: req.ID, Addr: req.Addr})
	case "remove":
		return n.RemoveServer(req.ID)
	case "list":
		return nil
	}
	return fmt.Errorf("%w: unknown op %q: use add, remove or list", errInvalid, req.Op)
}

// enroll applies an enrolment request: nodes, then clients, then a
// withdrawal.
func (n *Node) enroll(ctx context.Context, req EnrollRequest) error {
	now := time.Now().UnixMilli()
	var cmds []ledger.Command
	for _, c := range req.Clients {
		if err := identity.ValidPublic(c.PubKey); c.PubKey != "" && err != nil {
			return fmt.Errorf("%w: client %q: %w", errInvalid, c.ID, err)
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
		return fmt.Errorf("%w: empty enrol request: give clients, nodes or withdraw", errInvalid)
	}
	return n.applyAll(ctx, cmds...)
}

// ControlDrops counts the control requests this node turned away because
// its queue was full.
func (n *Node) ControlDrops() uint64 { return n.controlDrops.Load() }

// request sends a msgpack control request to subj and decodes the reply.
func request(ctx context.Context, nc *nats.Conn, subj string, req any) (ControlReply, error) {
	b, err := msgpack.Marshal(req)
	if err != nil {
		return ControlReply{}, fmt.Errorf("global: encode %T: %w", req, err)
	}
	m, err := nc.RequestWithContext(ctx, subj, b)
	if err != nil {
		return ControlReply{}, fmt.Errorf("global: no leader answered on %s: %w", subj, err)
	}
	var rep ControlReply
	if err := msgcheck.Validate(m.Data); err != nil {
		return ControlReply{}, fmt.Errorf("global: malformed reply on %s: %w", subj, err)
	}
	if err := msgpack.Unmarshal(m.Data, &rep); err != nil {
		return ControlReply{}, fmt.Errorf("global: malformed reply on %s: %w", subj, err)
	}
	return rep, rep.Err()
}

// RequestRollback asks the leader to roll the serving model back; a
// refusal is a *ControlError.
func RequestRollback(ctx context.Context, nc *nats.Conn, req RollbackRequest) error {
	_, err := request(ctx, nc, ModelSubject, &req)
	return err
}

// RequestMembers asks the leader to change (or list) the voters and
// returns them; a refusal is a *ControlError.
func RequestMembers(ctx context.Context, nc *nats.Conn, req MembersRequest) ([]Peer, error) {
	rep, err := request(ctx, nc, MembersSubject, &req)
	return rep.Members, err
}

// RequestEnroll asks the leader to enrol clients or nodes, or withdraw a
// client; a refusal is a *ControlError.
func RequestEnroll(ctx context.Context, nc *nats.Conn, req EnrollRequest) error {
	_, err := request(ctx, nc, EnrollSubject, &req)
	return err
}
