package e2e

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"path/filepath"
	"testing"
	"time"

	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/mesh"
	"github.com/strata-fl/strata/mesh/wire"
	"github.com/strata-fl/strata/privacy"
)

// TestBigModelThroughObjectStoreSmallSnapshot moves a 50M-parameter model
// through the JetStream object store (verified by hash on the way out) and
// checks that the raft snapshot of a ledger that commits it — with 5000
// enrolled clients and 40 rounds of 250 sampled clients, the default job's
// shape — stays under 1 MiB: the log and snapshots hold metadata only.
func TestBigModelThroughObjectStoreSmallSnapshot(t *testing.T) {
	const params = 50_000_000
	dir := t.TempDir()
	srv, err := mesh.StartServer(mesh.ServerConfig{StoreDir: filepath.Join(dir, "nats")})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	nc, err := mesh.Dialer{Server: srv}.Connect("big")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	store, err := mesh.OpenModelStore(ctx, nc, "big", 1)
	if err != nil {
		t.Fatal(err)
	}
	vec := make([]float32, params)
	for i := range vec {
		vec[i] = float32(math.Sin(float64(i)))
	}
	blob := wire.AppendFloat32s(make([]byte, 0, 4*params), vec)
	start := time.Now()
	hash, err := store.Put(ctx, "model", 1, blob)
	if err != nil {
		t.Fatal(err)
	}
	got, err := store.Get(ctx, "model", 1, hash)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, blob) {
		t.Fatal("the model came back different")
	}
	t.Logf("%d MB model put and fetched with hash check in %v", len(blob)>>20, time.Since(start).Round(time.Millisecond))
	if _, err := store.Get(ctx, "model", 1, "00"+hash[2:]); err == nil {
		t.Fatal("a wrong hash was not detected")
	}

	node, err := global.OpenNode(global.NodeConfig{DataDir: filepath.Join(dir, "global")})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	if _, err := node.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	apply := func(c ledger.Command) {
		t.Helper()
		res, err := node.Apply(ctx, c)
		if err != nil || res.Err != nil {
			t.Fatalf("%T: %v %v", c, err, res.Err)
		}
	}
	orders := privacy.Orders()
	apply(&ledger.StartJob{Job: ledger.Job{Name: "big", Delta: 1e-5, Budget: 1e9, Population: 5000, PlannedRounds: 40, Accountant: "rdp", Orders: orders}})
	var es []ledger.Enrollment
	for i := range 5000 {
		es = append(es, ledger.Enrollment{ID: fmt.Sprintf("r%d-c%05d", i%3, i), Region: fmt.Sprintf("r%d", i%3), Budget: 8})
	}
	apply(&ledger.EnrollClients{Clients: es})
	step := privacy.RDPStep(0.05, 1)
	for r := uint64(1); r <= 40; r++ {
		var sampled []string
		for i := int(r); i < 5000; i += 20 {
			sampled = append(sampled, es[i].ID)
		}
		sortStrings(sampled)
		apply(&ledger.OpenRound{Round: r, ModelVersion: r - 1, Sampled: len(sampled), Q: 0.05, ClipNorm: 1, Eligible: 5000, SampledClients: sampled,
			RDP: ledger.PerObserver[[]float64]{Public: step, GlobalOperator: step, RegionalOperator: step}, EpsilonAfter: ledger.PerObserver[float64]{Public: 1}})
		apply(&ledger.CommitModel{Round: r, Version: r, Hash: hash, Promoted: true})
	}
	size, err := node.TakeSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("raft snapshot: %d bytes (5000 clients, 40 rounds, %d RDP orders)", size, len(orders))
	if size >= 1<<20 {
		t.Fatalf("raft snapshot is %d bytes, want under 1 MiB", size)
	}
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}
