package metrics

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/observe/report"
	"github.com/strata-fl/strata/topology"
)

func TestGlobalConfigValidate(t *testing.T) {
	top, err := topology.Parse([]byte("job: t\nregions:\n  - {id: a, clients: 2}\n"))
	if err != nil {
		t.Fatal(err)
	}
	// Validate never touches the node; a zero one stands for it.
	node := &global.Node{}
	tests := []struct {
		name    string
		cfg     GlobalConfig
		wantErr string // "" means valid
	}{
		{"minimal", GlobalConfig{Node: node, Topology: top}, ""},
		{"everything", GlobalConfig{Node: node, Topology: top, Dim: 10, Poll: time.Second, Alerts: Alerts{EpsilonFraction: 1, RejectionRate: 0.5, RoundSeconds: 3}}, ""},
		{"no node", GlobalConfig{Topology: top}, "GlobalConfig.Node"},
		{"no topology", GlobalConfig{Node: node}, "GlobalConfig.Topology"},
		{"negative dim", GlobalConfig{Node: node, Topology: top, Dim: -1}, "GlobalConfig.Dim -1"},
		{"negative poll", GlobalConfig{Node: node, Topology: top, Poll: -time.Second}, "GlobalConfig.Poll -1s"},
		{"epsilon fraction above 1", GlobalConfig{Node: node, Topology: top, Alerts: Alerts{EpsilonFraction: 2}}, "GlobalConfig.Alerts: metrics: alert epsilon fraction 2"},
		{"NaN rejection rate", GlobalConfig{Node: node, Topology: top, Alerts: Alerts{RejectionRate: math.NaN()}}, "alert rejection rate NaN"},
		{"negative round seconds", GlobalConfig{Node: node, Topology: top, Alerts: Alerts{RoundSeconds: -1}}, "alert round seconds -1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("got %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrConfig) {
				t.Fatalf("got %v, want an ErrConfig naming %q", err, tt.wantErr)
			}
			if _, nerr := NewGlobal(tt.cfg); !errors.Is(nerr, ErrConfig) || !strings.Contains(nerr.Error(), tt.wantErr) {
				t.Fatalf("NewGlobal: got %v, want %v", nerr, err)
			}
		})
	}
}

func TestGlobalConfigDefaults(t *testing.T) {
	top, err := topology.Parse([]byte("job: t\nregions:\n  - {id: a, clients: 2}\n"))
	if err != nil {
		t.Fatal(err)
	}
	g, err := NewGlobal(GlobalConfig{Node: &global.Node{}, Topology: top})
	if err != nil {
		t.Fatal(err)
	}
	want := Alerts{}.WithDefaults(top.Round.Timeout.Seconds())
	if g.cfg.Poll != 250*time.Millisecond || g.cfg.Logger == nil || g.cfg.Alerts != want {
		t.Errorf("defaults: got poll %v, logger %v, alerts %+v; want 250ms, a silent logger, %+v", g.cfg.Poll, g.cfg.Logger, g.cfg.Alerts, want)
	}
}

// TestRegionsFromTheLedgerWhereThisNodeCoordinatedNothing: a node whose
// coordinator reported no round (a follower) shows, for a committed
// round, the partials the ledger records as merged, and nothing for
// rounds without a model; it never decodes the bus.
func TestRegionsFromTheLedgerWhereThisNodeCoordinatedNothing(t *testing.T) {
	top, err := topology.Parse([]byte("job: t\nregions:\n  - {id: a, clients: 2}\n  - {id: b, clients: 2}\n"))
	if err != nil {
		t.Fatal(err)
	}
	g, err := NewGlobal(GlobalConfig{Node: &global.Node{}, Topology: top, Dim: 10})
	if err != nil {
		t.Fatal(err)
	}
	rounds := []report.Round{
		{Round: 1, Status: "committed", Regions: []string{"a", "b"}, Model: &ledger.Model{Partials: []ledger.PartialRef{{Region: "a", Count: 3}, {Region: "b", Count: 1}}}},
		{Round: 2, Status: "aborted"},
		{Round: 3, Status: "open"},
	}
	got := g.Regions(rounds)
	if len(got) != 1 || got[1]["a"].Accepted != 3 || got[1]["b"].Accepted != 1 {
		t.Fatalf("regions %+v, want round 1's merged partials only", got)
	}
}

func TestReasonLabel(t *testing.T) {
	for in, want := range map[string]string{"norm_exceeded": "norm_exceeded", "": "other", "Bad": "other", "a-b": "other", "waytoolongforalabelvaluewaytoolongx": "other"} {
		if got := reasonLabel(in); got != want {
			t.Errorf("reasonLabel(%q) = %q, want %q", in, got, want)
		}
	}
}
