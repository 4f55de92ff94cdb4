package ledger

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/vmihailenco/msgpack/v5"
)

// AuditRecord is one link of the tamper-evident audit trail: every log
// entry the ledger applies — accepted, duplicate or rejected — appends one,
// chained by hash, so that editing any record (or dropping or reordering
// one) breaks every hash after it. The chain is part of the replicated state,
// so every replica holds the same one.
//
// A record's Version says how its Outcome was written and its hash
// computed. Format 0 (AuditFormatText) wrote a rejection as
// "rejected: " and the error's text, formatted numbers and all, so that
// rewording a message changed the hashes of a chain replayed from the same
// log; format 1 (AuditFormatCode) writes "rejected: " and a stable reason
// code (ReasonCode) and binds the version into the hash. Records of both
// formats verify; new records are always written in the current one.
type AuditRecord struct {
	Index   uint64 `json:"index"`   // raft log index
	Kind    string `json:"kind"`    // what: the command's kind
	At      int64  `json:"at_ms"`   // when: the time the command carries (0 if none)
	Digest  string `json:"digest"`  // SHA-256 of the log entry's bytes
	Outcome string `json:"outcome"` // applied, duplicate, or "rejected: " and the reason
	Prev    string `json:"prev"`    // hash of the previous record
	Hash    string `json:"hash"`
	// Version is the record's format (AuditFormatText, AuditFormatCode);
	// it is absent from records written before formats had numbers.
	Version uint8 `json:"v,omitempty"`
}

// Audit record formats.
const (
	// AuditFormatText records rejections by their error text (legacy).
	AuditFormatText uint8 = 0
	// AuditFormatCode records rejections by reason code; the current format.
	AuditFormatCode uint8 = 1
)

// auditRecordV0 and auditRecordV1 are the records' msgpack layouts: a
// format-0 record is the 7-element array it always was (so old snapshots
// decode, and encode back to the same bytes), a format-1 record appends
// its version.
type auditRecordV0 struct {
	_msgpack struct{} `msgpack:",as_array"`
	Index    uint64
	Kind     string
	At       int64
	Digest   string
	Outcome  string
	Prev     string
	Hash     string
}

type auditRecordV1 struct {
	_msgpack struct{} `msgpack:",as_array"`
	Index    uint64
	Kind     string
	At       int64
	Digest   string
	Outcome  string
	Prev     string
	Hash     string
	Version  uint8
}

// EncodeMsgpack writes the record in its format's layout.
func (r *AuditRecord) EncodeMsgpack(enc *msgpack.Encoder) error {
	if r.Version == AuditFormatText {
		return enc.Encode(&auditRecordV0{Index: r.Index, Kind: r.Kind, At: r.At, Digest: r.Digest, Outcome: r.Outcome, Prev: r.Prev, Hash: r.Hash})
	}
	return enc.Encode(&auditRecordV1{Index: r.Index, Kind: r.Kind, At: r.At, Digest: r.Digest, Outcome: r.Outcome, Prev: r.Prev, Hash: r.Hash, Version: r.Version})
}

