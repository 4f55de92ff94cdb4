package global

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/internal/seal"
)

// Plaintext markers: ledger fields a sealed log must not show on disk.
const (
	markerJob    = "job-name-in-clear"
	markerClient = "client-id-in-clear-7"
)

var markers = []string{markerJob, markerClient, "epsilon_after", "sampled_clients"}

func writeKey(t testing.TB, dir, name string) (*seal.Key, string) {
	t.Helper()
	hexKey, err := seal.Generate()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(hexKey), 0o600); err != nil {
		t.Fatal(err)
	}
	k, err := seal.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return k, path
}

func openTestNode(t testing.TB, dir string, key *seal.Key) *Node {
	t.Helper()
	n, err := OpenNode(NodeConfig{DataDir: dir, Key: key, SnapshotThreshold: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := n.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n.Barrier(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	return n
}

// crash stops n as a SIGKILL would leave it: no snapshot at close, so a
// restart must replay the log.
func crash(t testing.TB, n *Node) {
	t.Helper()
	if err := n.raft.Shutdown().Error(); err != nil {
		t.Fatal(err)
	}
	if c, ok := n.trans.(io.Closer); ok {
		c.Close()
	}
	if err := n.store.Close(); err != nil {
		t.Fatal(err)
	}
}

var testOrders = []float64{2, 4, 8}

func openCmd(round uint64) *ledger.OpenRound {
	curve := []float64{0.01, 0.02, 0.03}
	eps := 0.01 * float64(round)
	return &ledger.OpenRound{
		Round: round, ModelVersion: round - 1, Sampled: 1, Q: 0.5, ClipNorm: 1, Eligible: 1,
		Sigma:          ledger.PerObserver[float64]{Public: 1, GlobalOperator: 1},
		RDP:            ledger.PerObserver[[]float64]{Public: curve, GlobalOperator: curve, RegionalOperator: []float64{math.Inf(1), math.Inf(1), math.Inf(1)}},
		EpsilonAfter:   ledger.PerObserver[float64]{Public: eps, GlobalOperator: eps, RegionalOperator: math.Inf(1)},
		OpenedUnixMs:   int64(round),
		SampledClients: []string{markerClient},
	}
}

// runRounds commits rounds from..to (starting the job first if from is 1)
// through raft, as the coordinator does: open (the charge), then commit.
func runRounds(t testing.TB, n *Node, from, to uint64) {
	t.Helper()
	ctx := context.Background()
	apply := func(cmd ledger.Command) {
		t.Helper()
		res, err := n.Apply(ctx, cmd)
		if err != nil || res.Err != nil {
			t.Fatalf("%T: %v %v", cmd, err, res.Err)
		}
	}
	if from == 1 {
		apply(&ledger.StartJob{Job: ledger.Job{Name: markerJob, ConfigHash: "h", Delta: 1e-5, Budget: 1e9, Population: 1, PlannedRounds: 1000, Accountant: "rdp", Orders: testOrders}})
		apply(&ledger.EnrollClients{Clients: []ledger.Enrollment{{ID: markerClient, Region: "a", Budget: 1e9}}, Purpose: "test"})
	}
	for r := from; r <= to; r++ {
		apply(openCmd(r))
		apply(&ledger.CommitModel{Round: r, Version: r, Hash: fmt.Sprintf("hash-%d", r), Participants: 1, Regions: []string{"a"}, Promoted: true})
	}
}

func committed(n *Node) (rounds int, job string) {
	n.Read(func(l *ledger.Ledger) {
		rounds = l.CommittedRounds()
		if l.Job != nil {
			job = l.Job.Name
		}
	})
	return rounds, job
}

func boltBytes(t *testing.T, dir string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "raft", "raft.bolt"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRaftLogSealedAtRest runs rounds through a real raft node with its
// bolt store in a temp dir. With a key, no ledger field is in the bolt
// file's bytes, and a restart with the key replays the log (no snapshot
// was taken: the node crashed); without a key the same fields are there
// in clear (the control, which shows the markers would be found).
func TestRaftLogSealedAtRest(t *testing.T) {
	for _, sealed := range []bool{true, false} {
		t.Run(fmt.Sprintf("sealed=%v", sealed), func(t *testing.T) {
			dir := t.TempDir()
			var key *seal.Key
			if sealed {
				key, _ = writeKey(t, t.TempDir(), "key")
			}
			n := openTestNode(t, dir, key)
			runRounds(t, n, 1, 3)
			crash(t, n)
			b := boltBytes(t, dir)
			for _, m := range markers {
				if found := bytes.Contains(b, []byte(m)); found == sealed {
					t.Errorf("%q in the bolt file: %v, want %v", m, found, !sealed)
				}
			}
			n = openTestNode(t, dir, key)
			if r, job := committed(n); r != 3 || job != markerJob {
				t.Fatalf("after a restart: %d rounds of job %q, want 3 of %q", r, job, markerJob)
			}
			runRounds(t, n, 4, 4)
			if err := n.Close(); err != nil {
				t.Fatal(err)
			}
			l, err := ReadLedgerKey(dir, key)
			if err != nil || l.CommittedRounds() != 4 {
				t.Fatalf("ReadLedgerKey: %v, want 4 rounds", err)
			}
			if _, err := VerifyAuditDir(dir, key); err != nil {
				t.Fatalf("audit of the data dir: %v", err)
			}
		})
	}
}

// TestRaftLogWrongKey: a node restarted with another key, or without one,
// refuses to start, naming the log entry and the key, before raft replays
// anything.
func TestRaftLogWrongKey(t *testing.T) {
	keys := t.TempDir()
	key, _ := writeKey(t, keys, "right.key")
	wrong, wrongPath := writeKey(t, keys, "wrong.key")
	dir := t.TempDir()
	n := openTestNode(t, dir, key)
	runRounds(t, n, 1, 2)
	crash(t, n)

	_, err := OpenNode(NodeConfig{DataDir: dir, Key: wrong})
	if !errors.Is(err, seal.ErrWrongKey) || !strings.Contains(err.Error(), wrongPath) || !strings.Contains(err.Error(), "raft log entry") {
		t.Fatalf("restart with a wrong key: got %v, want ErrWrongKey naming the log entry and %s", err, wrongPath)
	}
	t.Logf("wrong key: %v", err)
	if _, err = OpenNode(NodeConfig{DataDir: dir}); !errors.Is(err, seal.ErrNeedKey) {
		t.Fatalf("restart without a key: got %v, want ErrNeedKey", err)
	}
	if _, err := ReadLedgerKey(dir, wrong); !errors.Is(err, seal.ErrWrongKey) {
		t.Fatalf("ReadLedgerKey with a wrong key: got %v, want ErrWrongKey", err)
	}
	// The refused starts changed nothing: the right key still reads it all.
	n = openTestNode(t, dir, key)
	defer n.Close()
	if r, _ := committed(n); r != 2 {
		t.Fatalf("with the right key after refused starts: %d rounds, want 2", r)
	}
}

// TestRaftLogPlaintextDirGainsKey: a data dir written without a key keeps
// working when a key is given later: its plaintext entries still decode
// (the seal header marks the sealed ones) and new entries are sealed.
func TestRaftLogPlaintextDirGainsKey(t *testing.T) {
	dir := t.TempDir()
	n := openTestNode(t, dir, nil)
	runRounds(t, n, 1, 2)
	crash(t, n)
	key, _ := writeKey(t, t.TempDir(), "key")
	n = openTestNode(t, dir, key)
	if r, _ := committed(n); r != 2 {
		t.Fatalf("plaintext log replayed with a key: %d rounds, want 2", r)
	}
	runRounds(t, n, 3, 3)
	crash(t, n)
	n = openTestNode(t, dir, key)
	if r, _ := committed(n); r != 3 {
		t.Fatalf("mixed log replayed: %d rounds, want 3", r)
	}
	crash(t, n)
	if _, err := VerifyAuditDir(dir, key); err != nil {
		t.Fatalf("audit of a mixed log: %v", err)
	}
	if _, err := ReadLedger(dir); !errors.Is(err, seal.ErrNeedKey) {
		t.Fatalf("mixed log read without the key: got %v, want ErrNeedKey", err)
	}
}

// TestFSMStopsAtUnopenableEntry: an entry a replica cannot open stops its
// ledger there — nothing after it is applied, not even plaintext entries —
// so the replica falls behind its peers but never differs from them.
func TestFSMStopsAtUnopenableEntry(t *testing.T) {
	right, _ := seal.NewKey(bytes.Repeat([]byte{1}, 32))
	wrong, _ := seal.NewKey(bytes.Repeat([]byte{2}, 32))
	plain, err := ledger.Encode(&ledger.StartJob{Job: ledger.Job{Name: "j", Orders: testOrders, Budget: 1}})
	if err != nil {
		t.Fatal(err)
	}
	sealed, _ := right.Seal(plain)
	f := &fsm{l: ledger.New(), key: wrong, log: slog.New(slog.DiscardHandler), applied: make(chan struct{})}
	res := f.Apply(&raft.Log{Type: raft.LogCommand, Index: 1, Data: sealed}).(ledger.Result)
	if !errors.Is(res.Err, ErrEntryKey) || !errors.Is(res.Err, seal.ErrWrongKey) {
		t.Fatalf("sealed entry, wrong key: got %v, want ErrEntryKey wrapping ErrWrongKey", res.Err)
	}
	res = f.Apply(&raft.Log{Type: raft.LogCommand, Index: 2, Data: plain}).(ledger.Result)
	if !errors.Is(res.Err, ErrEntryKey) || f.l.Applied != 0 || len(f.l.Audit) != 0 {
		t.Fatalf("after the fault: %v, applied %d, %d audit records; want nothing applied", res.Err, f.l.Applied, len(f.l.Audit))
	}
}

func TestOpenEntry(t *testing.T) {
	k, _ := seal.NewKey(bytes.Repeat([]byte{1}, 32))
	other, _ := seal.NewKey(bytes.Repeat([]byte{2}, 32))
	plain := []byte{byte(ledger.KindFinishJob), 0x80}
	sealed, _ := k.Seal(plain)
	tests := []struct {
		name    string
		key     *seal.Key
		data    []byte
		wantErr error
	}{
		{"plaintext, no key", nil, plain, nil},
		{"plaintext, key (written before the log was sealed)", k, plain, nil},
		{"sealed, its key", k, sealed, nil},
		{"sealed, another key", other, sealed, seal.ErrWrongKey},
		{"sealed, no key", nil, sealed, seal.ErrNeedKey},
		{"sealed, edited", k, append(append([]byte(nil), sealed[:len(sealed)-1]...), sealed[len(sealed)-1]^1), seal.ErrWrongKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := openEntry(tt.key, tt.data)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("got %v, want %v", err, tt.wantErr)
			}
			if err == nil && !bytes.Equal(got, plain) {
				t.Fatalf("got %x, want %x", got, plain)
			}
		})
	}
}

// BenchmarkNodeApply measures one committed ledger command (an OpenRound
// or a CommitModel, alternating) through a real single-node raft with its
// bolt store, sealed and in clear; compare the two ns/op for the overhead
// of sealing. BenchmarkEntrySeal isolates the AES-GCM work.
func BenchmarkNodeApply(b *testing.B) {
	for _, sealed := range []bool{false, true} {
		name := "plain"
		var key *seal.Key
		if sealed {
			name = "sealed"
			key, _ = seal.NewKey(bytes.Repeat([]byte{5}, 32))
		}
		b.Run(name, func(b *testing.B) {
			n := openTestNode(b, b.TempDir(), key)
			defer n.Close()
			runRounds(b, n, 1, 1)
			ctx := context.Background()
			r := uint64(2)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				var cmd ledger.Command = openCmd(r)
				if i%2 == 1 {
					cmd = &ledger.CommitModel{Round: r, Version: r, Hash: "h", Participants: 1, Regions: []string{"a"}, Promoted: true}
					r++
				}
				if res, err := n.Apply(ctx, cmd); err != nil || res.Err != nil {
					b.Fatal(err, res.Err)
				}
			}
		})
	}
}

func BenchmarkEntrySeal(b *testing.B) {
	key, _ := seal.NewKey(bytes.Repeat([]byte{5}, 32))
	plain, err := ledger.Encode(openCmd(7))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(plain)))
	for b.Loop() {
		s, err := key.Seal(plain)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := openEntry(key, s); err != nil {
			b.Fatal(err)
		}
	}
}

