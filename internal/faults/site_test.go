package faults

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/internal/history"
	"github.com/strata-fl/strata/internal/netlab"
)

// siteRounds is scenario (c)'s job length.
const siteRounds = 14

// siteSeed is scenario (c)'s default seed: its schedule cuts site a
// (region a) for 1.03 s, held at least until the cut round has closed
// (and with min_regions 1 the next one too).
const siteSeed = 1

func siteTopology(minRegions int) string {
	return fmt.Sprintf(`job: %s
seed: 13
regions:
  - {id: a, clients: 20}
  - {id: b, clients: 20}
privacy: {sampling_rate: 0.5, budget: 100000, min_regions: %d, noise: {regional: 2, global: 2}}
training: {rounds: %d}
task: {name: mnist, pretrain_epochs: 1, hidden: 16, local_epochs: 1, public_examples: 1000, eval_examples: 200}
round: {timeout: 2s}
security: {unsigned: true}
`, job, minRegions, siteRounds)
}

// TestPartitionSiteCutFromHub is scenario (c): two regions, each a site
// (its regional aggregator and its edge fleet in one host, 20 ms from the
// hub), and one of them — drawn by a seeded schedule — cut off from the
// NATS hub mid-round, once some of its clients' updates for the round
// have reached the hub and others have not. Its clients' updates count at
// most once: the cut round counts no update of the cut site (its partial
// cannot arrive; one sent after the heal is late), nor twice any other.
//
//   - min_regions 1: the round completes from the other region alone
//     (the ledger records it with that region only, and as many
//     participants as that region's partial counted), and so does the
//     round that follows while the cut lasts.
//   - min_regions 2: the round aborts once its deadline passes, its cost
//     kept (ε after it is above ε before it, and the rounds after it
//     start from there), and no round opens while the site is cut off.
//
// After the heal the site rejoins, the job completes, the three ledgers
// are byte-identical and the history passes the checker.
func TestPartitionSiteCutFromHub(t *testing.T) {
	if testing.Short() {
		t.Skip("partition scenario with real processes in network namespaces")
	}
	seed, err := netlab.SeedFromEnv(siteSeed)
	if err != nil {
		t.Fatal(err)
	}
	// The schedule draws the site to cut and how long the cut lasts at
	// least; the cut itself is of the site from the hub (the site talks
	// to nothing else).
	evs, err := netlab.Schedule{Seed: seed, Hosts: []string{siteHost("a"), siteHost("b")}, Faults: 1, Ops: []netlab.Op{netlab.OpIsolate},
		MinGap: 500 * time.Millisecond, MaxGap: 2 * time.Second}.Events()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("schedule seed %d (replay: STRATA_FAULT_SEED=%d): %v", seed, seed, evs)
	for _, minRegions := range []int{1, 2} {
		t.Run(fmt.Sprintf("min_regions=%d", minRegions), func(t *testing.T) {
			siteCut(t, minRegions, evs[0].A, evs[1].At-evs[0].At)
		})
	}
}

