package history

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/internal/seal"
)

var nodes = []string{"g1", "g2", "g3"}

// sample is who round r samples: two clients of region a.
func sample(r uint64) []string {
	return []string{fmt.Sprintf("a-c%d", r), fmt.Sprintf("a-c%d", r+1)}
}

func roundEvent(node string, view int, r uint64) Event {
	eps := 0.1 * float64(r)
	return Event{Kind: Round, Node: node, View: view, Index: 10 * r, Round: r, ModelVersion: r - 1, Status: "committed", Version: r,
		Count: 2, Clients: sample(r), EpsAfter: [3]float64{eps, 2 * eps, math.Inf(1)}, Cost: fmt.Sprintf("cost-%d", r)}
}

func versionEvent(node string, view int, r uint64) Event {
	return Event{Kind: Version, Node: node, View: view, Version: r, Round: r, Hash: fmt.Sprintf("hash-%d", r)}
}

func read(node string, n int, rounds uint64) []Event {
	var evs []Event
	for r := uint64(1); r <= rounds; r++ {
		evs = append(evs, roundEvent(node, n, r))
	}
	for r := uint64(1); r <= rounds; r++ {
		evs = append(evs, versionEvent(node, n, r))
	}
	return evs
}

// wire is what round r puts on the wire: its announcement, both sampled
// clients' updates, region a's partial, and the released model.
func wire(r uint64) []Event {
	s := sample(r)
	return []Event{
		{Kind: Announce, Round: r, Region: "a", Clients: s, ModelVersion: r - 1},
		{Kind: Update, Round: r, Region: "a", Client: s[0]},
		{Kind: Update, Round: r, Region: "a", Client: s[1]},
		{Kind: Partial, Round: r, Region: "a", Count: 2},
		{Kind: Model, Version: r, Round: r, Hash: fmt.Sprintf("hash-%d", r), ReadOK: true},
	}
}

// good is a passing history: 3 rounds on 3 nodes, g2 restarted after
// round 2 (its second read extends the first), then every node read.
func good() []Event {
	var evs []Event
	for r := uint64(1); r <= 3; r++ {
		evs = append(evs, wire(r)...)
		if r == 2 {
			evs = append(evs, read("g2", 1, 2)...)
			evs = append(evs, Event{Kind: Restart, Node: "g2"})
		}
	}
	evs = append(evs, read("g2", 2, 3)...)
	evs = append(evs, read("g1", 1, 3)...)
	evs = append(evs, read("g3", 1, 3)...)
	return evs
}

// edit returns good() with fn applied to every event it selects.
func edit(sel func(Event) bool, fn func(*Event)) func([]Event) []Event {
	return func(evs []Event) []Event {
		for i := range evs {
			if sel(evs[i]) {
				fn(&evs[i])
			}
		}
		return evs
	}
}

func on(kind Kind, node string, round uint64) func(Event) bool {
	return func(e Event) bool { return e.Kind == kind && (node == "" || e.Node == node) && e.Round == round }
}

