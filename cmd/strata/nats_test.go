package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
)

// TestNATSClusterFlagsUsageErrors: `strata nats` names the cluster flag
// that is wrong before it starts anything.
func TestNATSClusterFlagsUsageErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"routes without --cluster", []string{"--routes", "nats-route://127.0.0.1:6223"}, "--routes and --name need --cluster"},
		{"name without --cluster", []string{"--name", "n1"}, "--routes and --name need --cluster"},
		{"cluster without a name", []string{"--cluster", "127.0.0.1:6222", "--routes", "nats-route://127.0.0.1:6223"}, "ClusterConfig.ServerName"},
		{"cluster without routes", []string{"--cluster", "127.0.0.1:6222", "--name", "n1"}, "ClusterConfig.Routes is empty"},
		{"route of another scheme", []string{"--cluster", "127.0.0.1:6222", "--name", "n1", "--routes", "nats://127.0.0.1:4222"}, "want nats-route://HOST:PORT"},
		{"cluster with secrets", []string{"--cluster", "127.0.0.1:6222", "--name", "n1", "--routes", "nats-route://127.0.0.1:6223", "--secrets", dir}, "NATSConfig.Cluster with Secrets"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			args := append([]string{"--data", t.TempDir(), "--port", "0"}, tt.args...)
			err := runNATS(context.Background(), args, &out, &errb)
			if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want a usage error containing %q", err, tt.want)
			}
		})
	}
}
