package edge

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/strata-fl/strata/mesh"
	"github.com/strata-fl/strata/mesh/wire"
)

type nopTrainer struct{}

func (nopTrainer) Train(context.Context, string, uint64, []float64, []float64) (int, error) {
	return 1, nil
}

func TestFleetConfigValidate(t *testing.T) {
	ok := func(f func(*FleetConfig)) FleetConfig {
		c := FleetConfig{Job: "j", Trainer: nopTrainer{}, Models: &mesh.ModelStore{},
			Clients: []Client{{ID: "eu-0", Region: "eu"}, {ID: "eu-c1", Region: "eu"}}}
		if f != nil {
			f(&c)
		}
		return c
	}
	tests := []struct {
		name    string
		cfg     FleetConfig
		wantErr string // "" means valid
	}{
		{"minimal", ok(nil), ""},
		{"no clients", ok(func(c *FleetConfig) { c.Clients = nil }), ""},
		{"everything", ok(func(c *FleetConfig) {
			c.Workers, c.Stream = 4, StreamConfig{ChunkBytes: 1 << 16, Encoding: wire.EncodingTopK, TopK: 1}
			c.Canaries = map[string][]float64{"eu-c1": {1, 0}}
		}), ""},
		{"no trainer", ok(func(c *FleetConfig) { c.Trainer = nil }), "FleetConfig.Trainer"},
		{"no models", ok(func(c *FleetConfig) { c.Models = nil }), "FleetConfig.Models"},
		{"negative workers", ok(func(c *FleetConfig) { c.Workers = -1 }), "FleetConfig.Workers -1"},
		{"no job", ok(func(c *FleetConfig) { c.Job = "" }), "FleetConfig.Job"},
		{"job with a dot", ok(func(c *FleetConfig) { c.Job = "a.b" }), "FleetConfig.Job"},
		{"client without region", ok(func(c *FleetConfig) { c.Clients[1].Region = "" }), "FleetConfig.Clients[1]"},
		{"client with a wildcard", ok(func(c *FleetConfig) { c.Clients[0].ID = "eu-*" }), "FleetConfig.Clients[0]"},
		{"client twice", ok(func(c *FleetConfig) { c.Clients[1] = c.Clients[0] }), "listed twice"},
		{"unknown encoding", ok(func(c *FleetConfig) { c.Stream.Encoding = "f16" }), "StreamConfig.Encoding"},
		{"top-k above 1", ok(func(c *FleetConfig) { c.Stream.TopK = 1.5 }), "StreamConfig.TopK"},
		{"negative top-k", ok(func(c *FleetConfig) { c.Stream.TopK = -0.1 }), "StreamConfig.TopK"},
		{"NaN top-k", ok(func(c *FleetConfig) { c.Stream.TopK = math.NaN() }), "StreamConfig.TopK"},
		{"negative chunk", ok(func(c *FleetConfig) { c.Stream.ChunkBytes = -1 }), "StreamConfig.ChunkBytes"},
		{"canary not a client", ok(func(c *FleetConfig) { c.Canaries = map[string][]float64{"x": {1}} }), "canary \"x\" is not one of"},
		{"canary without direction", ok(func(c *FleetConfig) { c.Canaries = map[string][]float64{"eu-c1": nil} }), "no direction"},
		{"canary non-finite", ok(func(c *FleetConfig) { c.Canaries = map[string][]float64{"eu-c1": {math.Inf(1)}} }), "non-finite"},
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
			if _, nerr := NewFleet(tt.cfg); !errors.Is(nerr, ErrConfig) || !strings.Contains(nerr.Error(), tt.wantErr) {
				t.Fatalf("NewFleet: got %v, want %v", nerr, err)
			}
		})
	}
}

func TestFleetConfigDefaults(t *testing.T) {
	f, err := NewFleet(FleetConfig{Job: "j", Trainer: nopTrainer{}, Models: &mesh.ModelStore{}})
	if err != nil {
		t.Fatal(err)
	}
	if f.cfg.Workers != 2 || f.cfg.Logger == nil {
		t.Errorf("defaults: got %d workers, logger %v; want 2 and a silent logger", f.cfg.Workers, f.cfg.Logger)
	}
	if s := (StreamConfig{}).withDefaults(); s.ChunkBytes != 1<<20 || s.Encoding != wire.EncodingF32 || s.TopK != 0.1 {
		t.Errorf("stream defaults: got %+v, want 1 MiB chunks of f32, top-k 0.1", s)
	}
}