// releasedUncommitted is good() where round 3's model was released (it
// is on the wire, read back from the object store) but every ledger holds
// the round with status, not committed, and records no v3: what a
// coordinator that releases before its CommitModel is applied leaves
// when the commit then fails (a new leader aborts the round).
func releasedUncommitted(status string) func([]Event) []Event {
	return func(evs []Event) []Event {
		evs = slices.DeleteFunc(evs, func(e Event) bool { return e.Kind == Version && e.Version == 3 })
		for i := range evs {
			if e := &evs[i]; e.Kind == Round && e.Round == 3 {
				e.Status, e.Version = status, 0
			}
		}
		return evs
	}
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name string
		edit func([]Event) []Event
		want string // invariant, "" for a pass
	}{
		{"passing history", nil, ""},
		{"the write-ahead rule broken: a round announced that no ledger charged", func(evs []Event) []Event {
			return append(evs[:len(evs):len(evs)], Event{Kind: Announce, Round: 4, Region: "a", Clients: sample(4)})
		}, WriteAhead},
		{"the write-ahead rule broken: an uncommitted round on the old leader alone, announced", func(evs []Event) []Event {
			evs = append(evs, Event{Kind: Announce, Round: 4, Region: "a", Clients: sample(4)})
			open := roundEvent("g1", 2, 4)
			open.Status, open.Version = "open", 0
			g1 := read("g1", 2, 3)
			return append(append(evs, g1[:3]...), append([]Event{open}, g1[3:]...)...)
		}, WriteAhead},
		{"the write-ahead rule broken: an update from a client the round did not charge", func(evs []Event) []Event {
			i := slices.IndexFunc(evs, on(Update, "", 2))
			return slices.Insert(evs, i, Event{Kind: Update, Round: 2, Region: "a", Client: "a-c99"})
		}, WriteAhead},
		{"the write-ahead rule broken: an announcement sampling a client the ledgers did not charge", edit(on(Announce, "", 3), func(e *Event) {
			e.Clients = []string{"a-c3", "a-c77"}
		}), WriteAhead},
		{"the write-ahead rule broken: a round announced with another base model than the ledgers charged", edit(on(Announce, "", 2), func(e *Event) { e.ModelVersion = 0 }), WriteAhead},
		{"the duplicate check broken: a replayed update counted in the partial", func(evs []Event) []Event {
			i := slices.IndexFunc(evs, on(Partial, "", 2))
			evs = slices.Insert(evs, i, Event{Kind: Update, Round: 2, Region: "a", Client: "a-c2"})
			evs[i+1].Count = 3
			return evs
		}, CountedOnce},
		{"a replayed update on the wire, not counted, passes", func(evs []Event) []Event {
			i := slices.IndexFunc(evs, on(Partial, "", 2))
			return slices.Insert(evs, i, Event{Kind: Update, Round: 2, Region: "a", Client: "a-c2"})
		}, ""},
		{"the ledger counts more participants than clients sent updates", edit(func(e Event) bool { return e.Kind == Round && e.Round == 1 }, func(e *Event) { e.Count = 3 }), CountedOnce},
		{"a model released that no ledger records", func(evs []Event) []Event {
			return append(evs, Event{Kind: Model, Version: 4, Round: 4, Hash: "hash-4", ReadOK: true})
		}, ReleaseAfterCommit},
		{"the write-ahead rule broken: a model released before its round's commit, which never came (the round aborted)", releasedUncommitted("aborted"), ReleaseAfterCommit},
		{"the write-ahead rule broken: a model released before its round's commit, the round still open", releasedUncommitted("open"), ReleaseAfterCommit},
		{"a model released with another hash than the ledgers'", edit(func(e Event) bool { return e.Kind == Model && e.Version == 2 }, func(e *Event) { e.Hash = "other" }), ReleaseAfterCommit},
		{"a version released twice with two hashes", func(evs []Event) []Event {
			i := slices.IndexFunc(evs, func(e Event) bool { return e.Kind == Model && e.Version == 2 })
			return slices.Insert(evs, i+1, Event{Kind: Model, Version: 2, Round: 2, Hash: "hash-2-bis", ReadOK: true})
		}, OneModelPerVersion},
		{"a model seen as a round's base, its round unknown, passes", func(evs []Event) []Event {
			return append(evs, Event{Kind: Model, Version: 2, Hash: "hash-2", ReadOK: true}, Event{Kind: Model, Version: 0, Hash: "checkpoint", ReadOK: true})
		}, ""},
		{"a round's base model of unknown round that no ledger records", func(evs []Event) []Event {
			return append(evs, Event{Kind: Model, Version: 5, Hash: "hash-5", ReadOK: true})
		}, ReleaseAfterCommit},
		{"a released model missing from the object store", edit(func(e Event) bool { return e.Kind == Model && e.Version == 3 }, func(e *Event) { e.ReadOK = false }), ModelStored},
		{"a round charged differently on one node", edit(on(Round, "g1", 2), func(e *Event) { e.Cost = "cost-other" }), ChargedIdentically},
		{"a round at another raft index on one node", edit(on(Round, "g3", 3), func(e *Event) { e.Index = 31 }), ChargedIdentically},
		{"a node's last read lacks a round", func(evs []Event) []Event {
			return slices.DeleteFunc(evs, func(e Event) bool {
				return e.Node == "g3" && (e.Kind == Round && e.Round == 3 || e.Kind == Version && e.Version == 3)
			})
		}, ChargedOnEveryNode},
		{"spend decreases", edit(func(e Event) bool { return e.Kind == Round && e.Round == 3 }, func(e *Event) { e.EpsAfter[1] = 0.1 }), SpendMonotonic},
		{"a round recorded twice", func(evs []Event) []Event {
			i := slices.IndexFunc(evs, on(Round, "g1", 2))
			return slices.Insert(evs, i+1, evs[i])
		}, RoundsConsecutive},
		{"a version skipped", edit(func(e Event) bool {
			return e.Node == "g1" && (e.Kind == Version && e.Version == 3 || e.Kind == Round && e.Round == 3)
		}, func(e *Event) { e.Version = 4 }), VersionsConsecutive},
		{"a committed round without its model", edit(on(Round, "g1", 2), func(e *Event) { e.Version = 9 }), LedgerModelRound},
		{"a restarted node lost a committed round", func(evs []Event) []Event {
			return slices.DeleteFunc(evs, func(e Event) bool {
				return e.Node == "g2" && e.View == 2 && (e.Kind == Round && e.Round >= 2 || e.Kind == Version && e.Version >= 2)
			})
		}, Resume},
		{"a restarted node changed a committed round", edit(func(e Event) bool { return e.Kind == Round && e.Node == "g2" && e.View == 2 && e.Round == 1 }, func(e *Event) { e.Status = "aborted" }), Resume},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evs := good()
			if tt.edit != nil {
				evs = tt.edit(evs)
			}
			err := Check(evs)
			var v *Violation
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("got %v, want a pass", err)
			case tt.want == "":
				return
			case !errors.As(err, &v) || !errors.Is(err, ErrViolation):
				t.Fatalf("got %v, want a %s violation", err, tt.want)
			case v.Invariant != tt.want:
				t.Fatalf("got %s, want %s:\n%v", v.Invariant, tt.want, err)
			}
			t.Logf("%v", err)
		})
	}
}

