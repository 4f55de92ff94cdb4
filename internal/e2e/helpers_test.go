package e2e

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/strata-fl/strata/finetune"
	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/mesh"
	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/standalone"
)

var mnist = sync.OnceValues(func() (*finetune.MNIST, error) { return finetune.LoadMNIST("") })

// startMesh starts a one-process mesh for a test: MNIST loaded once per
// test binary, a temp data dir unless cfg names one, a context bounded to
// three minutes. The caller closes the mesh (some tests reopen its dir).
func startMesh(t *testing.T, cfg standalone.Config) (*standalone.Mesh, context.Context) {
	t.Helper()
	mn, err := mnist()
	if err != nil {
		t.Fatal(err)
	}
	cfg.MNIST = mn
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	m, err := standalone.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m, ctx
}

// runMesh runs a job on a mesh of its own to its end and returns the mesh
// (closed when the test ends) and its ledger.
func runMesh(t *testing.T, cfg standalone.Config) (*standalone.Mesh, *ledger.Ledger) {
	t.Helper()
	m, ctx := startMesh(t, cfg)
	t.Cleanup(func() { m.Close() })
	if err := m.Run(ctx); err != nil {
		t.Fatal(err)
	}
	l, err := m.Ledger()
	if err != nil {
		t.Fatal(err)
	}
	return m, l
}

// startSecureServer starts a NATS server as `strata nats --secrets` does
// and returns it with an operator dialer.
func startSecureServer(t *testing.T, store, secrets, job string) (*server.Server, mesh.Dialer) {
	t.Helper()
	cfg, op, err := mesh.Secured(mesh.ServerConfig{StoreDir: store}, secrets, job)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := mesh.StartServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	op.URL = srv.ClientURL()
	return srv, op
}

// onFirstInvite calls f once, with the invitation and the client it
// invites, for the first client of region invited to the given round: an
// operator's spy learns a sampled client from the subject of its
// invitation (invitations name no one else).
func onFirstInvite(t *testing.T, spy *nats.Conn, job, region string, round uint64, f func(open wire.RoundOpen, client string)) {
	t.Helper()
	subj, err := mesh.InviteWildcard(job, region)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	if _, err := spy.Subscribe(subj, func(msg *nats.Msg) {
		var open wire.RoundOpen
		if wire.Decode(msg.Data, wire.TypeRoundOpen, &open) != nil || open.Round != round {
			return
		}
		client := msg.Subject[strings.LastIndexByte(msg.Subject, '.')+1:]
		once.Do(func() { f(open, client) })
	}); err != nil {
		t.Fatal(err)
	}
}
