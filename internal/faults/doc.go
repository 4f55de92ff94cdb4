// Package faults holds the partition scenarios: real strata processes
// (`strata nats`, three `strata global` on raft, `strata regional`,
// `strata edge`), each in its own network namespace made by
// internal/netlab, with links cut, degraded and healed while a job runs.
// What the wire and the ledgers showed is checked by internal/history
// against the invariants of DESIGN.md §4.
//
//	(a) TestPartitionLeaderCutFromFollowers    the raft leader cut from both followers
//	(b) TestPartitionGlobalNodeIsolatedRepeatedly  one global node isolated and healed, three times
//	(c) TestPartitionSiteCutFromHub             a region's site cut from the NATS hub mid-round
//	(d) TestPartitionNATSClusterSplit           a 3-server NATS cluster split 2/1
//	(e) TestPartitionDegradedLink               links that delay and drop packets
//
// Faults come from seeded schedules (netlab.Schedule): each scenario logs
// its seed, and STRATA_FAULT_SEED=N replays schedule N. docs/faults.md
// says what each asserts and how long the suite takes.
//
// The scenarios need root, iproute2 and nftables; they skip loudly
// without them (fail with STRATA_REQUIRE_NETNS=1) and skip under -short.
// Run them alone with
//
//	go test ./internal/faults -v
package faults
