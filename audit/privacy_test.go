package audit

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/strata-fl/strata/topology"
)

func TestConfigValidate(t *testing.T) {
	parse := func(src string) *topology.Topology {
		t.Helper()
		top, err := topology.Parse([]byte(src))
		if err != nil {
			t.Fatal(err)
		}
		return top
	}
	top := parse("job: t\nregions:\n  - {id: a, clients: 4}\naudit: {canaries: 10}\n")
	none := parse("job: t\nregions:\n  - {id: a, clients: 4}\n")
	dir := t.TempDir()
	tests := []struct {
		name    string
		cfg     Config
		wantErr string // "" means valid
		is      error
	}{
		{"minimal", Config{DataDir: dir, Topology: top}, "", nil},
		{"everything", Config{DataDir: dir, Topology: top, Confidence: 0.99, FPR: 0.05}, "", nil},
		{"no data dir", Config{Topology: top}, "Config.DataDir", ErrConfig},
		{"no topology", Config{DataDir: dir}, "Config.Topology", ErrConfig},
		{"no canaries", Config{DataDir: dir, Topology: none}, "audit.canaries", ErrNoCanaries},
		{"confidence 1", Config{DataDir: dir, Topology: top, Confidence: 1}, "Config.Confidence 1", ErrConfig},
		{"negative confidence", Config{DataDir: dir, Topology: top, Confidence: -0.5}, "Config.Confidence -0.5", ErrConfig},
		{"NaN confidence", Config{DataDir: dir, Topology: top, Confidence: math.NaN()}, "Config.Confidence NaN", ErrConfig},
		{"FPR above 1", Config{DataDir: dir, Topology: top, FPR: 2}, "Config.FPR 2", ErrConfig},
		{"negative FPR", Config{DataDir: dir, Topology: top, FPR: -0.01}, "Config.FPR -0.01", ErrConfig},
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
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, tt.is) {
				t.Fatalf("got %v, want an error wrapping %v naming %q", err, tt.is, tt.wantErr)
			}
			if _, perr := Privacy(context.Background(), tt.cfg); !errors.Is(perr, tt.is) || !strings.Contains(perr.Error(), tt.wantErr) {
				t.Fatalf("Privacy: got %v, want %v", perr, err)
			}
		})
	}
	if d := (Config{}).withDefaults(); d.Confidence != 0.95 || d.FPR != 0.01 || d.Status == nil {
		t.Errorf("defaults: got confidence %v, FPR %v; want 0.95, 0.01 and a silent status", d.Confidence, d.FPR)
	}
}
