package global

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/privacy"
)

// auditFixtureOut, when set, makes TestWriteAuditFixture write a small
// global node data dir there. The copy under testdata/audit-legacy was
// written by the code whose audit records hashed a rejection's error text
// (format 0), before records carried reason codes: it must never be
// rewritten, since it stands for data dirs written by that code.
var auditFixtureOut = flag.String("audit-fixture-out", "", "write a global node data dir with a short audit trail to this directory")

// TestWriteAuditFixture writes a data dir whose log holds every command
// kind, accepted, duplicate, rejected (with formatted numbers in the
// rejection) and undecodable, with a snapshot in the middle and entries
// after it, as a node that was killed leaves it (no snapshot at close).
func TestWriteAuditFixture(t *testing.T) {
	if *auditFixtureOut == "" {
		t.Skip("set -audit-fixture-out to write the fixture")
	}
	dir := *auditFixtureOut
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	n, err := OpenNode(NodeConfig{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := n.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	orders := privacy.Orders()
	curve := func(v float64) []float64 {
		c := make([]float64, len(orders))
		for i := range c {
			c[i] = v * orders[i]
		}
		return c
	}
	inf := make([]float64, len(orders))
	for i := range inf {
		inf[i] = math.Inf(1)
	}
	step := ledger.PerObserver[[]float64]{Public: curve(0.001), FellowClients: curve(0.001), GlobalOperator: curve(0.01), RegionalOperator: inf}
	open := func(round, version uint64, eps float64, sampled []string) *ledger.OpenRound {
		return &ledger.OpenRound{Round: round, ModelVersion: version, Sampled: len(sampled), Q: 0.5, ClipNorm: 1,
			Noise: ledger.Noise{Regional: 0.8, Global: 0.5}, Sigma: ledger.PerObserver[float64]{Public: 1.2, FellowClients: 1.2, GlobalOperator: 0.8},
			RDP: step, EpsilonAfter: ledger.PerObserver[float64]{Public: eps, FellowClients: eps, GlobalOperator: 3 * eps, RegionalOperator: math.Inf(1)},
			OpenedUnixMs: 1700000000000 + int64(round), Eligible: 4, SampledClients: sampled,
			Slack: ledger.PerObserver[float64]{Public: 1e-12, FellowClients: 1e-12, GlobalOperator: 1e-12}, DeltaCharge: 1e-12}
	}
	cmds := []ledger.Command{
		&ledger.StartJob{Job: ledger.Job{Name: "fixture", ConfigHash: "c0ffee", Delta: 1e-5, Budget: 2, Population: 4, PlannedRounds: 3,
			Accountant: "rdp", Orders: orders, StartedUnixMs: 1700000000000}},
		&ledger.EnrollNodes{Nodes: []ledger.Node{{ID: "a", Kind: "region", PubKey: "UREGIONKEYA"}}, UnixMs: 1700000000001},
		&ledger.EnrollClients{Clients: []ledger.Enrollment{{ID: "a-c00000", Region: "a", Budget: 2}, {ID: "a-c00001", Region: "a", Budget: 2},
			{ID: "a-c00002", Region: "a", Budget: 2}, {ID: "a-c00003", Region: "a", Budget: 0.5}}, Purpose: "fixture", UnixMs: 1700000000002},
		&ledger.EnrollClients{Clients: []ledger.Enrollment{{ID: "a-c00000", Region: "a", Budget: 2}}, Purpose: "fixture", UnixMs: 1700000000003}, // duplicate
		open(1, 0, 0.25, []string{"a-c00000", "a-c00002"}),
		&ledger.CommitModel{Round: 1, Version: 1, Hash: "h1", Score: 0.9, Loss: 0.3, Participants: 2, Regions: []string{"a"}, Promoted: true,
			Partials: []ledger.PartialRef{{Region: "a", Count: 2, Digest: "d1"}}},
		open(2, 1, 2.5, []string{"a-c00001"}),                 // over the budget: rejected with ε in the message
		&ledger.CommitModel{Round: 1, Version: 3, Hash: "h3"}, // rejected: round 1 is no longer open
	}
	apply := func(cmds []ledger.Command) {
		t.Helper()
		for _, c := range cmds {
			if _, err := n.Apply(ctx, c); err != nil {
				t.Fatal(err)
			}
		}
	}
	apply(cmds)
	if _, err := n.TakeSnapshot(); err != nil {
		t.Fatal(err)
	}
	apply([]ledger.Command{
		open(2, 1, 0.5, []string{"a-c00003"}),
		&ledger.AbortRound{Round: 2, Reason: "only 0 of 1 regions reported, 1 required"},
		&ledger.AbortRound{Round: 2, Reason: "again"}, // duplicate
		open(4, 1, 0.75, nil),                         // out of order: rejected
		&ledger.Withdraw{Client: "a-c00001", Reason: "fixture", UnixMs: 1700000000010},
		&ledger.Withdraw{Client: "zz", Reason: "fixture", UnixMs: 1700000000011}, // unknown client
		&ledger.Rollback{To: 0, Reason: "fixture", UnixMs: 1700000000012},
	})
	// An entry no version decodes.
	if err := n.raft.Apply([]byte{0xee, 0x01}, 10*time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	apply([]ledger.Command{&ledger.FinishJob{Reason: "fixture done"}})
	var recs []ledger.AuditRecord
	n.Read(func(l *ledger.Ledger) { recs = append(recs, l.Audit...) })
	// Stop as a killed node would: no snapshot at close, the tail stays in
	// the log only.
	if err := n.raft.Shutdown().Error(); err != nil {
		t.Fatal(err)
	}
	if err := n.store.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, "audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	enc := json.NewEncoder(f)
	for _, r := range recs {
		if err := enc.Encode(r); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("wrote %d records to %s", len(recs), dir)
}

// copyDir copies a fixture data dir, so that opening it never touches the
// committed copy.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.Walk(src, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		if info.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o700)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

func readJSONL(t *testing.T, path string) []ledger.AuditRecord {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := ledger.ReadAuditJSON(f)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// TestLegacyAuditDirVerifies: a data dir written by the code whose audit
// records hashed error text still verifies, snapshot and replayed tail
// alike, and its exported trail still verifies on its own.
func TestLegacyAuditDirVerifies(t *testing.T) {
	dir := copyDir(t, filepath.Join("testdata", "audit-legacy"))
	rep, err := VerifyAuditDir(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	legacy := readJSONL(t, filepath.Join(dir, "audit.jsonl"))
	if rep.Records != len(legacy) || rep.Checked != rep.Records || rep.Snapshot == 0 {
		t.Fatalf("verified %d records (%d against the log, snapshot at %d); want %d, all checked, a snapshot", rep.Records, rep.Checked, rep.Snapshot, len(legacy))
	}
	if err := ledger.VerifyAudit(legacy); err != nil {
		t.Fatalf("exported legacy trail: %v", err)
	}
	l, err := ReadLedger(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range l.Audit {
		if r.Index <= rep.Snapshot && r != legacy[i] {
			t.Fatalf("record %d from the snapshot is %+v, the legacy trail has %+v", i, r, legacy[i])
		}
		// The tail is replayed from the log by this version: its records
		// are in the current format, rejections by reason code.
		if r.Index > rep.Snapshot {
			if r.Version != ledger.AuditFormatCode || r.Digest != legacy[i].Digest || r.Kind != legacy[i].Kind {
				t.Fatalf("replayed record %d: %+v, legacy %+v", i, r, legacy[i])
			}
			if strings.HasPrefix(legacy[i].Outcome, "rejected: ") && !strings.Contains(r.Outcome, "rejected: ") {
				t.Fatalf("replayed record %d: outcome %q, legacy %q", i, r.Outcome, legacy[i].Outcome)
			}
		}
	}
	// Replays of one log give one chain, and what they record of each
	// rejection is its code, so no rewording of a message reaches it.
	again, err := ReadLedger(dir)
	if err != nil {
		t.Fatal(err)
	}
	if again.AuditHead() != l.AuditHead() {
		t.Fatalf("two replays of one log: heads %s and %s", l.AuditHead(), again.AuditHead())
	}
	var outcomes []string
	for _, r := range l.Audit {
		if r.Index > rep.Snapshot {
			outcomes = append(outcomes, r.Outcome)
		}
	}
	want := "applied applied duplicate rejected: round_order applied rejected: unknown_client applied rejected: undecodable applied"
	if got := strings.Join(outcomes, " "); got != want {
		t.Fatalf("replayed outcomes %q, want %q", got, want)
	}
}

// TestLegacySnapshotRoundTrips: the legacy snapshot decodes and encodes
// back to the same bytes, so the record format reads old records as they
// were written.
func TestLegacySnapshotRoundTrips(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join("testdata", "audit-legacy", "raft", "snapshots", "*", "state.bin"))
	if err != nil || len(paths) != 1 {
		t.Fatalf("snapshots %v (%v), want one", paths, err)
	}
	b, err := os.ReadFile(paths[0])
	if err != nil {
		t.Fatal(err)
	}
	l, err := ledger.Restore(b)
	if err != nil {
		t.Fatal(err)
	}
	again, err := l.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, b) {
		t.Fatalf("snapshot of %d bytes encodes back to %d different bytes", len(b), len(again))
	}
}