func siteCut(t *testing.T, minRegions int, site string, hold time.Duration) {
	start := time.Now()
	cutRegion := strings.TrimPrefix(site, "r")
	other := "a"
	if cutRegion == "a" {
		other = "b"
	}
	m := startMeshWith(t, siteTopology(minRegions), meshOpts{regions: []string{"a", "b"}, siteDelay: siteDelay})
	m.poll("3 committed rounds", 3*time.Minute, func() bool {
		_, s := m.leader(globals...)
		return s.Committed >= 3
	})
	_, s := m.leader(globals...)
	if s.Finished || s.Committed > siteRounds-5 {
		t.Fatalf("the job is too far along (%d of %d rounds) to cut a site: make it longer", s.Committed, siteRounds)
	}
	// Cut the site when the hub sees the first update of one of its
	// clients for a round that opens from now on: mid-round, with some
	// of its updates through and the rest, and its partial, not.
	from := uint64(s.Rounds + 1)
	first := make(chan history.Event, 1)
	m.setWatch(func(e history.Event) {
		if e.Kind == history.Update && e.Region == cutRegion && e.Round >= from {
			select {
			case first <- e:
				if err := m.lab.Cut(site, m.natsHosts[0]); err != nil {
					t.Errorf("cut: %v", err)
				}
			default:
			}
		}
	})
	var e history.Event
	select {
	case e = <-first:
	case <-time.After(time.Minute):
		t.Fatalf("no update of region %s's clients for round %d+ in a minute", cutRegion, from)
	}
	m.setWatch(nil)
	cut := time.Now()
	r := e.Round
	t.Logf("site %s cut from the hub at region %s's first update of round %d (client %s), %v after start", site, cutRegion, r, e.Client, time.Since(start).Round(time.Millisecond))

	// The round closes without the site.
	var entry ledger.RoundEntry
	var prevEps float64
	lead := ""
	m.poll(fmt.Sprintf("round %d to close", r), time.Minute, func() bool {
		id, _ := m.leader(globals...)
		if id == "" {
			return false
		}
		l, ok := m.tryLedger(id)
		if !ok || uint64(len(l.Rounds)) < r || l.Rounds[r-1].Status == "open" {
			return false
		}
		lead, entry = id, l.Rounds[r-1]
		if r > 1 {
			prevEps = l.Rounds[r-2].EpsilonAfter.Public
		}
		return true
	})
	closed := time.Since(cut)
	t.Logf("round %d %s %v after the cut: regions %v, %d participants %s", r, entry.Status, closed.Round(time.Millisecond), entry.Regions, entry.Participants, entry.AbortReason)
	partials := func(round uint64, region string) (n, count int) {
		for _, ev := range m.rec.Events() {
			if ev.Kind == history.Partial && ev.Round == round && ev.Region == region {
				n++
				count = ev.Count
			}
		}
		return n, count
	}
	switch minRegions {
	case 1:
		n, count := partials(r, other)
		if entry.Status != "committed" || !slices.Equal(entry.Regions, []string{other}) || n != 1 || entry.Participants != count {
			t.Fatalf("round %d: %s from regions %v with %d participants; want committed from %s alone, with the %d its partial counted (%d partials of it seen)", r, entry.Status, entry.Regions, entry.Participants, other, count, n)
		}
		// Rounds go on from the other region while the cut lasts.
		m.poll("another round from the other region", time.Minute, func() bool {
			l, ok := m.tryLedger(lead)
			if !ok || uint64(len(l.Rounds)) < r+1 {
				return false
			}
			for _, x := range l.Rounds[r : r+1] {
				if x.Status != "committed" {
					return false
				}
				if !slices.Equal(x.Regions, []string{other}) {
					t.Fatalf("round %d, the site cut off: merged regions %v", x.Round, x.Regions)
				}
			}
			return true
		})
	case 2:
		if entry.Status != "aborted" || entry.Participants != 0 || !strings.Contains(entry.AbortReason, "regions reported") {
			t.Fatalf("round %d: %s (%q) with %d participants; want aborted for too few regions, none counted", r, entry.Status, entry.AbortReason, entry.Participants)
		}
		if entry.EpsilonAfter.Public <= prevEps {
			t.Fatalf("round %d aborted with ε %v after it, %v before: its cost was not kept", r, entry.EpsilonAfter.Public, prevEps)
		}
	}
	// Hold the cut for the schedule's time, at least; with min_regions 2
	// no round opens meanwhile (one would be charged and could not be
	// released).
	deadline := cut.Add(max(hold, time.Since(cut)+time.Second))
	for time.Now().Before(deadline) {
		if minRegions == 2 {
			if l, ok := m.tryLedger(lead); ok && uint64(len(l.Rounds)) > r {
				t.Fatalf("round %d opened while site %s was cut off and min_regions is 2", len(l.Rounds), site)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := m.lab.Heal(site, m.natsHosts[0]); err != nil {
		t.Fatal(err)
	}
	t.Logf("healed after %v", time.Since(cut).Round(time.Millisecond))
	for _, g := range globals {
		m.readLedger(g)
	}

	snaps := m.finalLedgers(2 * time.Minute)
	if err := identical(snaps); err != nil {
		t.Fatal(err)
	}
	l := m.ledger(globals[0])
	if !l.Finished || l.CommittedRounds() != siteRounds {
		t.Fatalf("finished %v with %d committed rounds, want %d", l.Finished, l.CommittedRounds(), siteRounds)
	}
	// The final ledger still holds round r as it closed.
	if got := l.Rounds[r-1]; got.Status != entry.Status || got.Participants != entry.Participants || !slices.Equal(got.Regions, entry.Regions) {
		t.Fatalf("round %d ended %s from %v (%d participants), closed %s from %v (%d)", r, got.Status, got.Regions, got.Participants, entry.Status, entry.Regions, entry.Participants)
	}
	both := 0
	for _, x := range l.Rounds[r+1:] {
		if len(x.Regions) == 2 {
			both++
		}
	}
	if both == 0 {
		t.Fatalf("no round after the heal merged both regions: site %s did not rejoin", site)
	}
	n, _ := partials(r, cutRegion)
	t.Logf("the three ledgers are byte-identical (%d bytes): %d rounds recorded, %d committed; %d rounds after the heal merged both regions; region %s sent %d partials of round %d (none counted)",
		len(snaps[globals[0]]), len(l.Rounds), l.CommittedRounds(), both, cutRegion, n, r)
	m.checkModels(l)
	m.checkHistory()
	t.Logf("scenario took %v", time.Since(start).Round(time.Second))
}
