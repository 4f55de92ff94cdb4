package e2e

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/mesh"
	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/roles"
	"github.com/strata-fl/strata/roles/rolestest"
	"github.com/strata-fl/strata/task"
	"github.com/strata-fl/strata/task/builtin"
	"github.com/strata-fl/strata/task/mnist"
	"github.com/strata-fl/strata/topology"
)

// startMesh starts a one-process mesh for a test (rolestest.Start).
func startMesh(t *testing.T, cfg roles.UpConfig) (*roles.Up, context.Context) {
	t.Helper()
	return rolestest.Start(t, cfg)
}

// runMesh runs a job on a mesh of its own to its end and returns the mesh
// and its ledger.
func runMesh(t *testing.T, cfg roles.UpConfig) (*roles.Up, *ledger.Ledger) {
	t.Helper()
	return rolestest.Run(t, cfg)
}

// mnistOf is the mesh's MNIST task, for what only it has.
func mnistOf(t testing.TB, m *roles.Up) *mnist.Task {
	t.Helper()
	mt, ok := m.Task.(*mnist.Task)
	if !ok {
		t.Fatalf("the mesh trains %s, not mnist", m.Task.Name())
	}
	return mt
}

// trainerOf is the MNIST clients' trainer (personal heads, data export).
func trainerOf(t testing.TB, m *roles.Up) *mnist.ClientTrainer {
	t.Helper()
	ct, err := mnistOf(t, m).ClientTrainer()
	if err != nil {
		t.Fatal(err)
	}
	return ct
}

// serving is the mesh's serving model.
func serving(t testing.TB, m *roles.Up) []float64 {
	t.Helper()
	return rolestest.Serving(t, m)
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

// mustDim is the length of θ of the topology's task.
func mustDim(t testing.TB, top *topology.Topology) int {
	t.Helper()
	d, err := builtin.Dim(top)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// setTask sets one of the topology's task settings.
func setTask(top *topology.Topology, key string, v any) {
	if top.Task.Options == nil {
		top.Task.Options = map[string]any{}
	}
	top.Task.Options[key] = v
}

// gateRound holds every client's training of one round until release is
// closed, so that a test can look at a running job whose ledger stands
// still, or have its hostile messages reach a region while the round is
// surely open (the clients' own updates follow them).
type gateRound struct {
	task.Trainer
	round   uint64
	release chan struct{}
}

func (g gateRound) Train(ctx context.Context, client string, round uint64, theta, delta []float64) (int, error) {
	if round == g.round {
		select {
		case <-g.release:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	return g.Trainer.Train(ctx, client, round, theta, delta)
}