// DecodeMsgpack reads either layout: the array's length tells which.
func (r *AuditRecord) DecodeMsgpack(dec *msgpack.Decoder) error {
	n, err := dec.DecodeArrayLen()
	if err != nil {
		return fmt.Errorf("ledger: audit record: %w", err)
	}
	if n != 7 && n != 8 {
		return fmt.Errorf("ledger: audit record of %d fields, want 7 or 8", n)
	}
	*r = AuditRecord{}
	for i, f := range []any{&r.Index, &r.Kind, &r.At, &r.Digest, &r.Outcome, &r.Prev, &r.Hash, &r.Version}[:n] {
		if err := dec.Decode(f); err != nil {
			return fmt.Errorf("ledger: audit record field %d: %w", i, err)
		}
	}
	if n == 8 && r.Version == AuditFormatText {
		return errors.New("ledger: audit record of 8 fields claims format 0")
	}
	return nil
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

// recordHash is SHA-256 over the previous hash and the record's fields;
// from format 1 on, a marker byte and the version come first, so a record
// cannot be passed off as another format's.
func recordHash(r *AuditRecord) string {
	h := sha256.New()
	if r.Version != AuditFormatText {
		h.Write([]byte{0xff, r.Version})
	}
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
	r := AuditRecord{Index: index, Kind: kind, At: at, Digest: hex.EncodeToString(d[:]), Outcome: Outcome(res), Prev: l.AuditHead(), Version: AuditFormatCode}
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

// Outcome is what the audit trail records of a result: "applied",
// "duplicate", or "rejected: " and the rejection's reason code. It never
// holds error text, so that the same log always replays to the same chain.
func Outcome(res Result) string {
	switch {
	case res.Err != nil:
		return "rejected: " + ReasonCode(res.Err)
	case res.Duplicate:
		return "duplicate"
	}
	return "applied"
}

// ReasonCode names a rejection by a stable code: lower-case words joined
// by underscores, one per sentinel, "other" for an error that wraps none.
// Codes are part of the audit trail's format: never rename one.
func ReasonCode(err error) string {
	for _, c := range []struct {
		err  error
		code string
	}{
		{ErrNoJob, "no_job"}, {ErrJobExists, "job_exists"}, {ErrJobFinished, "job_finished"},
		{ErrRoundOrder, "round_order"}, {ErrRoundConflict, "round_conflict"}, {ErrRoundNotOpen, "round_not_open"},
		{ErrClientBudget, "client_budget"}, {ErrBudget, "budget"}, {ErrVersion, "version"}, {ErrCurve, "curve"},
		{ErrUnknown, "unknown_command"}, {ErrRollback, "rollback"}, {ErrInvalid, "invalid"},
		{ErrUnknownClient, "unknown_client"}, {ErrNotEligible, "not_eligible"}, {ErrKeyConflict, "key_conflict"},
		{ErrDecode, "undecodable"},
	} {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return "other"
}

// VerifyAudit recomputes the chain and names the first record whose hash
// or link does not hold. Records of every known format verify; a chain
// may hold older records followed by newer ones (a data dir replayed by a
// later version), never the reverse.
func VerifyAudit(records []AuditRecord) error {
	prev := ""
	var lastIndex uint64
	var lastVersion uint8
	for i := range records {
		r := &records[i]
		switch {
		case r.Version > AuditFormatCode:
			return &AuditError{i, r.Index, fmt.Sprintf("its format %d is newer than this strata knows (%d)", r.Version, AuditFormatCode)}
		case r.Version < lastVersion:
			return &AuditError{i, r.Index, fmt.Sprintf("its format %d follows a record of format %d", r.Version, lastVersion)}
		case r.Prev != prev:
			return &AuditError{i, r.Index, "its link to the previous record does not match (a record was edited, dropped or reordered before it)"}
		case recordHash(r) != r.Hash:
			return &AuditError{i, r.Index, "its content does not match its hash (the record was edited)"}
		case i > 0 && r.Index <= lastIndex:
			return &AuditError{i, r.Index, fmt.Sprintf("raft index %d does not follow %d", r.Index, lastIndex)}
		}
		prev, lastIndex, lastVersion = r.Hash, r.Index, r.Version
	}
	return nil
}

// ReadAuditJSON reads an exported trail (`strata audit export`: one JSON
// record a line), naming the first line that is not a record.
func ReadAuditJSON(r io.Reader) ([]AuditRecord, error) {
	var recs []AuditRecord
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for line := 1; sc.Scan(); line++ {
		var rec AuditRecord
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return nil, fmt.Errorf("%w: line %d is not an audit record: %w", ErrAudit, line, err)
		}
		recs = append(recs, rec)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("ledger: reading an audit trail: %w", err)
	}
	if len(recs) == 0 {
		return nil, fmt.Errorf("%w: the trail holds no records", ErrAudit)
	}
	return recs, nil
}
