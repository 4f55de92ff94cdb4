// Package round is the global tier's round coordinator as a pure state
// machine: events in, actions out. It does no I/O — no NATS, no raft, no
// model store, no clock, no randomness; the time and the random draws it
// needs arrive inside events. A runner (global.Coordinator) owns the
// machine: it executes every action it is given (raft Apply, NATS requests
// and publishes, model store puts and gets, evaluation, the global noise)
// and feeds the result back as the next event. The split follows etcd
// raft's RawNode and Node: the machine holds every decision, so that table
// and scenario tests (testdata/*.txt) reach its invariants in milliseconds
// without a mesh.
//
// # A round
//
//	event                          action(s) the machine answers with
//	Next{View}                     Announce+Stop (the ledger is finished),
//	                               Propose(FinishJob) (planned rounds done;
//	                               or stopped early: Planned charges the
//	                               rounds not run), LoadModel (a rollback
//	                               moved the serving version), or Probe
//	Probed{Alive, View, Now}       Wait (fewer regions than min_regions: a
//	                               round charges when it opens, so none opens
//	                               that cannot be released), Propose(FinishJob)
//	                               (the budget refuses the round; nothing of it
//	                               is published), or Draw
//	Drawn{U}                       Propose(OpenRound)
//	Applied (OpenRound)            OpenRegions — only now: the write-ahead rule
//	Acked{Regions}                 Collect{Until}
//	PartialMsg, Deadline           nothing (Log for a refused partial) until
//	                               every acknowledged region reported or the
//	                               deadline and grace passed; then
//	                               Propose(AbortRound) (too few regions: the
//	                               cost stays), or AddNoise (global noise) …
//	Noised                         StoreModel (the server step's candidate)
//	Stored                         Evaluate
//	Evaluated                      CanaryGate (the audit gate, if configured)
//	GateChecked                    Propose(CommitModel): promoted, or recorded
//	                               and not promoted with θ restored
//	Applied (Commit/Abort)         Progress, then the runner sends Next
//
// # A round left open
//
// A runner that finds the ledger holding an open round (its leader died
// after the OpenRound committed) sends Resume first, in place of Next,
// with the round as the ledger holds it (LeftOpenOf), the partials the
// partial log kept and the candidate the dead leader stored, if any:
//
//	Resume{View, Open, Stored,     Propose(AbortRound) (round.resume off, a
//	       Now, Candidate, Adopt}  round written before the ledger kept its
//	                               deadline, a rollback since, an unreadable
//	                               log, a candidate stored without its
//	                               record); Evaluate (Adopt: the stored
//	                               candidate, whose noise is not drawn
//	                               again); or the stored partials checked
//	                               and merged as live ones, then Collect
//	                               until the deadline and grace, or the
//	                               collection's close at once
//
// Its commit charges nothing: the OpenRound did.
//
// # Pricing
//
// Plan→price is the Pricer's: the accountant's floating-point work (RDP
// curves, their conversion to ε, pacing, top-up caps) happens there, on
// the proposer only. The machine compares the prices with the budgets —
// the mesh's for the round (and, with early stopping, for the whole
// planned run), each client's by the ε priced for its group of clients
// eligible since the same round — and puts them into the OpenRound, whose
// Apply compares them again on every replica. A round the ledger refuses
// because its population moved between the view and the commit (a client
// enrolled, withdrew, or would pass its budget) is planned again, a few
// times at most.
//
// # Partials
//
// While collecting, every message is a whole partial or a chunk of one.
// A partial is refused — and counted by region and reason (Reason*) in the
// round's Report — when it is malformed, of another job, late (an earlier
// round's, or after the deadline and grace), of a later round, from a
// region the topology does not have or that did not acknowledge, a second
// one of its region, of the wrong dimension, or, in a signed job, not
// signed by its region's enrolled key. The signature is checked once, over
// the digest the ledger's provenance then records.
package round
