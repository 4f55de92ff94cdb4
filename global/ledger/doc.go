// Package ledger is Strata's authoritative privacy ledger as a pure,
// deterministic state machine: no raft, no NATS, no clock, no randomness.
//
// The global tier replicates it with raft: the leader proposes a Command,
// raft commits it, and every replica calls Apply with the same bytes in the
// same order, reaching the same state byte for byte. Everything that needs a
// clock, a random draw or floating-point work that could differ between
// machines (RDP curves, ε conversions) happens on the proposer and arrives
// inside the command; Apply only adds and compares.
//
// A job's life:
//
//	StartJob      fixes δ, the budget, the population and the RDP orders
//	OpenRound     write-ahead: the round's DP cost per observer is charged
//	              here, before anything derived from client data is released;
//	              refused (ErrBudget) if it would exceed the budget, and
//	              (ErrClientBudget) if a client that stays eligible would
//	              exceed its own, by the ε the proposer priced for its group
//	CommitModel   records the model version released by that round
//	AbortRound    closes a round without a model; its spend stays
//	FinishJob     no more rounds
//
// Rounds are keyed by number, so a command retried after a leader change is
// recognised (Result.Duplicate) and never charges twice.
//
// Every applied entry — accepted, duplicate, rejected or undecodable —
// appends a record to a hash chain (AuditRecord). A rejection is recorded
// by its reason code (ReasonCode: "budget", "round_order", …), never by its
// error text, so that the same log replays to the same chain whatever the
// messages say; records carry their format's version, and chains written
// before codes (format 0) still verify.
package ledger
