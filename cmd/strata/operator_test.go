package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/roles"
	"github.com/strata-fl/strata/roles/rolestest"
	"github.com/strata-fl/strata/topology"
)

// The operator's commands reach a running mesh's leader over its secured
// NATS and get its coded replies: members lists the voters, a rollback to
// a version that does not exist is refused with the ledger's reason, one
// to the checkpoint is recorded.
func TestOperatorCommandsOverNATS(t *testing.T) {
	top, err := topology.Parse([]byte(`
job: ops
regions:
  - {id: a, clients: 4}
privacy: {sampling_rate: 0.5, budget: 1000, min_regions: 1, noise: {regional: 0.7, global: 0.7}}
training: {rounds: 1000}
task: {name: mnist, pretrain_epochs: 1, hidden: 8, public_examples: 500, eval_examples: 200}
round: {timeout: 20s}
`))
	if err != nil {
		t.Fatal(err)
	}
	m, ctx := rolestest.Start(t, roles.UpConfig{Topology: top})
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- m.Run(runCtx) }()
	defer func() { stop(); <-done }()
	committed := func() (n int) {
		m.Node().Read(func(l *ledger.Ledger) { n = l.CommittedRounds() })
		return n
	}
	for committed() == 0 {
		select {
		case err := <-done:
			t.Fatalf("the job ended before a round committed: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	nats := []string{"--nats", m.URL(), "--secrets", m.Secrets}

	var out bytes.Buffer
	if err := runMembers(ctx, append([]string{"list"}, nats...), &out, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "g1\t") {
		t.Errorf("members list printed %q, want the one voter g1", out.String())
	}

	err = runModel(ctx, append([]string{"rollback", "--to", "999"}, nats...), &out, &out)
	var ce *global.ControlError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "999") {
		t.Errorf("rollback to v999: got %v, want the leader's coded refusal naming the version", err)
	}

	if err := runModel(ctx, append([]string{"rollback", "--to", "0", "--reason", "operator test"}, nats...), &out, &out); err != nil {
		t.Fatal(err)
	}
	l, err := m.Ledger()
	if err != nil {
		t.Fatal(err)
	}
	if n := len(l.Rollbacks); n != 1 || l.Rollbacks[0].To != 0 || l.Rollbacks[0].Reason != "operator test" {
		t.Errorf("ledger rollbacks %+v, want one to v0 for the operator's reason", l.Rollbacks)
	}
}
