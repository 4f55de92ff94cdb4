package faults

import (
	"fmt"
	"testing"
	"time"

	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/internal/netlab"
)

// degradeRounds is scenario (e)'s job length; its degradations begin at
// degradeAt committed rounds.
const degradeRounds = 50

var degradeAt = []int{8, 20, 32}

// degradeSeed is scenario (e)'s default seed: the leader's link delayed
// 65 ms each way and 4% of its packets dropped, then the site's 71 ms and
// 9.1%, then a follower's 16 ms and 6.8% (STRATA_FAULT_SEED replays
// another).
const degradeSeed = 4

var degradeTopology = fmt.Sprintf(`job: %s
seed: 14
regions:
  - {id: %s, clients: 20}
privacy: {sampling_rate: 0.5, budget: 100000, min_regions: 1, noise: {regional: 2, global: 2}}
training: {rounds: %d}
task: {name: mnist, pretrain_epochs: 1, hidden: 16, local_epochs: 1, public_examples: 1000, eval_examples: 200}
round: {timeout: 3s}
security: {unsigned: true}
`, job, region, degradeRounds)

// TestPartitionDegradedLink is scenario (e): rather than cut, a link
// delays and drops packets. A seeded schedule degrades, one at a time,
// the link of the leader, of a follower or of the site (delay up to 80
// ms each way with 10% jitter, loss up to 10% both ways; netem, or the
// NFQUEUE fallback where the kernel has no netem), each for the
// schedule's time and at least until two more rounds have committed
// through it. The job completes with every planned round committed, the
// three ledgers are byte-identical and the history passes the checker.
func TestPartitionDegradedLink(t *testing.T) {
	if testing.Short() {
		t.Skip("partition scenario with real processes in network namespaces")
	}
	seed, err := netlab.SeedFromEnv(degradeSeed)
	if err != nil {
		t.Fatal(err)
	}
	// Roles are mapped to hosts when each degradation begins: the leader
	// of the moment, the first follower in g1, g2, g3 order, the site.
	evs, err := netlab.Schedule{Seed: seed, Hosts: []string{"leader", "follower", siteHost(region)}, Faults: len(degradeAt), Ops: []netlab.Op{netlab.OpDegrade},
		MinGap: time.Second, MaxGap: 3 * time.Second, MaxDelay: 80 * time.Millisecond, MaxLoss: 0.1}.Events()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("schedule seed %d (replay: STRATA_FAULT_SEED=%d): %v", seed, seed, evs)
	start := time.Now()
	m := startMeshWith(t, degradeTopology, meshOpts{siteDelay: siteDelay})
	for i := 0; i+1 < len(evs); i += 2 {
		fault, heal := evs[i], evs[i+1]
		var lead string
		var before global.Status
		m.poll(fmt.Sprintf("%d committed rounds", degradeAt[i/2]), 3*time.Minute, func() bool {
			lead, before = m.leader(globals...)
			return before.Committed >= degradeAt[i/2]
		})
		if before.Finished || before.Committed > degradeAt[i/2]+8 {
			t.Fatalf("%d rounds committed (finished %v) when degradation %d was due at %d: the job is too far along", before.Committed, before.Finished, i/2+1, degradeAt[i/2])
		}
		h := fault.A
		switch h {
		case "leader":
			h = lead
		case "follower":
			h = others(lead)[0]
		}
		fault.A = h
		if err := m.lab.Apply(fault); err != nil {
			t.Fatal(err)
		}
		began := time.Now()
		m.poll(fmt.Sprintf("2 rounds committed with %s degraded", h), 2*time.Minute, func() bool {
			_, s := m.leader(globals...)
			return s.Committed >= before.Committed+2
		})
		through := time.Since(began)
		time.Sleep(max(0, heal.At-fault.At-through))
		_, at := m.leader(globals...)
		held := time.Since(began)
		if err := m.lab.Heal(h); err != nil {
			t.Fatal(err)
		}
		if h == siteHost(region) { // back to the standing WAN delay
			if err := m.lab.Degrade(h, siteDelay, 0, 0); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("degradation %d: %v (%s); 2 rounds committed through it in %v; held %v, %d rounds committed (%d before)",
			i/2+1, fault, m.lab.DelayMethod(), through.Round(time.Millisecond), held.Round(time.Millisecond), at.Committed, before.Committed)
		for _, g := range globals {
			if _, ok := m.tryLedger(g); !ok {
				// A node whose link was degraded may still be reconnecting.
				m.poll(g+"'s ledger", 30*time.Second, func() bool { _, ok := m.tryLedger(g); return ok })
			}
		}
	}
	snaps := m.finalLedgers(2 * time.Minute)
	if err := identical(snaps); err != nil {
		t.Fatal(err)
	}
	l := m.ledger(globals[0])
	if !l.Finished || l.CommittedRounds() != degradeRounds {
		t.Fatalf("finished %v with %d committed rounds, want %d", l.Finished, l.CommittedRounds(), degradeRounds)
	}
	t.Logf("the three ledgers are byte-identical (%d bytes): %d rounds recorded, %d committed, %d model versions", len(snaps[globals[0]]), len(l.Rounds), l.CommittedRounds(), len(l.Models))
	m.checkModels(l)
	m.checkHistory()
	t.Logf("scenario took %v", time.Since(start).Round(time.Second))
}
