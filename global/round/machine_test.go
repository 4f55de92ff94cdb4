package round_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/global/round"
	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/topology"
)

const twoRegions = `
job: t
regions:
  - {id: a, clients: 2}
  - {id: b, clients: 2}
privacy: {sampling_rate: 0.5, budget: 10, min_regions: 1, noise: {regional: 0.7, global: 0.5}}
training: {rounds: 3}
`

// toProposal starts a machine and drives it to its first OpenRound
// proposal, returning the machine and the actions it emitted on the way
// (the proposal last), the proposal not yet applied to the ledger.
func toProposal(t *testing.T) (*sim, []round.Action) {
	t.Helper()
	s := &sim{t: t, at: t.Name()}
	s.exec(t.Name(), "topology", twoRegions)
	s.exec(t.Name(), "start", "")
	var seen []round.Action
	step := func(ev round.Event) []round.Action {
		acts := s.m.Step(ev)
		seen = append(seen, acts...)
		return acts
	}
	step(round.Next{View: s.view()})
	acts := step(round.Probed{Alive: 2, View: s.view(), Now: t0})
	acts = step(round.Drawn{U: make([]float64, acts[len(acts)-1].(round.Draw).N)})
	if _, ok := acts[len(acts)-1].(round.Propose); !ok {
		t.Fatalf("after the draws: %v, want a proposal", acts)
	}
	return s, seen
}

// TestNoPublishBeforeOpenRoundCommits: the machine announces a round only
// in answer to its OpenRound's commit; every other answer to the proposal
// — raft failing, any business rejection — publishes nothing, and nothing
// before the answer does either.
func TestNoPublishBeforeOpenRoundCommits(t *testing.T) {
	tests := []struct {
		name    string
		applied round.Applied
		publish bool
	}{
		{"committed", round.Applied{}, true},
		{"a duplicate of a committed round", round.Applied{Result: ledger.Result{Duplicate: true}}, true},
		{"raft failed", round.Applied{Err: errors.New("global: this node is not the raft leader")}, false},
		{"over the mesh budget", round.Applied{Result: ledger.Result{Err: fmt.Errorf("%w: round 1", ledger.ErrBudget)}}, false},
		{"over a client's budget", round.Applied{Result: ledger.Result{Err: fmt.Errorf("%w: client c", ledger.ErrClientBudget)}}, false},
		{"a client withdrew", round.Applied{Result: ledger.Result{Err: fmt.Errorf("%w: sampled c", ledger.ErrNotEligible)}}, false},
		{"out of order", round.Applied{Result: ledger.Result{Err: ledger.ErrRoundOrder}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, before := toProposal(t)
			for _, a := range before {
				if _, ok := a.(round.OpenRegions); ok {
					t.Fatal("a round was announced before its proposal was answered")
				}
			}
			published := false
			for _, a := range s.m.Step(tt.applied) {
				if _, ok := a.(round.OpenRegions); ok {
					published = true
				}
			}
			if published != tt.publish {
				t.Fatalf("published %v, want %v", published, tt.publish)
			}
		})
	}
}

// TestUnexpectedEventsStop: an event the machine is not waiting for is a
// runner's bug; the machine stops rather than guess.
func TestUnexpectedEventsStop(t *testing.T) {
	s, _ := toProposal(t) // waiting for the proposal's answer
	for _, ev := range []round.Event{round.Acked{}, round.PartialMsg{}, round.Deadline{}, round.Next{}, round.Stored{}} {
		m := *s.m
		acts := m.Step(ev)
		if len(acts) != 1 || !errors.Is(acts[0].(round.Stop).Err, round.ErrUnexpected) || !m.Done() {
			t.Errorf("%T while opening: %v, want a stop with ErrUnexpected", ev, acts)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	top, err := topology.Parse([]byte(twoRegions))
	if err != nil {
		t.Fatal(err)
	}
	ok := round.Config{Topology: top, Pricer: round.PricerFunc(nil), Theta: []float64{0, 0}}
	tests := []struct {
		name string
		edit func(*round.Config)
		want string // a field the error names; "" for valid
	}{
		{"valid", func(*round.Config) {}, ""},
		{"no topology", func(c *round.Config) { c.Topology = nil }, "Topology"},
		{"no pricer", func(c *round.Config) { c.Pricer = nil }, "Pricer"},
		{"no parameters", func(c *round.Config) { c.Theta = nil }, "Theta"},
		{"velocity of another size", func(c *round.Config) { c.Velocity = []float64{0} }, "Velocity"},
		{"negative grace", func(c *round.Config) { c.PartialGrace = -time.Second }, "PartialGrace"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.edit(&c)
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("got %v, want valid", err)
			case tt.want != "" && (err == nil || !contains(err.Error(), tt.want)):
				t.Fatalf("got %v, want an error naming %s", err, tt.want)
			}
			if _, nerr := round.New(c); (nerr == nil) != (err == nil) {
				t.Fatalf("New: %v, Validate: %v", nerr, err)
			}
		})
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// FuzzPartial feeds arbitrary bytes to a collecting machine as partials
// (the subject is one anyone on the bus may publish to): it must never
// panic, and every message it refuses is counted under a region of the
// topology or none.
func FuzzPartial(f *testing.F) {
	whole, _ := wire.Encode(wire.TypePartial, &wire.Partial{Job: "t", Round: 1, Region: "a", Count: 3, Sum: make([]byte, 16)})
	chunk, _ := wire.AppendPartialChunk(nil, &wire.PartialChunkHeader{Job: "t", Round: 1, Region: "b", Count: 4, Total: 2}, make([]byte, 8))
	f.Add(whole)
	f.Add(chunk)
	f.Add([]byte{byte(wire.TypePartial), wire.Version, 0xdf, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, acts := toProposal(t)
		s.run(s.propose(acts[len(acts)-1].(round.Propose).Cmd))
		s.run(round.Acked{Regions: []string{"a", "b"}})
		for i := 0; i < 3; i++ {
			if _, ok := s.m.Collecting(); !ok {
				break
			}
			s.run(round.PartialMsg{Data: b, At: t0})
		}
		if until, ok := s.m.Collecting(); ok {
			s.run(round.Deadline{At: until})
		}
		if len(s.reports) != 1 {
			t.Fatalf("%d reports of round 1, want 1", len(s.reports))
		}
		for _, r := range s.reports[0].Rejected {
			if r.Region != "" && r.Region != "a" && r.Region != "b" {
				t.Fatalf("rejection counted under region %q", r.Region)
			}
		}
	})
}
