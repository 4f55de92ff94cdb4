package secagg

import (
	"errors"
	"math"
	"strings"
	"testing"
)

var okParams = Params{Clients: 10, Degree: 4, Threshold: 3, MinSurvivors: 7, Bits: 32, Dim: 10}

// checkConfigErr is the shared assertion of the config tables.
func checkConfigErr(t *testing.T, err error, wantErr string, is error) {
	t.Helper()
	if wantErr == "" {
		if err != nil {
			t.Fatalf("got %v, want nil", err)
		}
		return
	}
	if err == nil || !strings.Contains(err.Error(), wantErr) || !errors.Is(err, is) {
		t.Fatalf("got %v, want an error wrapping %v naming %q", err, is, wantErr)
	}
}

func TestClientConfigValidate(t *testing.T) {
	bad := okParams
	bad.Threshold = 5
	tests := []struct {
		name    string
		cfg     ClientConfig
		wantErr string // "" means valid
	}{
		{"first", ClientConfig{ID: 1, Params: okParams}, ""},
		{"last", ClientConfig{ID: 10, Params: okParams}, ""},
		{"zero ID", ClientConfig{Params: okParams}, "ClientConfig.ID = 0"},
		{"ID beyond the clients", ClientConfig{ID: 11, Params: okParams}, "ClientConfig.ID = 11, want 1..10"},
		{"bad params", ClientConfig{ID: 1, Params: bad}, "ClientConfig.Params.Threshold = 5"},
		{"no params", ClientConfig{ID: 1}, "ClientConfig.Params.Clients = 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkConfigErr(t, tt.cfg.Validate(), tt.wantErr, ErrParams)
			c, err := NewClient(tt.cfg)
			checkConfigErr(t, err, tt.wantErr, ErrParams)
			if err == nil && c.rand == nil {
				t.Fatal("NewClient left Rand nil, want crypto/rand")
			}
		})
	}
}

func TestServerConfigValidate(t *testing.T) {
	bad := okParams
	bad.Bits = 33
	tests := []struct {
		name    string
		cfg     ServerConfig
		wantErr string // "" means valid
	}{
		{"minimal", ServerConfig{Params: okParams}, ""},
		{"workers", ServerConfig{Params: okParams, Workers: 4}, ""},
		{"negative workers", ServerConfig{Params: okParams, Workers: -1}, "ServerConfig.Workers = -1"},
		{"bad params", ServerConfig{Params: bad}, "ServerConfig.Params.Bits = 33"},
		{"no params", ServerConfig{}, "ServerConfig.Params.Clients = 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkConfigErr(t, tt.cfg.Validate(), tt.wantErr, ErrParams)
			s, err := NewServer(tt.cfg)
			checkConfigErr(t, err, tt.wantErr, ErrParams)
			if err == nil && s.rand == nil {
				t.Fatal("NewServer left Rand nil, want crypto/rand")
			}
		})
	}
}

func TestSetupConfigValidate(t *testing.T) {
	ok := func(f func(*SetupConfig)) SetupConfig {
		c := SetupConfig{Names: []string{"job", "eu"}, Round: 1, Members: []string{"a", "b", "c"},
			Degree: 2, Threshold: 1, MinSurvivors: 2, Bits: 32, Dim: 3, Clip: 2, Range: 1, Scale: 1 << 16}
		if f != nil {
			f(&c)
		}
		return c
	}
	tests := []struct {
		name    string
		cfg     SetupConfig
		wantErr string // "" means valid
		is      error
	}{
		{"plain", ok(nil), "", nil},
		{"with bit", ok(func(c *SetupConfig) { c.Bit = true }), "", nil},
		{"repeats count once", ok(func(c *SetupConfig) {
			c.Members = []string{"a", "b", "a"}
			c.MinSurvivors = 2
			c.Threshold = 1
			c.Degree = 1
		}), "", nil},
		{"one member", ok(func(c *SetupConfig) { c.Members = []string{"a", "a"} }), "SetupConfig.Members: 1 distinct members", ErrParams},
		{"no members", ok(func(c *SetupConfig) { c.Members = nil }), "SetupConfig.Members: 0 distinct", ErrParams},
		{"zero dim", ok(func(c *SetupConfig) { c.Dim = 0 }), "SetupConfig.Dim = 0", ErrParams},
		{"dim with bit beyond max", ok(func(c *SetupConfig) { c.Dim, c.Bit = MaxDim, true }), "SetupConfig.Dim = 268435456, want 1..268435455", ErrParams},
		{"zero clip", ok(func(c *SetupConfig) { c.Clip = 0 }), "SetupConfig.Clip = 0", ErrParams},
		{"infinite clip", ok(func(c *SetupConfig) { c.Clip = math.Inf(1) }), "SetupConfig.Clip = +Inf", ErrParams},
		{"NaN range", ok(func(c *SetupConfig) { c.Range = math.NaN() }), "SetupConfig.Range = NaN", ErrParams},
		{"negative scale", ok(func(c *SetupConfig) { c.Scale = -1 }), "SetupConfig.Scale = -1", ErrParams},
		{"one bit", ok(func(c *SetupConfig) { c.Bits = 1 }), "SetupConfig.Bits = 1", ErrParams},
		{"33 bits", ok(func(c *SetupConfig) { c.Bits = 33 }), "SetupConfig.Bits = 33", ErrParams},
		{"odd degree", ok(func(c *SetupConfig) { c.Members = []string{"a", "b", "c", "d", "e"}; c.Degree = 3 }), "SetupConfig.Degree = 3 is odd", ErrParams},
		{"threshold above degree", ok(func(c *SetupConfig) { c.Threshold = 3 }), "SetupConfig.Threshold = 3", ErrParams},
		{"too many survivors", ok(func(c *SetupConfig) { c.MinSurvivors = 4 }), "SetupConfig.MinSurvivors = 4", ErrParams},
		{"ring too small", ok(func(c *SetupConfig) { c.Bits, c.Scale = 8, 100 }), "(SetupConfig.Bits = 8, Range = 1, Scale = 100)", ErrHeadroom},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkConfigErr(t, tt.cfg.Validate(), tt.wantErr, tt.is)
			_, err := NewSetup(tt.cfg)
			checkConfigErr(t, err, tt.wantErr, tt.is)
		})
	}
}
