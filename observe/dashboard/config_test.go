package dashboard

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/observe/metrics"
	"github.com/strata-fl/strata/topology"
)

func TestConfigValidate(t *testing.T) {
	top, err := topology.Parse([]byte("job: t\nregions:\n  - {id: a, clients: 2}\n"))
	if err != nil {
		t.Fatal(err)
	}
	// New never touches the node; a zero one stands for it.
	g, err := metrics.NewGlobal(metrics.GlobalConfig{Node: &global.Node{}, Topology: top})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		cfg     Config
		wantErr string // "" means valid
	}{
		{"minimal", Config{Tracker: g}, ""},
		{"heartbeat", Config{Tracker: g, Heartbeat: time.Second}, ""},
		{"no tracker", Config{}, "Config.Tracker"},
		{"negative heartbeat", Config{Tracker: g, Heartbeat: -time.Second}, "Config.Heartbeat -1s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("got %v, want nil", err)
				}
				if s, err := New(tt.cfg); err != nil || s.cfg.Heartbeat <= 0 || s.cfg.Logger == nil {
					t.Fatalf("New: got %v, want a server with a heartbeat and a logger", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrConfig) {
				t.Fatalf("got %v, want an ErrConfig naming %q", err, tt.wantErr)
			}
			if _, nerr := New(tt.cfg); !errors.Is(nerr, ErrConfig) || !strings.Contains(nerr.Error(), tt.wantErr) {
				t.Fatalf("New: got %v, want %v", nerr, err)
			}
		})
	}
	if d := (Config{}).withDefaults(); d.Heartbeat != 15*time.Second {
		t.Errorf("default heartbeat %v, want 15s", d.Heartbeat)
	}
}
