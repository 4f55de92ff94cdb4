package faults

import (
	"fmt"
	"testing"
	"time"

	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/internal/netlab"
)

// isolateRounds is scenario (b)'s job length; its faults fire at
// isolateAt committed rounds (the rounds of this small job take 15-100
// ms, so a fault fired at a wall-clock time would race the job's end).
const isolateRounds = 60

var isolateAt = []int{10, 25, 40}

// siteDelay is the WAN between the sites and the hub in the scenarios
// that pace their rounds by it.
const siteDelay = 20 * time.Millisecond

var isolateTopology = fmt.Sprintf(`job: %s
seed: 12
regions:
  - {id: %s, clients: 20}
privacy: {sampling_rate: 0.5, budget: 100000, min_regions: 1, noise: {regional: 2, global: 2}}
training: {rounds: %d}
task: {name: mnist, pretrain_epochs: 1, hidden: 16, local_epochs: 1, public_examples: 1000, eval_examples: 200}
round: {timeout: 3s}
security: {unsigned: true}
`, job, region, isolateRounds)

// isolateSeed is scenario (b)'s default seed: its schedule isolates the
// leader, a follower, then the leader again (STRATA_FAULT_SEED replays
// another).
const isolateSeed = 1

// TestPartitionGlobalNodeIsolatedRepeatedly is scenario (b): one global
// node at a time, drawn by a seeded schedule, is cut off from everything
// (the other nodes, NATS, the region) and healed, three times (at 10, 25
// and 40 committed rounds, each for the schedule's time; the default
// seed isolates the leader, a follower, then the leader). While it
// is cut off the other two commit rounds without it (each isolation lasts
// its scheduled time and at least until they have committed two, a new
// leader elected first if it led); after each heal it
// catches up with the rounds it missed. The job completes with every
// planned round committed, the three ledgers (the rejoined nodes'
// included) are byte-identical, and the whole history — every node's
// ledger read after each heal, the wire throughout — passes the checker.
func TestPartitionGlobalNodeIsolatedRepeatedly(t *testing.T) {
	if testing.Short() {
		t.Skip("partition scenario with real processes in network namespaces")
	}
	seed, err := netlab.SeedFromEnv(isolateSeed)
	if err != nil {
		t.Fatal(err)
	}
	// The schedule draws roles, mapped to nodes when each fault fires: the
	// leader of the moment, or the first follower in g1, g2, g3 order.
	sched := netlab.Schedule{Seed: seed, Hosts: []string{"leader", "follower"}, Faults: len(isolateAt), Ops: []netlab.Op{netlab.OpIsolate}, MinGap: 500 * time.Millisecond, MaxGap: 1500 * time.Millisecond}
	evs, err := sched.Events()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("schedule seed %d (replay: STRATA_FAULT_SEED=%d): %v", seed, seed, evs)
	start := time.Now()
	m := startMeshWith(t, isolateTopology, meshOpts{siteDelay: siteDelay})
	for i := 0; i+1 < len(evs); i += 2 {
		fault, heal := evs[i], evs[i+1]
		var lead string
		var before global.Status
		m.poll(fmt.Sprintf("%d committed rounds", isolateAt[i/2]), 3*time.Minute, func() bool {
			lead, before = m.leader(globals...)
			return before.Committed >= isolateAt[i/2]
		})
		if before.Finished || before.Committed > isolateAt[i/2]+10 {
			t.Fatalf("%d rounds committed (finished %v) when fault %d was due at %d: the job is too far along", before.Committed, before.Finished, i/2+1, isolateAt[i/2])
		}
		if lead == "" {
			t.Fatalf("no leader at fault %d", i/2+1)
		}
		g := lead
		if fault.A == "follower" {
			g = others(lead)[0]
		}
		if err := m.lab.Isolate(g); err != nil {
			t.Fatal(err)
		}
		cut := time.Now()
		role := "the " + fault.A
		// The other two go on without g: they commit rounds it cannot
		// have seen.
		var majority string
		m.poll(fmt.Sprintf("the nodes but %s to commit 2 rounds without it", g), 90*time.Second, func() bool {
			id, s := m.leader(others(g)...)
			majority = id
			return id != "" && s.Committed >= before.Committed+2
		})
		without := time.Since(cut)
		// The isolation lasts its scheduled time at least.
		time.Sleep(max(0, heal.At-fault.At-without))
		_, at := m.leader(others(g)...)
		held := time.Since(cut)
		if err := m.lab.Heal(g); err != nil {
			t.Fatal(err)
		}
		healed := time.Now()
		m.poll(g+" to catch up after the heal", 60*time.Second, func() bool {
			st, ok := m.status(g)
			return ok && st.Committed >= at.Committed
		})
		t.Logf("fault %d: %s (%s; %d rounds committed) isolated for %v; %s led the others to 2 rounds in %v; healed, it caught up with %d+ rounds in %v",
			i/2+1, g, role, before.Committed, held.Round(time.Millisecond), majority, without.Round(time.Millisecond), at.Committed, time.Since(healed).Round(time.Millisecond))
		for _, n := range globals {
			m.readLedger(n)
		}
	}
	snaps := m.finalLedgers(2 * time.Minute)
	if err := identical(snaps); err != nil {
		t.Fatal(err)
	}
	l := m.ledger(globals[0])
	if !l.Finished || l.CommittedRounds() != isolateRounds {
		t.Fatalf("finished %v with %d committed rounds, want %d", l.Finished, l.CommittedRounds(), isolateRounds)
	}
	aborted := len(l.Rounds) - l.CommittedRounds()
	t.Logf("the three ledgers are byte-identical (%d bytes): %d rounds recorded, %d committed, %d aborted, %d model versions", len(snaps[globals[0]]), len(l.Rounds), l.CommittedRounds(), aborted, len(l.Models))
	m.checkModels(l)
	m.checkHistory()
	t.Logf("scenario took %v", time.Since(start).Round(time.Second))
}
