package e2e

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/strata-fl/strata/global"
	"github.com/strata-fl/strata/internal/seal"
	"github.com/strata-fl/strata/mesh"
	"github.com/strata-fl/strata/roles"
)

// TestEncryptionAtRest runs a short job with a key: ledger snapshots and
// model blobs are stored encrypted, the right key reads them, and a wrong
// or missing key fails with a clear error instead of garbage.
func TestEncryptionAtRest(t *testing.T) {
	key, _ := seal.NewKey(bytes.Repeat([]byte{3}, 32))
	wrong, _ := seal.NewKey(bytes.Repeat([]byte{4}, 32))
	top := smallTopology(t)
	top.Train.Rounds = 2
	dir := t.TempDir()
	m, ctx := startMesh(t, roles.UpConfig{Topology: top, DataDir: dir, Key: key})
	if err := m.Run(ctx); err != nil {
		t.Fatal(err)
	}
	l, _ := m.Ledger()
	hash := l.Models[0].Hash
	nc, err := m.Dialer().Connect("reader")
	if err != nil {
		t.Fatal(err)
	}
	store, err := mesh.OpenModelStore(ctx, nc, top.Job, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Get(ctx, "model", 1, hash); !errors.Is(err, seal.ErrNeedKey) {
		t.Fatalf("model blob read without the key: got %v, want ErrNeedKey", err)
	}
	store.SetKey(wrong)
	if _, err := store.Get(ctx, "model", 1, hash); !errors.Is(err, seal.ErrWrongKey) {
		t.Fatalf("model blob read with a wrong key: got %v, want ErrWrongKey", err)
	}
	store.SetKey(key)
	if _, err := store.Get(ctx, "model", 1, hash); err != nil {
		t.Fatalf("model blob read with the key: %v", err)
	}
	nc.Close()
	m.Close()

	gdir := filepath.Join(dir, "global")
	snaps, _ := filepath.Glob(filepath.Join(gdir, "raft", "snapshots", "*", "state.bin"))
	if len(snaps) == 0 {
		t.Fatal("no snapshot on disk")
	}
	b, _ := os.ReadFile(snaps[len(snaps)-1])
	if !seal.IsSealed(b) || bytes.Contains(b, []byte("a-c00003")) {
		t.Fatal("the ledger snapshot is stored in clear")
	}
	// The raft log is sealed as well: the bolt file shows none of the field
	// names every OpenRound entry carries (they are there without a key).
	log, err := os.ReadFile(filepath.Join(gdir, "raft", "raft.bolt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, clear := range []string{"epsilon_after", "sampled_clients", "model_version"} {
		if bytes.Contains(log, []byte(clear)) {
			t.Errorf("the raft log holds %q in clear", clear)
		}
	}
	if _, err := global.ReadLedgerKey(gdir, wrong); !errors.Is(err, seal.ErrWrongKey) {
		t.Fatalf("ledger with a wrong key: got %v, want ErrWrongKey", err)
	}
	if _, err := global.ReadLedger(gdir); !errors.Is(err, seal.ErrNeedKey) {
		t.Fatalf("ledger without the key: got %v, want ErrNeedKey", err)
	}
	got, err := global.ReadLedgerKey(gdir, key)
	if err != nil || got.CommittedRounds() != 2 {
		t.Fatalf("ledger with the key: %v, %d rounds", err, got.CommittedRounds())
	}
	// A node restarted with the wrong key refuses to start rather than
	// serve a garbage ledger.
	if _, err := roles.Start(ctx, roles.UpConfig{Topology: top, DataDir: dir, Key: wrong}); err == nil {
		t.Fatal("mesh started with the wrong key")
	} else {
		t.Logf("restart with the wrong key: %v", err)
	}
}
