package ledger

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
)

// AuditRecord is one link of the tamper-evident audit trail: every log
// entry the ledger applies — accepted, duplicate or rejected — appends one,
// chained by hash, so that editing any record (or dropping or reordering
// one) breaks every hash after it. The chain is part of the replicated state,
// so every replica holds the same one.
type AuditRecord struct {
	_msgpack struct{} `msgpack:",as_array" json:"-"`

	Index   uint64 `msgpack:"index" json:"index"`     // raft log index
	Kind    string `msgpack:"kind" json:"kind"`       // what: the command's kind
	At      int64  `msgpack:"at" json:"at_ms"`        // when: the time the command carries (0 if none)
	Digest  string `msgpack:"digest" json:"digest"`   // SHA-256 of the log entry's bytes
	Outcome string `msgpack:"outcome" json:"outcome"` // applied, duplicate, or the rejection
	Prev    string `msgpack:"prev" json:"prev"`       // hash of the previous record
	Hash    string `msgpack:"hash" json:"hash"`
}

// ErrAudit reports a broken audit chain.
var ErrAudit = errors.New("ledger: audit trail broken")

// AuditError names the first bad record.
type AuditError struct {
	Position int    // 0-based position in the chain
	Index    uint64 // raft index the record claims
	Reason   string
}

func (e *AuditError) Error() string {
	return fmt.Sprintf("ledger: audit record %d (raft index %d): %s", e.Position, e.Index, e.Reason)
}

// Unwrap makes errors.Is(err, ErrAudit) true.
func (e *AuditError) Unwrap() error { return ErrAudit }

// recordHash is SHA-256 over the previous hash and the record's fields.
func recordHash(r *AuditRecord) string {
	h := sha256.New()
	h.Write([]byte(r.Prev))
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], r.Index)
	binary.BigEndian.PutUint64(b[8:], uint64(r.At))
	h.Write(b[:])
	for _, s := range []string{r.Kind, r.Digest, r.Outcome} {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// AuditHead returns the hash of the last record ("" for an empty trail).
func (l *Ledger) AuditHead() string {
	if n := len(l.Audit); n > 0 {
		return l.Audit[n-1].Hash
	}
	return ""
}

func (l *Ledger) appendAudit(index uint64, kind string, at int64, entry []byte, res Result) {
	d := sha256.Sum256(entry)
	outcome := "applied"
	switch {
	case res.Err != nil:
		outcome = "rejected: " + res.Err.Error()
	case res.Duplicate:
		outcome = "duplicate"
	}
	r := AuditRecord{Index: index, Kind: kind, At: at, Digest: hex.EncodeToString(d[:]), Outcome: outcome, Prev: l.AuditHead()}
	r.Hash = recordHash(&r)
	l.Audit = append(l.Audit, r)
}

// ApplyEntry decodes a raw log entry, applies it and appends its audit
// record. It is what a replica runs for every committed entry.
func (l *Ledger) ApplyEntry(index uint64, entry []byte) Result {
	if index <= l.Applied && index != 0 {
		return Result{Duplicate: true}
	}
	cmd, err := Decode(entry)
	if err != nil {
		l.Applied = index
		res := Result{Err: err}
		l.appendAudit(index, "undecodable", 0, entry, res)
		return res
	}
	res := l.Apply(index, cmd)
	l.appendAudit(index, kindName(cmd.Kind()), commandTime(cmd), entry, res)
	return res
}

func kindName(k Kind) string {
	switch k {
	case KindStartJob:
		return "start_job"
	case KindOpenRound:
		return "open_round"
	case KindCommitModel:
		return "commit_model"
	case KindAbortRound:
		return "abort_round"
	case KindFinishJob:
		return "finish_job"
	case KindEnrollClients:
		return "enroll_clients"
	case KindWithdraw:
		return "withdraw"
	case KindRollback:
		return "rollback"
	case KindEnrollNodes:
		return "enroll_nodes"
	}
	return fmt.Sprintf("kind_%d", k)
}

func commandTime(cmd Command) int64 {
	switch c := cmd.(type) {
	case *StartJob:
		return c.Job.StartedUnixMs
	case *OpenRound:
		return c.OpenedUnixMs
	case *EnrollClients:
		return c.UnixMs
	case *Withdraw:
		return c.UnixMs
	case *Rollback:
		return c.UnixMs
	case *EnrollNodes:
		return c.UnixMs
	}
	return 0
}

// VerifyAudit recomputes the chain and names the first record whose hash
// or link does not hold.
func VerifyAudit(records []AuditRecord) error {
	prev := ""
	var lastIndex uint64
	for i := range records {
		r := &records[i]
		switch {
		case r.Prev != prev:
			return &AuditError{i, r.Index, "its link to the previous record does not match (a record was edited, dropped or reordered before it)"}
		case recordHash(r) != r.Hash:
			return &AuditError{i, r.Index, "its content does not match its hash (the record was edited)"}
		case i > 0 && r.Index <= lastIndex:
			return &AuditError{i, r.Index, fmt.Sprintf("raft index %d does not follow %d", r.Index, lastIndex)}
		}
		prev, lastIndex = r.Hash, r.Index
	}
	return nil
}
