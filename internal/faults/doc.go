// Package faults holds the partition scenarios: real strata processes
// (`strata nats`, three `strata global` on raft, `strata regional`,
// `strata edge`), each in its own network namespace made by
// internal/netlab, with links cut and healed while a job runs. What the
// wire and the ledgers showed is checked by internal/history against the
// invariants of DESIGN.md §4.
//
// The scenarios need root, iproute2 and nftables; they skip loudly
// without them (fail with STRATA_REQUIRE_NETNS=1) and skip under -short.
// Run them alone with
//
//	go test ./internal/faults -run Partition -v
package faults
