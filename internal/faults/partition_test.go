package faults

import (
	"fmt"
	"testing"
	"time"

	"github.com/strata-fl/strata/global/ledger"
)

// brief is what a log shows of a command.
func brief(cmd ledger.Command) string {
	switch c := cmd.(type) {
	case *ledger.OpenRound:
		return fmt.Sprintf("round %d, %d sampled", c.Round, len(c.SampledClients))
	case *ledger.CommitModel:
		return fmt.Sprintf("round %d → v%d", c.Round, c.Version)
	case *ledger.AbortRound:
		return fmt.Sprintf("round %d: %s", c.Round, c.Reason)
	}
	return ""
}

// rounds is the job's length: enough for rounds before the cut, under the
// new leader and after the heal.
const rounds = 16

var partitionTopology = fmt.Sprintf(`job: %s
seed: 11
regions:
  - {id: %s, clients: 20}
privacy: {sampling_rate: 0.5, budget: 100000, min_regions: 1, noise: {regional: 2, global: 2}}
training: {rounds: %d}
task: {name: mnist, pretrain_epochs: 1, hidden: 16, local_epochs: 1, public_examples: 1000, eval_examples: 200}
round: {timeout: 3s}
security: {unsigned: true}
`, job, region, rounds)

// TestPartitionLeaderCutFromFollowers is scenario (a): the raft leader is
// cut off from both followers while it stays connected to NATS. It must
// step down without committing or announcing a round (its status shows no
// new committed round for as long as the cut lasts, and the history shows
// no announcement the final ledgers did not charge); a follower takes
// over and rounds go on. After the heal the old leader rejoins; of the
// entries it appended but could not commit (read from copies of the logs
// during the cut), those that had reached no follower are discarded and
// those that had are kept (the audit chain records every applied entry's
// index and digest); the job completes, all three ledgers are
// byte-identical, and the whole history passes the checker.
func TestPartitionLeaderCutFromFollowers(t *testing.T) {
	if testing.Short() {
		t.Skip("partition scenario with real processes in network namespaces")
	}
	start := time.Now()
	m := startMesh(t, partitionTopology)
	m.poll("2 committed rounds", 3*time.Minute, func() bool {
		_, s := m.leader(globals...)
		return s.Committed >= 2
	})
	old, s := m.leader(globals...)
	if old == "" {
		t.Fatal("no leader")
	}
	if s.Finished || s.Committed > rounds-4 {
		t.Fatalf("the job is too far along (%d of %d rounds) to partition it: make it longer", s.Committed, rounds)
	}
	for _, g := range globals {
		m.readLedger(g)
	}
	followers := others(old)
	// Cut when the leader pings the region, which it does right before
	// it plans and proposes the next round's OpenRound: that entry is then
	// proposed after the cut — the one a cut-off leader must neither
	// commit nor announce. (On a loaded machine the proposal may beat the
	// cut; the uncommitted entry is then that round's CommitModel.)
	select {
	case <-m.pings:
	case <-time.After(time.Minute):
		t.Fatal("the leader pinged no region for a minute")
	}
	for _, f := range followers {
		if err := m.lab.Cut(old, f); err != nil {
			t.Fatal(err)
		}
	}
	cut := time.Now()
	t.Logf("%s leads (%d+ committed rounds, %v after start): cut it from %v at its ping", old, s.Committed, time.Since(start).Round(time.Millisecond), followers)

	var atStepDown int
	var applied uint64
	m.poll("the cut-off leader to step down", 30*time.Second, func() bool {
		st, ok := m.status(old)
		atStepDown, applied = st.Committed, st.Applied
		return ok && !st.Leader
	})
	stepDown := time.Since(cut)
	m.readLedger(old)
	// Read what the old leader appended after its last applied entry from
	// (a copy of) its log while it is cut off, and the followers' logs
	// too. With 3 nodes an entry that reached a follower before the cut is
	// on a majority and raft must keep it (the other follower cannot win
	// an election without that one's vote); one that reached no follower
	// must be discarded. (An entry committed but not yet applied when the
	// status was read is on a follower too, so it counts as kept.)
	pending := m.logTail(old, applied)
	if len(pending) == 0 {
		t.Errorf("%s appended nothing after the cut: the scenario missed the proposal it exists to test", old)
	}
	reached := map[uint64]string{} // index → a follower holding the old leader's entry there
	for _, f := range followers {
		for i, e := range m.logTail(f, applied) {
			if p, ok := pending[i]; ok && p.digest == e.digest {
				reached[i] = f
			}
		}
	}
	for i, e := range pending {
		where := "on no follower: raft must discard it"
		if f, ok := reached[i]; ok {
			where = "also on " + f + ": raft must keep it"
		}
		t.Logf("%s's uncommitted entry at index %d: %T, %s; %s", old, i, e.cmd, brief(e.cmd), where)
	}
	var next string
	m.poll("a new leader among the followers", 30*time.Second, func() bool {
		next, _ = m.leader(followers...)
		return next != ""
	})
	elected := time.Since(cut)
	var firstCommit time.Duration
	m.poll("2 rounds committed under the new leader", 90*time.Second, func() bool {
		// Throughout the cut, the old leader commits nothing and does
		// not lead.
		if st, ok := m.status(old); ok && (st.Leader || st.Committed != atStepDown) {
			t.Fatalf("%s, cut off from both followers: leader %v, %d committed rounds (had %d when it stepped down)", old, st.Leader, st.Committed, atStepDown)
		}
		_, st := m.leader(next)
		if firstCommit == 0 && st.Committed > atStepDown {
			firstCommit = time.Since(cut)
		}
		return st.Committed >= atStepDown+2
	})
	m.readLedger(old)
	m.readLedger(next)
	if err := m.lab.Heal(); err != nil {
		t.Fatal(err)
	}
	healed := time.Now()
	m.poll("the old leader to catch up", 60*time.Second, func() bool {
		st, ok := m.status(old)
		return ok && st.Committed > atStepDown+1
	})
	caughtUp := time.Since(healed)
	t.Logf("cut → %s steps down %v, → %s elected %v, → first round committed %v; heal → %s catches up %v",
		old, stepDown.Round(time.Millisecond), next, elected.Round(time.Millisecond), firstCommit.Round(time.Millisecond), old, caughtUp.Round(time.Millisecond))

	snaps := m.finalLedgers(time.Minute)
	if err := identical(snaps); err != nil {
		t.Fatal(err)
	}
	l := m.ledger(globals[0])
	// Raft kept exactly the old leader's entries that had reached a
	// follower; the audit chain records the digest of the plaintext of
	// every applied entry, at its index.
	final := map[uint64]string{}
	for _, r := range l.Audit {
		final[r.Index] = r.Digest
	}
	for i, e := range pending {
		kept := final[i] == e.digest
		if _, want := reached[i]; kept != want {
			t.Errorf("%s's uncommitted entry at index %d (%T): kept %v, want %v (on a follower at the cut: %v)", old, i, e.cmd, kept, want, want)
		}
	}
	if !l.Finished || l.CommittedRounds() != rounds {
		t.Fatalf("finished %v with %d committed rounds, want %d", l.Finished, l.CommittedRounds(), rounds)
	}
	t.Logf("the three ledgers are byte-identical (%d bytes): %d rounds recorded, %d committed, %d model versions", len(snaps[globals[0]]), len(l.Rounds), l.CommittedRounds(), len(l.Models))
	participants := 0
	for _, r := range l.Rounds {
		participants += r.Participants
	}
	if participants == 0 {
		t.Fatal("no round had a participant: the scenario tested an empty mesh")
	}
	m.checkModels(l)
	m.checkHistory()
	t.Logf("scenario took %v", time.Since(start).Round(time.Second))
}