// TestNoPipeline: a node on TCP refuses raft's pipelined replication (see
// noPipeline) and still offers what raft looks for on its transport:
// closing, and pre-vote.
func TestNoPipeline(t *testing.T) {
	n, err := OpenNode(NodeConfig{DataDir: t.TempDir(), Bind: "127.0.0.1:0", Bootstrap: true})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if _, err := n.trans.AppendEntriesPipeline("g2", "127.0.0.1:1"); !errors.Is(err, raft.ErrPipelineReplicationNotSupported) {
		t.Fatalf("AppendEntriesPipeline: got %v, want ErrPipelineReplicationNotSupported", err)
	}
	if _, ok := n.trans.(io.Closer); !ok {
		t.Error("the transport cannot be closed")
	}
	if _, ok := n.trans.(raft.WithPreVote); !ok {
		t.Error("the transport lost pre-vote")
	}
}

// BenchmarkClusterApply measures one committed ledger command through a
// 3-node raft cluster over TCP on loopback: the leader's fsync, then a
// follower's append and fsync, one append at a time per follower (see
// noPipeline).
func BenchmarkClusterApply(b *testing.B) {
	var ports []string
	for range 3 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		ports = append(ports, l.Addr().String())
		l.Close()
	}
	var peers []Peer
	for i, p := range ports {
		peers = append(peers, Peer{ID: fmt.Sprintf("g%d", i+1), Addr: p})
	}
	var nodes []*Node
	for i, p := range ports {
		n, err := OpenNode(NodeConfig{ID: peers[i].ID, DataDir: b.TempDir(), Bind: p, Bootstrap: true, Peers: peers, SnapshotThreshold: 1 << 20})
		if err != nil {
			b.Fatal(err)
		}
		defer n.Close()
		nodes = append(nodes, n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var leader *Node
	for leader == nil {
		for _, n := range nodes {
			if ok, err := n.WaitLeader(ctx); err != nil {
				b.Fatal(err)
			} else if ok {
				leader = n
			}
		}
	}
	runRounds(b, leader, 1, 1)
	r := uint64(2)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var cmd ledger.Command = openCmd(r)
		if i%2 == 1 {
			cmd = &ledger.CommitModel{Round: r, Version: r, Hash: "h", Participants: 1, Regions: []string{"a"}, Promoted: true}
			r++
		}
		if res, err := leader.Apply(context.Background(), cmd); err != nil || res.Err != nil {
			b.Fatal(err, res.Err)
		}
	}
}

// TestRaftLogsAndLeadershipReachTheNode: raft's own log lines go to the
// node's logger (they were once discarded whatever logger was given), and
// the node's leadership channel fires when it becomes leader, so nothing
// needs to poll raft's state.
func TestRaftLogsAndLeadershipReachTheNode(t *testing.T) {
	var buf syncBuffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	n, err := OpenNode(NodeConfig{DataDir: t.TempDir(), Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	changed := n.LeadershipChanged()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if !n.waitLeading(ctx) {
		t.Fatal("the single node never led")
	}
	select {
	case <-changed:
	case <-ctx.Done():
		t.Fatal("leadership gained, yet the channel taken before never fired")
	}
	if !strings.Contains(buf.String(), "msg=raft") {
		t.Fatalf("no raft log line reached the node's logger:\n%s", buf.String())
	}
}

// syncBuffer is a bytes.Buffer safe for raft's and the test's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
