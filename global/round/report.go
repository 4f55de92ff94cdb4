package round

import (
	"github.com/strata-fl/strata/global/ledger"
)

// Reasons a partial is rejected, as counted in Report.Rejected and the
// metrics (strata_global_partials_rejected_total).
const (
	// ReasonMalformed: the message is not a partial, or a chunked partial's
	// chunks do not add up to one (order, size, digest).
	ReasonMalformed = "malformed"
	// ReasonWrongJob: a partial of another job.
	ReasonWrongJob = "wrong_job"
	// ReasonLate: a partial of an earlier round, or of this one after its
	// deadline and grace.
	ReasonLate = "late"
	// ReasonWrongRound: a partial of a round not yet opened.
	ReasonWrongRound = "wrong_round"
	// ReasonUnknownRegion: a region the topology does not have.
	ReasonUnknownRegion = "unknown_region"
	// ReasonNotAcknowledged: a region that did not acknowledge the round
	// (its clients were never invited, so it cannot have a sum).
	ReasonNotAcknowledged = "not_acknowledged"
	// ReasonDuplicate: a second partial of a region that already reported.
	ReasonDuplicate = "duplicate"
	// ReasonWrongDim: a sum of the wrong length, or a negative count.
	ReasonWrongDim = "wrong_dim"
	// ReasonBadSignature: in a signed job, a partial its region's enrolled
	// key did not sign (or a region with no enrolled key).
	ReasonBadSignature = "bad_signature"
)

// Report is what the machine tells the runner after each round.
type Report struct {
	Round        uint64
	Committed    int // rounds that released a model so far (the runner reads it from the ledger)
	Planned      int
	Participants int
	Regions      int
	Eval         Evaluation // the released version's (zero when the round aborted)
	Epsilon      ledger.PerObserver[float64]
	Noise        ledger.Noise // multipliers used this round (paced or planned)
	ClipNorm     float64
	Retired      int    // clients that left the population for budget before this round
	GateFailed   string // why the round's model was not promoted, if it was not
	Aborted      string
	// Merged are the partials accepted this round, by region (merged into
	// the model unless the round aborted): what each region reported,
	// verified.
	Merged []MergedPartial
	// Rejected counts the partials refused while this round collected, by
	// region and reason, sorted.
	Rejected []Rejection
}

// MergedPartial is one region's accepted partial: the updates it summed,
// and the updates it reported rejected by reason.
type MergedPartial struct {
	Region   string
	Count    int
	Rejected map[string]int
}

// Rejection counts one region's partials refused for one reason. Region is
// "" when the partial named no region of the topology (or none at all).
type Rejection struct {
	Region string
	Reason string
	Count  int
}
