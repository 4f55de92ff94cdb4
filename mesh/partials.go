package mesh

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/strata-fl/strata/topology"
)

// PartialLogStream names the JetStream stream that keeps a job's partials
// (PartialLog). Only global nodes and the operator may read it: regions
// and clients have no JetStream call on it (Permissions).
func PartialLogStream(job string) string { return "strata-partials-" + job }

// PartialLog keeps every message the regions publish on the job's partial
// subjects (whole partials and chunks) in a JetStream stream, as they
// arrive, so that a new raft leader can finish the round its predecessor
// left open with the partials already delivered (round.resume). Regions
// publish as before: the stream captures the subjects, so a region needs
// no JetStream permission and no change. The stream is replicated over the
// NATS cluster like the model store and held in memory: a partial is the
// regions' noisy sum, as sensitive as the bus that carries it, and is not
// written to any disk; the coordinator purges it when a round ends. A
// leader that finds it empty (every NATS server restarted) aborts the
// round as before.
type PartialLog struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	job    string
	subj   string
	merged string
}

// LoggedPartial is one message of the partial log: its bytes, when the
// NATS server received it, and its sequence in the stream.
type LoggedPartial struct {
	Subject string
	Data    []byte
	At      time.Time
	Seq     uint64
}

// MergedSubject is where the coordinator records, in the partial log,
// what the candidate it stored merged (only global nodes may publish it).
func MergedSubject(job string) (string, error) { return join(job, "merged", "") }

// partialLogMaxAge bounds how long a message stays when no coordinator
// purges it (a job that stops mid-round for good).
const partialLogMaxAge = 24 * time.Hour

// OpenPartialLog opens (creating if needed) the job's partial log with
// replicas copies (1..5, at most the NATS cluster's size; the model
// store's count), retrying while a clustered JetStream elects the
// stream's leader as OpenModelStore does.
func OpenPartialLog(ctx context.Context, nc *nats.Conn, job string, replicas int) (*PartialLog, error) {
	if err := topology.ValidToken(job); err != nil {
		return nil, fmt.Errorf("mesh: partial log: %w", err)
	}
	if replicas < 1 || replicas > 5 {
		return nil, fmt.Errorf("mesh: partial log replicas %d: want 1..5, at most the number of NATS servers", replicas)
	}
	subj, err := PartialWildcard(job)
	if err != nil {
		return nil, err
	}
	merged, err := MergedSubject(job)
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("mesh: jetstream: %w", err)
	}
	cfg := jetstream.StreamConfig{
		Name:        PartialLogStream(job),
		Description: "Strata partials of the open round of job " + job,
		Subjects:    []string{subj, merged},
		Storage:     jetstream.MemoryStorage,
		Replicas:    replicas,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      partialLogMaxAge,
	}
	var s jetstream.Stream
	if err := retry(ctx, metaTimeout, func(ctx context.Context) (err error) { s, err = js.CreateOrUpdateStream(ctx, cfg); return err }); err != nil {
		return nil, fmt.Errorf("mesh: partial log for job %s: %w", job, err)
	}
	return &PartialLog{js: js, stream: s, job: job, subj: subj, merged: merged}, nil
}

// Load returns every message the log holds, in the order the NATS server
// received them, and the last sequence it read (what Follow continues
// after; 0 when the log has never held anything).
func (p *PartialLog) Load(ctx context.Context) ([]LoggedPartial, uint64, error) {
	var info *jetstream.StreamInfo
	if err := retry(ctx, metaTimeout, func(ctx context.Context) (err error) { info, err = p.stream.Info(ctx); return err }); err != nil {
		return nil, 0, fmt.Errorf("mesh: partial log of job %s: %w", p.job, err)
	}
	st := info.State
	var out []LoggedPartial
	if st.Msgs == 0 {
		return nil, st.LastSeq, nil
	}
	for seq := st.FirstSeq; seq <= st.LastSeq; seq++ {
		var m *jetstream.RawStreamMsg
		err := retry(ctx, blobTimeout, func(ctx context.Context) (err error) { m, err = p.stream.GetMsg(ctx, seq); return err })
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // deleted, or aged out meanwhile
		}
		if err != nil {
			return nil, 0, fmt.Errorf("mesh: partial log of job %s, message %d: %w", p.job, seq, err)
		}
		out = append(out, LoggedPartial{Subject: m.Subject, Data: m.Data, At: m.Time, Seq: m.Sequence})
	}
	return out, st.LastSeq, nil
}

// Follow calls fn, from the consumer's goroutine, for every message the
// log receives after sequence after, in order, until stop is called or
// ctx ends.
func (p *PartialLog) Follow(ctx context.Context, after uint64, fn func(LoggedPartial)) (stop func(), err error) {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{p.subj}, DeliverPolicy: jetstream.DeliverAllPolicy}
	if after > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, after+1
	}
	var cons jetstream.Consumer
	if err := retry(ctx, metaTimeout, func(ctx context.Context) (err error) {
		cons, err = p.js.OrderedConsumer(ctx, PartialLogStream(p.job), cfg)
		return err
	}); err != nil {
		return nil, fmt.Errorf("mesh: following the partial log of job %s: %w", p.job, err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		md, err := m.Metadata()
		if err != nil {
			return
		}
		fn(LoggedPartial{Subject: m.Subject(), Data: m.Data(), At: md.Timestamp, Seq: md.Sequence.Stream})
	})
	if err != nil {
		return nil, fmt.Errorf("mesh: following the partial log of job %s: %w", p.job, err)
	}
	return cc.Stop, nil
}

// Record keeps b, the record of what a stored candidate merged, in the
// log (acknowledged by the stream before it returns).
func (p *PartialLog) Record(ctx context.Context, b []byte) error {
	if err := retry(ctx, metaTimeout, func(ctx context.Context) error { _, err := p.js.Publish(ctx, p.merged, b); return err }); err != nil {
		return fmt.Errorf("mesh: recording in the partial log of job %s: %w", p.job, err)
	}
	return nil
}

// IsRecord says whether a logged message is a Record rather than a
// region's partial.
func (p *PartialLog) IsRecord(m LoggedPartial) bool { return m.Subject == p.merged }

// Purge empties the log: what the coordinator does when a round ends, so
// that the next leader never reads an earlier round's partials.
func (p *PartialLog) Purge(ctx context.Context) error {
	if err := retry(ctx, metaTimeout, func(ctx context.Context) error { return p.stream.Purge(ctx) }); err != nil {
		return fmt.Errorf("mesh: purging the partial log of job %s: %w", p.job, err)
	}
	return nil
}
