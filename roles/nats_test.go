package roles

import (
	"errors"
	"strings"
	"testing"
)

func TestNATSConfigValidateLeaf(t *testing.T) {
	tests := []struct {
		name    string
		cfg     NATSConfig
		wantErr string // "" means valid
	}{
		{"hub", NATSConfig{StoreDir: "d", LeafListen: "0.0.0.0:7422"}, ""},
		{"open site leaf, no store", NATSConfig{LeafOf: "nats-leaf://hub:7422"}, ""},
		{"secured site leaf", NATSConfig{LeafOf: "nats-leaf://hub:7422", Secrets: "s", Job: "j", LeafRegion: "eu"}, ""},
		{"secured site leaf without its region", NATSConfig{LeafOf: "nats-leaf://hub:7422", Secrets: "s", Job: "j"}, "NATSConfig.LeafRegion"},
		{"leaf and hub at once", NATSConfig{StoreDir: "d", LeafOf: "nats-leaf://hub:7422", LeafListen: "0.0.0.0:7422"}, "NATSConfig.LeafOf and LeafListen"},
		{"no store and no hub", NATSConfig{}, "NATSConfig.StoreDir"},
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
		})
	}
}
