package global

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	bolt "go.etcd.io/bbolt"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/internal/seal"
)

// ErrNoLedger reports a data dir without a global node's state.
var ErrNoLedger = errors.New("global: no ledger in this data dir")

// ReadLedger rebuilds the ledger of a stopped node from its data dir by
// restoring the latest snapshot and replaying the log after it, without
// starting raft (so nothing on disk changes).
func ReadLedger(dataDir string) (*ledger.Ledger, error) { return ReadLedgerKey(dataDir, nil) }

// ReadLedgerKey is ReadLedger for a node whose snapshots and log entries
// are encrypted.
func ReadLedgerKey(dataDir string, key *seal.Key) (*ledger.Ledger, error) {
	dir := filepath.Join(dataDir, "raft")
	path := filepath.Join(dir, "raft.bolt")
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("%w: %s (run `strata up --data %s` first)", ErrNoLedger, dataDir, dataDir)
	}
	store, err := raftboltdb.New(raftboltdb.Options{Path: path, BoltOptions: &bolt.Options{Timeout: time.Second, ReadOnly: true}})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("global: %s is in use by a running node; stop it or query the node instead", path)
		}
		return nil, fmt.Errorf("global: open %s: %w", path, err)
	}
	defer store.Close()
	l := ledger.New()
	var from uint64 = 1
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 3, hclog.NewNullLogger())
	if err != nil {
		return nil, fmt.Errorf("global: snapshots: %w", err)
	}
	metas, err := snaps.List()
	if err != nil {
		return nil, fmt.Errorf("global: list snapshots: %w", err)
	}
	if len(metas) > 0 {
		_, rc, err := snaps.Open(metas[0].ID)
		if err != nil {
			return nil, fmt.Errorf("global: open snapshot %s: %w", metas[0].ID, err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("global: read snapshot: %w", err)
		}
		if b, err = key.Open(b); err != nil {
			return nil, fmt.Errorf("global: ledger snapshot %s: %w", metas[0].ID, err)
		}
		if l, err = ledger.Restore(b); err != nil {
			return nil, err
		}
		from = metas[0].Index + 1
	}
	first, err := store.FirstIndex()
	if err != nil {
		return nil, err
	}
	last, err := store.LastIndex()
	if err != nil {
		return nil, err
	}
	if first > from && last >= first {
		return nil, fmt.Errorf("global: log starts at %d but the snapshot ends at %d: entries are missing", first, from-1)
	}
	for i := max(from, first); i <= last && i > 0; i++ {
		var entry raft.Log
		if err := store.GetLog(i, &entry); err != nil {
			return nil, fmt.Errorf("global: log entry %d: %w", i, err)
		}
		if entry.Type != raft.LogCommand {
			continue
		}
		b, err := openEntry(key, entry.Data)
		if err != nil {
			return nil, fmt.Errorf("global: log entry %d: %w", i, err)
		}
		l.ApplyEntry(i, b)
	}
	return l, nil
}

// AuditReport is the outcome of verifying a data dir's audit trail.
type AuditReport struct {
	Records  int
	Head     string
	Checked  int // records whose log entry was still on disk and matched
	Snapshot uint64
}

// VerifyAuditDir recomputes the audit chain of a stopped node's data dir:
// the chain stored in the latest snapshot and the one replayed after it must
// link up, every record's hash must hold, and every record whose log entry
// is still on disk must carry that entry's digest. It names the first bad
// record.
func VerifyAuditDir(dataDir string, key *seal.Key) (AuditReport, error) {
	var rep AuditReport
	l, err := ReadLedgerKey(dataDir, key)
	if err != nil {
		return rep, err
	}
	if err := ledger.VerifyAudit(l.Audit); err != nil {
		return rep, err
	}
	rep.Records, rep.Head = len(l.Audit), l.AuditHead()
	dir := filepath.Join(dataDir, "raft")
	store, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.bolt"), BoltOptions: &bolt.Options{Timeout: time.Second, ReadOnly: true}})
	if err != nil {
		return rep, fmt.Errorf("global: open log: %w", err)
	}
	defer store.Close()
	for i, r := range l.Audit {
		var entry raft.Log
		if err := store.GetLog(r.Index, &entry); err != nil {
			continue // compacted into the snapshot
		}
		// The chain digests an entry's plaintext, so it reads the same
		// whether the log is sealed or not.
		b, err := openEntry(key, entry.Data)
		if err != nil {
			return rep, &ledger.AuditError{Position: i, Index: r.Index, Reason: fmt.Sprintf("the log entry on disk cannot be opened (edited, or another key): %v", err)}
		}
		d := sha256.Sum256(b)
		if hex.EncodeToString(d[:]) != r.Digest {
			return rep, &ledger.AuditError{Position: i, Index: r.Index, Reason: "the log entry on disk does not match the digest the chain recorded (the log was edited)"}
		}
		rep.Checked++
	}
	if snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 3, hclog.NewNullLogger()); err == nil {
		if metas, err := snaps.List(); err == nil && len(metas) > 0 {
			rep.Snapshot = metas[0].Index
		}
	}
	return rep, nil
}
