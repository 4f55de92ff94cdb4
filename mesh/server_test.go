package mesh

import (
	"crypto/tls"
	"errors"
	"strings"
	"testing"
)

func TestServerConfigValidate(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		cfg     ServerConfig
		wantErr string // "" means valid
	}{
		{"defaults", ServerConfig{StoreDir: dir}, ""},
		{"in-process only", ServerConfig{StoreDir: dir, Port: -1}, ""},
		{"fixed port", ServerConfig{StoreDir: dir, Port: 4222, Host: "0.0.0.0"}, ""},
		{"largest payload", ServerConfig{StoreDir: dir, MaxPayload: maxPending}, ""},
		{"no store", ServerConfig{}, "ServerConfig.StoreDir"},
		{"port below -1", ServerConfig{StoreDir: dir, Port: -2}, "ServerConfig.Port -2"},
		{"port above 65535", ServerConfig{StoreDir: dir, Port: 65536}, "ServerConfig.Port 65536"},
		{"negative payload", ServerConfig{StoreDir: dir, MaxPayload: -1}, "ServerConfig.MaxPayload -1"},
		{"payload above max pending", ServerConfig{StoreDir: dir, MaxPayload: maxPending + 1}, "ServerConfig.MaxPayload"},
		{"cluster", ServerConfig{StoreDir: dir, Cluster: &ClusterConfig{ServerName: "n1", Listen: "127.0.0.1:6222", Routes: []string{"nats-route://127.0.0.1:6223"}}}, ""},
		{"cluster without a server name", ServerConfig{StoreDir: dir, Cluster: &ClusterConfig{Listen: "127.0.0.1:6222", Routes: []string{"nats-route://127.0.0.1:6223"}}}, "ClusterConfig.ServerName"},
		{"cluster without routes", ServerConfig{StoreDir: dir, Cluster: &ClusterConfig{ServerName: "n1", Listen: "127.0.0.1:6222"}}, "ClusterConfig.Routes is empty"},
		{"cluster route not a route URL", ServerConfig{StoreDir: dir, Cluster: &ClusterConfig{ServerName: "n1", Listen: "127.0.0.1:6222", Routes: []string{"nats://127.0.0.1:4222"}}}, "ClusterConfig.Routes"},
		{"cluster listen without a port", ServerConfig{StoreDir: dir, Cluster: &ClusterConfig{ServerName: "n1", Listen: "127.0.0.1", Routes: []string{"nats-route://127.0.0.1:6223"}}}, "ClusterConfig.Listen"},
		{"cluster in-process only", ServerConfig{StoreDir: dir, Port: -1, Cluster: &ClusterConfig{ServerName: "n1", Listen: "127.0.0.1:6222", Routes: []string{"nats-route://127.0.0.1:6223"}}}, "ServerConfig.Port -1"},
		{"cluster with TLS", ServerConfig{StoreDir: dir, TLS: &tls.Config{}, Cluster: &ClusterConfig{ServerName: "n1", Listen: "127.0.0.1:6222", Routes: []string{"nats-route://127.0.0.1:6223"}}}, "ServerConfig.TLS"},
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
			// StartServer refuses it with the same error.
			if _, serr := StartServer(tt.cfg); !errors.Is(serr, ErrConfig) || !strings.Contains(serr.Error(), tt.wantErr) {
				t.Fatalf("StartServer: got %v, want an ErrConfig naming %q", serr, tt.wantErr)
			}
		})
	}
}

func TestServerConfigDefaultsOnACopy(t *testing.T) {
	cfg := ServerConfig{StoreDir: "x"}
	d := cfg.withDefaults()
	if d.Host != "127.0.0.1" || d.MaxPayload != DefaultMaxPayload {
		t.Errorf("defaults: got host %q, max payload %d; want 127.0.0.1, %d", d.Host, d.MaxPayload, DefaultMaxPayload)
	}
	if cfg.Host != "" || cfg.MaxPayload != 0 {
		t.Errorf("withDefaults changed its receiver: %+v", cfg)
	}
}
