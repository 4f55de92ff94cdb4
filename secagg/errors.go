package secagg

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error the package returns wraps one of these, so
// callers test with errors.Is and never compare strings.
var (
	// ErrParams reports session parameters that are out of range or cannot
	// meet the requested security; the message names the parameter.
	ErrParams = errors.New("secagg: bad parameters")
	// ErrHeadroom reports a quantizer whose ring Z_{2^b} is too small for the
	// sum of n clipped, scaled inputs to be decoded without wrapping.
	ErrHeadroom = errors.New("secagg: ring too small for the sum")
	// ErrTooFewSurvivors reports that too few clients (in the whole session,
	// or among one client's neighbours) survived for the session to go on.
	// The session stops before the step that would reveal anything: the
	// server issues no unmasking request and publishes no sum, and a client
	// refuses to answer an unmasking request below the threshold.
	ErrTooFewSurvivors = errors.New("secagg: too few survivors")
	// ErrDisconnected reports that the surviving clients' graph fell apart:
	// unmasking would reveal the sum of each piece, so the session stops.
	ErrDisconnected = errors.New("secagg: survivors' graph is disconnected")
	// ErrWrongState reports a call or message that does not fit the party's
	// current round (a replay, a second answer, a step out of order).
	ErrWrongState = errors.New("secagg: wrong state")
	// ErrProtocol reports a message that breaks the protocol: wrong session,
	// unknown or duplicate sender, wrong length, a share that does not
	// decrypt or does not match its commitment.
	ErrProtocol = errors.New("secagg: protocol violation")
	// ErrDecode reports bytes that are not a well-formed message.
	ErrDecode = errors.New("secagg: malformed message")
)

// SurvivorError says which count fell short and where. It matches
// ErrTooFewSurvivors with errors.Is.
type SurvivorError struct {
	Stage  string // round in which the shortfall was found
	Client ID     // client whose neighbourhood fell short; 0 for the whole session
	Have   int
	Need   int
}

func (e *SurvivorError) Error() string {
	if e.Client == 0 {
		return fmt.Sprintf("secagg: too few survivors in %s: %d clients, need at least %d", e.Stage, e.Have, e.Need)
	}
	return fmt.Sprintf("secagg: too few survivors in %s: client %d has %d live neighbours holding its shares, need the threshold %d", e.Stage, e.Client, e.Have, e.Need)
}

// Is makes errors.Is(err, ErrTooFewSurvivors) hold.
func (e *SurvivorError) Is(target error) bool { return target == ErrTooFewSurvivors }

// ID names a client within a session: 1..Params.Clients. It is also the
// client's Shamir evaluation point, so it is never 0.
type ID uint32
