// Package rolestest is the one whole-mesh harness of the tests and the
// bench's test helpers: meshes built by package roles, as `strata up` and
// the role commands build them, in temp dirs bound to the test.
package rolestest

import (
	"context"
	"testing"
	"time"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/roles"
)

// Timeout bounds every mesh a test starts.
const Timeout = 3 * time.Minute

// Start starts a one-process mesh for a test: a temp data dir unless cfg
// names one, a context bounded by Timeout. The mesh is closed when the test
// ends (a test that reopens its dir closes it first; Close is idempotent).
func Start(t testing.TB, cfg roles.UpConfig) (*roles.Up, context.Context) {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	t.Cleanup(cancel)
	m, err := roles.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, ctx
}

// Run runs a job on a mesh of its own to its end and returns the mesh and
// its ledger.
func Run(t testing.TB, cfg roles.UpConfig) (*roles.Up, *ledger.Ledger) {
	t.Helper()
	m, ctx := Start(t, cfg)
	if err := m.Run(ctx); err != nil {
		t.Fatal(err)
	}
	l, err := m.Ledger()
	if err != nil {
		t.Fatal(err)
	}
	return m, l
}

// RunServer starts an open NATS server with JetStream on a free loopback
// port for a test, shut down when it ends.
func RunServer(t testing.TB) *roles.NATS {
	t.Helper()
	n, err := roles.StartNATS(roles.NATSConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	return n
}

// Serving is the mesh's serving model, or the test fails.
func Serving(t testing.TB, m *roles.Up) []float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	theta, err := m.Serving(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return theta
}
