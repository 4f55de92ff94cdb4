// Package regional is the regional aggregator: for each round it collects
// the updates of its region's sampled clients, verifies each, sums them in
// O(d) memory whatever their number, adds the regional noise once and
// publishes the partial to the global tier.
//
// # Cores and a runner
//
// As in etcd's raft (rawnode.go beside node.go), the logic is in pure,
// single-threaded state machines and the I/O in a thin runner:
//
//   - Round aggregates one round: verify, sum, noise exactly once
//     (ErrRoundFinalized), emit the partial. Streams stages a round's
//     chunked updates; SecAggSession runs its secure-aggregation session.
//   - Lifecycle is the round lifecycle of the region: which round is open,
//     when it ends, the registry it verifies against, what is answered and
//     published. Step(Event) returns []Action; it reads no clock (events
//     carry the time), does no I/O and leaves no goroutine behind (a
//     secure-aggregation session's last stage spreads its work over
//     workers it joins before returning), so its tests (testdata/lifecycle)
//     step it directly and deterministically.
//   - Runner owns the NATS subscriptions, a bounded queue, the timer and
//     the registry requests. Handlers never block: they push into the
//     queue and count what a full queue drops. Its loop turns each message,
//     timer firing and registry answer into an event, steps the core and
//     carries out the actions in order.
//
// # A round, step by step
//
// The global tier commits a round's privacy cost to its ledger, then
// requests round.open on strata.<job>.round.<region> and waits a few
// seconds for the region's "ok"; only then does it invite the sampled
// clients, so no update can overtake its round. A region that does not
// answer in time is left out of a round whose cost is already spent, so
// the core answers before anything slow:
//
//	OpenArrived      → RoundOpened, AckOpen, FetchRegistry (signed rounds
//	                   naming a registry newer than the one held), SetTimer(deadline)
//	UpdateArrived    → Round.Add, or Streams.Open / Streams.Chunk with
//	                   Grant / AckChunk replies; counts by reason (ReportStats)
//	Tick(deadline)   → staged streams aborted (queued clients refused),
//	                   noise added, PublishPartial
//	all sampled in   → the same, at once
//	JobDone          → the open round finalized, Stop
//
// A newer round.open while a round is open finalizes the open one with
// what it has (or, while its secure-aggregation session is unfinished,
// discards it: SecAggSuperseded). The same round announced again — a
// retried request — is acknowledged again and changes nothing: a round is
// opened, and its noise drawn, once. A tick before the deadline only
// rearms the timer.
//
// # The registry
//
// A signed round verifies each sender against the enrolled identities of
// the region at the registry version the round.open names. The region
// keeps the newest registry it received; when the round names a newer
// one, the core acknowledges the round, then emits FetchRegistry, which
// the runner performs in a goroutine it owns (Config.RegistryTimeout per
// request). Until the registry arrives, what needs it — whole updates,
// stream opens, secure-aggregation messages — is held in arrival order,
// bounded in number (Config.QueueSize) and bytes (the staged streams'
// budget, at least 16 MiB: no stream is staged meanwhile);
// beyond the bounds a message is rejected as ReasonHoldFull. When the
// registry arrives the held messages are verified as if they had just
// come. If every request fails (Config.RegistryAttempts), or the round
// ends first, they are rejected as ReasonNoRegistry, and so is what the
// round receives after: never accepted unverified, nor checked against
// an older copy that may miss a withdrawal. Chunks never wait: a stream
// is granted only once its open verified.
//
// # Secure aggregation
//
// A round whose round.open carries a SecAggPlan runs a SecAggSession: its
// stages (advertise keys, share keys, masked input, unmask) close when
// every member the stage waits for has answered, or at their deadlines
// (fractions of the round's window); each stage's messages to clients are
// SendSecAgg actions. After the unmasking stage the round holds only the
// survivors' sum, and is finalized as any other. A session that fails —
// too few survivors, a disconnected graph, the round superseded — ends
// the round with nothing published (Stats.SecAggFailed).
//
// # Liveness
//
// The global tier opens a round only when enough regions answer a ping on
// strata.<job>.ping.<region>. The ping handler only queues the request;
// the loop answers it (PingArrived → Pong), so a region whose loop is
// stuck does not look alive.
//
// # Goroutines
//
// Run starts one goroutine per registry request (at most one at a time)
// and nothing else of its own; it cancels and joins them before it
// returns, whether its context ended or the job did.
package regional
