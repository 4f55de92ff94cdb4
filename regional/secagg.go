package regional

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/strata-fl/strata/identity"
	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/secagg"
)

// Rejection reasons of secure-aggregation rounds (Stats.Rejected).
const (
	// ReasonSecAggOnly: a plain update in a round that runs secure
	// aggregation; it is never summed.
	ReasonSecAggOnly = "secagg_round"
	// ReasonSecAggStage: a secagg message that does not fit the session's
	// current stage (late, early or a replay).
	ReasonSecAggStage = "secagg_wrong_stage"
	// ReasonSecAggProtocol: a secagg message the session refused.
	ReasonSecAggProtocol = "secagg_protocol"
)

// Reasons a region's secure-aggregation session ends without a sum
// (Stats.SecAggFailed); the region then publishes no partial for the round.
const (
	SecAggInfeasible   = "infeasible"        // the round's plan says no session can run
	SecAggTooFew       = "too_few_survivors" // below MinSurvivors or a threshold
	SecAggDisconnected = "disconnected"      // the survivors' graph fell apart
	SecAggSuperseded   = "superseded"        // a newer round or the job's end came first
	SecAggFailedOther  = "error"
)

// secAggReason classifies a session error for Stats.SecAggFailed.
func secAggReason(err error) string {
	switch {
	case errors.Is(err, secagg.ErrTooFewSurvivors):
		return SecAggTooFew
	case errors.Is(err, secagg.ErrDisconnected):
		return SecAggDisconnected
	case errors.Is(err, ErrNoSecAgg):
		return SecAggInfeasible
	}
	return SecAggFailedOther
}

// Stage ends as fractions of the round's window: the key rounds are cheap
// and close early, so clients train while the masked-input stage is open;
// unmasking gets the last tenth.
var secAggStageEnds = [4]float64{0.15, 0.3, 0.9, 1}

// SecAggSession is a region's secure-aggregation session for one round: a
// secagg.Server fed by the round's envelopes, and the stage it is in. Like
// Round it is single-threaded and does no I/O; the runner publishes what
// Advance returns and closes stages by their deadline.
type SecAggSession struct {
	round  *Round
	setup  *secagg.Setup
	srv    *secagg.Server
	stage  int // 0 advertise, 1 share keys, 2 masked input, 3 unmask, 4 done
	expect int // messages the stage waits for
	got    map[secagg.ID]bool
	ends   [4]time.Time
	result *secagg.Result
}

// Addressed is a secagg message for one client.
type Addressed struct {
	Client string
	Body   []byte
}

// NewSecAggSession starts the session of round r, opened at opened; the
// stage deadlines split the window up to the round's deadline.
func NewSecAggSession(r *Round, opened time.Time) (*SecAggSession, error) {
	setup, err := secAggSetup(&r.open)
	if err != nil {
		return nil, err
	}
	srv, err := secagg.NewServer(secagg.ServerConfig{Session: setup.Session, Params: setup.Params, Workers: 2})
	if err != nil {
		return nil, err
	}
	s := &SecAggSession{round: r, setup: setup, srv: srv, expect: len(setup.Members), got: map[secagg.ID]bool{}}
	deadline := time.UnixMilli(r.open.DeadlineUnixMs)
	window := deadline.Sub(opened)
	for i, f := range secAggStageEnds {
		s.ends[i] = opened.Add(time.Duration(f * float64(window)))
	}
	return s, nil
}

// Setup returns the session's parameters and members.
func (s *SecAggSession) Setup() *secagg.Setup { return s.setup }

// Deadline is when the current stage closes whatever has arrived.
func (s *SecAggSession) Deadline() time.Time { return s.ends[min(s.stage, 3)] }

// Done reports whether the session has its sum.
func (s *SecAggSession) Done() bool { return s.stage == 4 }

// StageComplete reports whether every client the stage waits for answered.
func (s *SecAggSession) StageComplete() bool { return s.stage < 4 && len(s.got) >= s.expect }