// TestViolationShowsContext: the report names the first bad event and
// shows the events around it.
func TestViolationShowsContext(t *testing.T) {
	evs := good()
	i := slices.IndexFunc(evs, on(Update, "", 2))
	evs = slices.Insert(evs, i, Event{Kind: Update, Round: 2, Region: "a", Client: "a-c99"})
	err := Check(evs)
	var v *Violation
	if !errors.As(err, &v) {
		t.Fatalf("got %v, want a violation", err)
	}
	if v.Pos != i || v.Event.Client != "a-c99" {
		t.Fatalf("violation at #%d (%v), want #%d", v.Pos, v.Event, i)
	}
	if len(v.Before) != Around || len(v.After) != Around || v.After[0].String() != evs[i+1].String() {
		t.Fatalf("context: %d before, %d after", len(v.Before), len(v.After))
	}
	msg := err.Error()
	for _, want := range []string{fmt.Sprintf(">> #%d update round 2 region a client a-c99", i), fmt.Sprintf("#%d ", i-1), fmt.Sprintf("#%d ", i+Around)} {
		if !strings.Contains(msg, want) {
			t.Errorf("the report lacks %q:\n%s", want, msg)
		}
	}
}

// TestFromLedger: a real ledger's rounds and versions become events that
// check, and the same ledger read on three nodes passes.
func TestFromLedger(t *testing.T) {
	l := ledger.New()
	orders := []float64{2, 4}
	curve := []float64{0.1, 0.2}
	cmds := []ledger.Command{
		&ledger.StartJob{Job: ledger.Job{Name: "j", Budget: 10, Orders: orders}},
		&ledger.EnrollClients{Clients: []ledger.Enrollment{{ID: "a-c1", Region: "a", Budget: 10}, {ID: "a-c2", Region: "a", Budget: 10}}},
	}
	for r := uint64(1); r <= 2; r++ {
		cmds = append(cmds,
			&ledger.OpenRound{Round: r, ModelVersion: r - 1, Sampled: 2, Q: 1, ClipNorm: 1, Eligible: 2, SampledClients: []string{"a-c1", "a-c2"},
				RDP:          ledger.PerObserver[[]float64]{Public: curve, GlobalOperator: curve, RegionalOperator: curve},
				EpsilonAfter: ledger.PerObserver[float64]{Public: float64(r), GlobalOperator: float64(r), RegionalOperator: float64(r)}},
			&ledger.CommitModel{Round: r, Version: r, Hash: fmt.Sprint("h", r), Participants: 2, Promoted: true})
	}
	for i, c := range cmds {
		if res := l.Apply(uint64(i+1), c); res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	var rec Recorder
	for _, n := range nodes {
		rec.Ledger(n, l)
	}
	rec.Add(Event{Kind: Model, Version: 2, Round: 2, Hash: "h2", ReadOK: true})
	evs := rec.Events()
	if err := Check(evs); err != nil {
		t.Fatal(err)
	}
	if got := evs[0]; got.Kind != Round || got.Index != 3 || !slices.Equal(got.Clients, []string{"a-c1", "a-c2"}) || got.Cost == "" {
		t.Fatalf("first event %+v", got)
	}
	if evs[len(evs)-2].Kind != Version || evs[len(evs)-2].Hash != "h2" {
		t.Fatalf("version event %+v", evs[len(evs)-2])
	}
}

// TestRecorderDataDir: a stopped node's ledger is read from its data dir
// (sealed, as a node with a key file writes it) into a view.
func TestRecorderDataDir(t *testing.T) {
	dir := t.TempDir()
	key, err := seal.NewKey(bytes.Repeat([]byte{9}, 32))
	if err != nil {
		t.Fatal(err)
	}
	n, err := global.OpenNode(global.NodeConfig{DataDir: dir, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.WaitLeader(t.Context()); err != nil {
		t.Fatal(err)
	}
	curve := []float64{0.1, 0.2}
	for _, c := range []ledger.Command{
		&ledger.StartJob{Job: ledger.Job{Name: "j", Budget: 10, Orders: []float64{2, 4}}},
		&ledger.OpenRound{Round: 1, Sampled: 0, Q: 1, ClipNorm: 1,
			RDP:          ledger.PerObserver[[]float64]{Public: curve, GlobalOperator: curve, RegionalOperator: curve},
			EpsilonAfter: ledger.PerObserver[float64]{Public: 1, GlobalOperator: 1, RegionalOperator: 1}},
		&ledger.CommitModel{Round: 1, Version: 1, Hash: "h1", Promoted: true},
	} {
		if res, err := n.Apply(t.Context(), c); err != nil || res.Err != nil {
			t.Fatalf("%T: %v %v", c, err, res.Err)
		}
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	var rec Recorder
	if err := rec.DataDir("g1", dir, nil); !errors.Is(err, seal.ErrNeedKey) {
		t.Fatalf("without the key: got %v, want ErrNeedKey", err)
	}
	if err := rec.DataDir("g1", dir, key); err != nil {
		t.Fatal(err)
	}
	evs := rec.Events()
	if len(evs) != 2 || evs[0].Kind != Round || evs[0].Status != "committed" || evs[1].Kind != Version || evs[1].Hash != "h1" || evs[0].View != 1 {
		t.Fatalf("events %v", evs)
	}
	if err := Check(evs); err != nil {
		t.Fatal(err)
	}
}
