package ledger

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

func TestReasonCodes(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{ErrBudget, "budget"},
		{fmt.Errorf("%w: round 3 would bring public ε to 2.5, budget is 2", ErrBudget), "budget"},
		{fmt.Errorf("%w: client %q", ErrClientBudget, "a"), "client_budget"},
		{fmt.Errorf("%w: got round 4, next is 3", ErrRoundOrder), "round_order"},
		{ErrRoundConflict, "round_conflict"},
		{ErrRoundNotOpen, "round_not_open"},
		{ErrNoJob, "no_job"},
		{ErrJobExists, "job_exists"},
		{ErrJobFinished, "job_finished"},
		{ErrVersion, "version"},
		{ErrCurve, "curve"},
		{ErrUnknown, "unknown_command"},
		{ErrRollback, "rollback"},
		{ErrInvalid, "invalid"},
		{ErrUnknownClient, "unknown_client"},
		{ErrNotEligible, "not_eligible"},
		{ErrKeyConflict, "key_conflict"},
		{fmt.Errorf("%w: unknown kind 238", ErrDecode), "undecodable"},
		{errors.New("something else"), "other"},
	}
	for _, tt := range tests {
		if got := ReasonCode(tt.err); got != tt.want {
			t.Errorf("ReasonCode(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

// TestAuditOutcomeHoldsNoErrorText: the trail records a rejection by its
// code, so two logs that differ only in how a message would be worded (here:
// the ε in the over-budget message) replay to the same outcomes.
func TestAuditOutcomeHoldsNoErrorText(t *testing.T) {
	outcomes := func(eps float64) []string {
		l := New()
		for i, c := range []Command{job(), open(1, eps)} {
			b, err := Encode(c)
			if err != nil {
				t.Fatal(err)
			}
			l.ApplyEntry(uint64(i+1), b)
		}
		l.ApplyEntry(3, []byte{0xee})
		var out []string
		for _, r := range l.Audit {
			if r.Version != AuditFormatCode {
				t.Fatalf("new record of format %d, want %d", r.Version, AuditFormatCode)
			}
			out = append(out, r.Outcome)
		}
		return out
	}
	a, b := outcomes(1.5), outcomes(7.25)
	want := []string{"applied", "rejected: budget", "rejected: undecodable"}
	if strings.Join(a, "|") != strings.Join(want, "|") || strings.Join(b, "|") != strings.Join(want, "|") {
		t.Fatalf("outcomes %q and %q, want %q for both", a, b, want)
	}
}

func chain(versions ...uint8) []AuditRecord {
	var recs []AuditRecord
	prev := ""
	for i, v := range versions {
		r := AuditRecord{Index: uint64(i + 1), Kind: "open_round", At: int64(i), Digest: "d", Outcome: "applied", Prev: prev, Version: v}
		r.Hash = recordHash(&r)
		recs = append(recs, r)
		prev = r.Hash
	}
	return recs
}

func TestVerifyAuditFormats(t *testing.T) {
	tests := []struct {
		name    string
		recs    []AuditRecord
		edit    func([]AuditRecord)
		wantPos int // -1: verifies
	}{
		{"legacy", chain(0, 0, 0), nil, -1},
		{"current", chain(1, 1), nil, -1},
		{"legacy then current (a replayed tail)", chain(0, 0, 1, 1), nil, -1},
		{"current then legacy", chain(1, 0), nil, 1},
		{"unknown format", chain(0, 2), nil, 1},
		{"format changed after hashing", chain(1, 1), func(r []AuditRecord) { r[1].Version = 0 }, 1},
		{"outcome edited", chain(0, 1), func(r []AuditRecord) { r[1].Outcome = "rejected: budget" }, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.edit != nil {
				tt.edit(tt.recs)
			}
			err := VerifyAudit(tt.recs)
			var ae *AuditError
			switch {
			case tt.wantPos < 0 && err != nil:
				t.Fatalf("got %v, want the chain to verify", err)
			case tt.wantPos >= 0 && (!errors.As(err, &ae) || ae.Position != tt.wantPos || !errors.Is(err, ErrAudit)):
				t.Fatalf("got %v, want record %d named", err, tt.wantPos)
			}
		})
	}
}

// TestAuditRecordLayouts: a format-0 record keeps the 7-element array it
// was always written as (old snapshots decode, and encode back to the same
// bytes); a format-1 record round-trips with its version.
func TestAuditRecordLayouts(t *testing.T) {
	type legacy struct { // the layout before formats had numbers
		_msgpack struct{} `msgpack:",as_array"`
		Index    uint64
		Kind     string
		At       int64
		Digest   string
		Outcome  string
		Prev     string
		Hash     string
	}
	old := legacy{Index: 300, Kind: "open_round", At: -1, Digest: "d", Outcome: "rejected: ledger: round out of order", Prev: "p", Hash: "h"}
	ob, err := msgpack.Marshal(&old)
	if err != nil {
		t.Fatal(err)
	}
	var r AuditRecord
	if err := msgpack.Unmarshal(ob, &r); err != nil {
		t.Fatal(err)
	}
	if r.Version != AuditFormatText || r.Index != 300 || r.At != -1 || r.Outcome != old.Outcome || r.Hash != "h" {
		t.Fatalf("legacy record decoded as %+v", r)
	}
	again, err := msgpack.Marshal(&r)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, ob) {
		t.Fatalf("legacy record re-encoded as %x, was %x", again, ob)
	}
	cur := AuditRecord{Index: 7, Kind: "k", Outcome: "rejected: budget", Version: AuditFormatCode}
	cb, err := msgpack.Marshal(&cur)
	if err != nil {
		t.Fatal(err)
	}
	var back AuditRecord
	if err := msgpack.Unmarshal(cb, &back); err != nil || back != cur {
		t.Fatalf("current record round-tripped to %+v (%v), want %+v", back, err, cur)
	}
	for _, bad := range [][]any{{1, "k", 0, "d", "o", "p"}, {1, "k", 0, "d", "o", "p", "h", 0}, {1, "k", 0, "d", "o", "p", "h", 1, 2}} {
		b, _ := msgpack.Marshal(bad)
		if err := msgpack.Unmarshal(b, &back); err == nil {
			t.Errorf("%v decoded as a record", bad)
		}
	}
}

func TestReadAuditJSON(t *testing.T) {
	recs := chain(0, 1)
	var buf bytes.Buffer
	for _, r := range recs {
		b, _ := json.Marshal(r)
		buf.Write(append(b, '\n'))
	}
	if !strings.Contains(buf.String(), `"v":1`) || strings.Count(buf.String(), `"v":`) != 1 {
		t.Fatalf("export %s: want the version on the current record only", buf.String())
	}
	got, err := ReadAuditJSON(&buf)
	if err != nil || len(got) != 2 || got[0] != recs[0] || got[1] != recs[1] {
		t.Fatalf("read %+v (%v), want %+v", got, err, recs)
	}
	if _, err := ReadAuditJSON(strings.NewReader("{}\nnot json\n")); !errors.Is(err, ErrAudit) || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("bad line: got %v", err)
	}
	if _, err := ReadAuditJSON(strings.NewReader("")); !errors.Is(err, ErrAudit) {
		t.Fatalf("empty trail: got %v", err)
	}
}