// Handle checks one envelope from the subject subj and feeds its message
// to the server. It returns the rejection reason, or "".
func (s *SecAggSession) Handle(subj string, data []byte) string {
	var env wire.SecAggUp
	if err := wire.Decode(data, wire.TypeSecAggUp, &env); err != nil {
		return ReasonMalformed
	}
	r := s.round
	if reason := r.checkSecAggSender(env.Job, env.Region, env.Round, env.Client); reason != "" {
		return reason
	}
	// The subject is the one NATS let the sender publish on.
	if !strings.HasSuffix(subj, "."+env.Client) {
		return ReasonUnknownClient
	}
	id, ok := s.setup.ID(env.Client)
	if !ok {
		return ReasonNotSampled
	}
	if r.open.Signed {
		msg := identity.SecAggMessage(r.open.Job, r.open.Round, r.open.Region, env.Client, identity.Digest(env.Body))
		if reason := r.checkRegistry(env.Client, msg, env.Sig); reason != "" {
			return reason
		}
	}
	m, err := secagg.Decode(env.Body)
	if err != nil {
		return ReasonMalformed
	}
	if s.got[id] {
		return ReasonDuplicate
	}
	switch m := m.(type) {
	case *secagg.AdvertiseKeys:
		err = s.need(0, m.From, id, func() error { return s.srv.HandleAdvertiseKeys(m) })
	case *secagg.ShareKeys:
		err = s.need(1, m.From, id, func() error { return s.srv.HandleShareKeys(m) })
	case *secagg.MaskedInput:
		err = s.need(2, m.From, id, func() error { return s.srv.HandleMaskedInput(m) })
	case *secagg.UnmaskResponse:
		err = s.need(3, m.From, id, func() error { return s.srv.HandleUnmaskResponse(m) })
	default:
		return ReasonSecAggProtocol
	}
	switch {
	case errors.Is(err, errWrongStage):
		return ReasonSecAggStage
	case err != nil:
		return ReasonSecAggProtocol
	}
	s.got[id] = true
	return ""
}

var errWrongStage = errors.New("regional: secagg message of another stage")

func (s *SecAggSession) need(stage int, from, id secagg.ID, f func() error) error {
	if s.stage != stage {
		return errWrongStage
	}
	if from != id {
		return fmt.Errorf("%w: client %d speaks as %d", secagg.ErrProtocol, id, from)
	}
	return f()
}

// Advance closes the current stage and returns the next stage's messages.
// After the unmasking stage it finishes the session: the round then holds
// the survivors' dequantized sum (Round.Finalize adds the noise). An error
// ends the session with nothing revealed.
func (s *SecAggSession) Advance() ([]Addressed, error) {
	var msgs []secagg.Message
	var err error
	switch s.stage {
	case 0:
		msgs, err = asMessages(s.srv.FinishAdvertiseKeys())
	case 1:
		msgs, err = asMessages(s.srv.FinishShareKeys())
	case 2:
		msgs, err = asMessages(s.srv.FinishMaskedInput())
	case 3:
		s.result, err = s.srv.Finish()
		if err == nil {
			err = s.deliver()
		}
	default:
		return nil, fmt.Errorf("regional: secagg session advanced after its end")
	}
	if err != nil {
		s.stage = 4
		return nil, err
	}
	s.stage++
	s.got = map[secagg.ID]bool{}
	s.expect = len(msgs)
	out := make([]Addressed, 0, len(msgs))
	for _, m := range msgs {
		b, err := m.MarshalBinary()
		if err != nil {
			return nil, err
		}
		out = append(out, Addressed{Client: s.setup.Members[to(m)-1], Body: b})
	}
	return out, nil
}

func to(m secagg.Message) secagg.ID {
	switch m := m.(type) {
	case *secagg.NeighbourKeys:
		return m.To
	case *secagg.ShareBundle:
		return m.To
	case *secagg.UnmaskRequest:
		return m.To
	}
	return 0
}

// deliver hands the survivors' sum to the round.
func (s *SecAggSession) deliver() error {
	n := len(s.result.Survivors)
	sum, bits, err := s.setup.Decode(s.result.Sum, n)
	if err != nil {
		return err
	}
	r := s.round
	if r.finalized {
		return ErrRoundFinalized
	}
	copy(r.sum, sum)
	r.count = n
	r.bitSum = bits
	for _, id := range s.result.Survivors {
		r.seen[s.setup.Members[id-1]] = true
	}
	return nil
}

// Result is the finished session's result (nil before).
func (s *SecAggSession) Result() *secagg.Result { return s.result }

// asMessages widens a stage's typed messages to secagg.Message.
func asMessages[M secagg.Message](out []M, err error) ([]secagg.Message, error) {
	msgs := make([]secagg.Message, len(out))
	for i, m := range out {
		msgs[i] = m
	}
	return msgs, err
}
