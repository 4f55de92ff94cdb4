// Package global is the global tier: the raft-replicated privacy ledger, the
// round coordinator that runs on the leader, and the model store glue.
package global

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	bolt "go.etcd.io/bbolt"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/internal/seal"
)

// Errors callers test for.
var (
	ErrNotLeader = errors.New("global: this node is not the raft leader")
	ErrClosed    = errors.New("global: node is closed")
	// ErrEntryKey reports a raft log entry this node's key cannot open
	// (wrong key, no key, or an edited entry). The node's ledger stops at
	// the entry before it rather than diverge from its peers.
	ErrEntryKey = errors.New("global: a raft log entry cannot be opened with this node's key")
)

// NodeConfig configures one global node.
type NodeConfig struct {
	// ID names the node in the raft configuration; default "g1".
	ID string
	// DataDir holds raft/raft.bolt (the log and the stable store in one
	// bolt file) and raft/snapshots; required.
	DataDir string
	// Bind is the TCP address of the raft transport. Empty means an
	// in-memory transport: a single-node cluster inside one process
	// (strata up), whose address stays the same across restarts.
	Bind string
	// Bootstrap forms a new cluster when the data dir has no raft state:
	// of Peers if given (every listed node bootstraps the same
	// configuration), else of this node alone. Default true for an
	// in-memory transport.
	Bootstrap bool
	// Peers is the initial voter set, this node included.
	Peers []Peer
	// ApplyTimeout bounds one raft commit; default 10s.
	ApplyTimeout time.Duration
	// SnapshotThreshold is how many log entries trigger a snapshot; default 256.
	SnapshotThreshold uint64
	// Key encrypts ledger snapshots and raft log entries at rest
	// (AES-256-GCM); nil leaves them in clear. Every node of a cluster
	// needs the same key: entries are sealed once, by the leader that
	// proposes them, and replicated as sealed bytes.
	Key    *seal.Key
	Logger *slog.Logger
}

func (c NodeConfig) withDefaults() NodeConfig {
	if c.ID == "" {
		c.ID = "g1"
	}
	if c.Bind == "" {
		c.Bootstrap = true
	}
	if c.ApplyTimeout == 0 {
		c.ApplyTimeout = 10 * time.Second
	}
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = 256
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports a configuration that cannot work, naming the field.
func (c NodeConfig) Validate() error {
	switch {
	case c.DataDir == "":
		return errors.New("global: NodeConfig.DataDir is required (the ledger lives there)")
	case c.ApplyTimeout < 0:
		return fmt.Errorf("global: NodeConfig.ApplyTimeout %v is negative", c.ApplyTimeout)
	}
	for i, p := range c.Peers {
		if p.ID == "" || p.Addr == "" {
			return fmt.Errorf("global: NodeConfig.Peers[%d] needs an ID and an Addr (got %q=%q)", i, p.ID, p.Addr)
		}
	}
	return nil
}

// Node is one replica of the ledger.
type Node struct {
	cfg   NodeConfig
	raft  *raft.Raft
	fsm   *fsm
	store *raftboltdb.BoltStore
	trans raft.Transport
	// partials is what this node's coordinators did with the regions'
	// partials, for the metrics (PartialCounts); controlDrops counts the
	// control requests its full queue turned away (ControlDrops).
	partials     partialLog
	controlDrops atomic.Uint64
	// lead follows raft's leadership notifications; stopLead ends it.
	lead     *leadership
	stopLead chan struct{}
}

// OpenNode opens (or creates) a global node's raft state under DataDir.
func OpenNode(cfg NodeConfig) (*Node, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	dir := filepath.Join(cfg.DataDir, "raft")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("global %s: %w", cfg.ID, err)
	}
	store, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.bolt"), BoltOptions: &bolt.Options{Timeout: 2 * time.Second}})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("global %s: %s is in use by another strata process: stop it or use another --data", cfg.ID, cfg.DataDir)
		}
		return nil, fmt.Errorf("global %s: bolt store: %w", cfg.ID, err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 3, hclog.NewNullLogger())
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("global %s: snapshot store: %w", cfg.ID, err)
	}
	var trans raft.Transport
	addr := raft.ServerAddress("inmem-" + cfg.ID)
	if cfg.Bind == "" {
		_, trans = raft.NewInmemTransport(addr)
	} else {
		t, err := raft.NewTCPTransportWithLogger(cfg.Bind, nil, 3, 10*time.Second, hclog.NewNullLogger())
		if err != nil {
			store.Close()
			return nil, fmt.Errorf("global %s: raft transport on %s: %w", cfg.ID, cfg.Bind, err)
		}
		trans, addr = noPipeline{t}, t.LocalAddr()
	}
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.TrailingLogs = 1024
	rc.Logger = hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Info, Output: raftLog{cfg.Logger.With("node", cfg.ID)}})
	notify := make(chan bool, 16)
	rc.NotifyCh = notify
	if cfg.Bind == "" {
		// A single in-process voter: elect quickly.
		rc.HeartbeatTimeout = 200 * time.Millisecond
		rc.ElectionTimeout = 200 * time.Millisecond
		rc.LeaderLeaseTimeout = 100 * time.Millisecond
	}
	f := &fsm{l: ledger.New(), key: cfg.Key, log: cfg.Logger, applied: make(chan struct{})}
	if cfg.Bootstrap {
		has, err := raft.HasExistingState(store, store, snaps)
		if err != nil {
			store.Close()
			return nil, fmt.Errorf("global %s: %w", cfg.ID, err)
		}
		if !has {
			conf := raft.Configuration{Servers: []raft.Server{{ID: rc.LocalID, Address: addr}}}
			if len(cfg.Peers) > 0 {
				conf.Servers = nil
				for _, p := range cfg.Peers {
					conf.Servers = append(conf.Servers, raft.Server{ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Addr)})
				}
			}
			if err := raft.BootstrapCluster(rc, store, store, snaps, trans, conf); err != nil {
				store.Close()
				return nil, fmt.Errorf("global %s: bootstrap: %w", cfg.ID, err)
			}
		}
	}
	if err := checkSnapshotKey(snaps, cfg.Key); err != nil {
		store.Close()
		return nil, fmt.Errorf("global %s: %w", cfg.ID, err)
	}
	if err := checkLogKey(store, cfg.Key); err != nil {
		store.Close()
		return nil, fmt.Errorf("global %s: %w", cfg.ID, err)
	}
	r, err := raft.NewRaft(rc, f, store, store, snaps, trans)
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("global %s: raft: %w", cfg.ID, err)
	}
	stop := make(chan struct{})
	return &Node{cfg: cfg, raft: r, fsm: f, store: store, trans: trans, lead: newLeadership(notify, stop), stopLead: stop}, nil
}

// WaitLeader blocks until some node leads, and reports whether it is this one.
func (n *Node) WaitLeader(ctx context.Context) (bool, error) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if addr, _ := n.raft.LeaderWithID(); addr != "" {
			return n.raft.State() == raft.Leader, nil
		}
		select {
		case <-ctx.Done():
			return false, fmt.Errorf("global %s: waiting for a leader: %w", n.cfg.ID, ctx.Err())
		case <-t.C:
		}
	}
}

// IsLeader reports whether this node currently leads.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Apply commits cmd through raft and returns the ledger's result. A
// non-nil error means the command may not have been committed (not leader,
// timeout); a business rejection comes back in Result.Err.
func (n *Node) Apply(ctx context.Context, cmd ledger.Command) (ledger.Result, error) {
	if err := n.Err(); err != nil {
		return ledger.Result{}, fmt.Errorf("global %s: %w", n.cfg.ID, err)
	}
	b, err := ledger.Encode(cmd)
	if err != nil {
		return ledger.Result{}, err
	}
	if b, err = n.cfg.Key.Seal(b); err != nil {
		return ledger.Result{}, fmt.Errorf("global %s: seal log entry: %w", n.cfg.ID, err)
	}
	timeout := n.cfg.ApplyTimeout
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < timeout {
		timeout = time.Until(dl)
	}
	f := n.raft.Apply(b, timeout)
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return ledger.Result{}, fmt.Errorf("%w: %w", ErrNotLeader, err)
		}
		return ledger.Result{}, fmt.Errorf("global %s: raft apply: %w", n.cfg.ID, err)
	}
	res, ok := f.Response().(ledger.Result)
	if !ok {
		return ledger.Result{}, fmt.Errorf("global %s: raft apply returned %T", n.cfg.ID, f.Response())
	}
	if errors.Is(res.Err, ErrEntryKey) {
		return ledger.Result{}, fmt.Errorf("global %s: %w", n.cfg.ID, res.Err)
	}
	return res, nil
}

// Err reports why this node's ledger stopped applying the log (an entry
// its key cannot open, ErrEntryKey), or nil.
func (n *Node) Err() error {
	n.fsm.mu.RLock()
	defer n.fsm.mu.RUnlock()
	return n.fsm.fault
}

// Read calls fn with the applied ledger under a read lock; fn must not
// keep references to it.
func (n *Node) Read(fn func(l *ledger.Ledger)) {
	n.fsm.mu.RLock()
	defer n.fsm.mu.RUnlock()
	fn(n.fsm.l)
}

// Snapshot returns the ledger's deterministic snapshot bytes.
func (n *Node) Snapshot() ([]byte, error) {
	var b []byte
	var err error
	n.Read(func(l *ledger.Ledger) { b, err = l.Snapshot() })
	return b, err
}

// Barrier waits until every committed entry is applied locally.
func (n *Node) Barrier(timeout time.Duration) error {
	return n.raft.Barrier(timeout).Error()
}

// Close snapshots the ledger (so the audit chain is on disk in a form the
// log can be checked against), shuts raft down and closes the stores.
func (n *Node) Close() error {
	if f := n.raft.Snapshot(); f.Error() != nil {
		n.cfg.Logger.Debug("no snapshot at close", "err", f.Error())
	}
	err := n.raft.Shutdown().Error()
	close(n.stopLead)
	<-n.lead.done
	if t, ok := n.trans.(io.Closer); ok {
		t.Close()
	}
	if cerr := n.store.Close(); err == nil {
		err = cerr
	}
	return err
}

// noPipeline is raft's TCP transport without pipelined replication.
// hashicorp/raft v1.8.0's pipeline deadlocks when a follower answers an
// append with Success=false while more appends are in flight — which a
// leader cut off from its followers meets as soon as the cut heals, their
// term having moved on: pipelineDecode returns, decodeResponses parks
// sending to its doneCh, pipelineReplicate parks handing it the next
// append, and the replication goroutine never ends, so the node can never
// shut down (internal/faults' partition scenario hung there in most runs).
// Refusing the pipeline makes raft replicate one append at a time per
// follower, which the ledger's few entries a second do not notice.
type noPipeline struct{ *raft.NetworkTransport }

// AppendEntriesPipeline implements raft.Transport: no pipeline.
func (noPipeline) AppendEntriesPipeline(raft.ServerID, raft.ServerAddress) (raft.AppendPipeline, error) {
	return nil, raft.ErrPipelineReplicationNotSupported
}

// fsm adapts the pure ledger to raft: it opens and decodes bytes and calls
// Apply.
type fsm struct {
	mu  sync.RWMutex
	l   *ledger.Ledger
	key *seal.Key
	log *slog.Logger
	// fault is set by the first entry the key cannot open; from then on
	// nothing is applied.
	fault error
	// applied is closed (and replaced) after every applied entry, so that
	// waiters on the ledger's state need not poll it.
	applied chan struct{}
}

// appliedCh is closed after the next entry is applied.
func (f *fsm) appliedCh() <-chan struct{} {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.applied
}

func (f *fsm) Apply(log *raft.Log) any {
	if log.Type != raft.LogCommand {
		return ledger.Result{}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	defer func() {
		close(f.applied)
		f.applied = make(chan struct{})
	}()
	if f.fault != nil {
		return ledger.Result{Err: f.fault}
	}
	entry, err := openEntry(f.key, log.Data)
	if err != nil {
		// Unlike an undecodable entry, which every replica rejects alike,
		// an entry this node alone cannot open says nothing about the
		// entry: recording it as rejected would make this ledger differ
		// from its peers', and skipping it would drop a charged cost. So
		// the ledger stops here, behind but never wrong, and says why.
		f.fault = fmt.Errorf("%w: entry %d: %w", ErrEntryKey, log.Index, err)
		f.log.Error("ledger stopped: a raft log entry cannot be opened", "index", log.Index, "err", err)
		return ledger.Result{Err: f.fault}
	}
	// A bad entry never crashes a replica: ApplyEntry records it as
	// rejected, so every replica stays aligned.
	return f.l.ApplyEntry(log.Index, entry)
}

// openEntry returns a log entry's plaintext. Sealed entries start with the
// seal header ("STRATA-SEAL1\n"), which no plaintext entry can: a
// plaintext entry starts with its kind byte, and 'S' (83) is no kind. So
// entries written before the log was encrypted, or by a node without a
// key, still decode; a sealed entry needs the key.
func openEntry(key *seal.Key, data []byte) ([]byte, error) {
	if !seal.IsSealed(data) {
		return data, nil
	}
	b, err := key.Open(data)
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", err, key.Source())
	}
	return b, nil
}

func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	b, err := f.l.Snapshot()
	if err != nil {
		return nil, err
	}
	if b, err = f.key.Seal(b); err != nil {
		return nil, err
	}
	return snapshot(b), nil
}

func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return fmt.Errorf("global: read snapshot: %w", err)
	}
	if b, err = f.key.Open(b); err != nil {
		return fmt.Errorf("global: ledger snapshot: %w", err)
	}
	l, err := ledger.Restore(b)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.l = l
	f.mu.Unlock()
	return nil
}

type snapshot []byte

func (s snapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s snapshot) Release() {}

// checkSnapshotKey opens the latest snapshot with the configured key before
// raft does, so that a wrong or missing key is reported as such rather than
// as raft's "failed to load any existing snapshots".
func checkSnapshotKey(snaps raft.SnapshotStore, key *seal.Key) error {
	metas, err := snaps.List()
	if err != nil || len(metas) == 0 {
		return nil
	}
	_, rc, err := snaps.Open(metas[0].ID)
	if err != nil {
		return nil // raft reports it
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil
	}
	if _, err := key.Open(b); err != nil {
		return fmt.Errorf("ledger snapshot %s (%s): %w", metas[0].ID, key.Source(), err)
	}
	return nil
}

// checkLogKey opens the newest sealed entry of the log with the configured
// key before raft replays it, so that a wrong or missing key fails the
// start with an error naming the key, instead of stopping the ledger at
// the first sealed entry once raft runs.
func checkLogKey(store *raftboltdb.BoltStore, key *seal.Key) error {
	first, err := store.FirstIndex()
	if err != nil {
		return fmt.Errorf("raft log: %w", err)
	}
	last, err := store.LastIndex()
	if err != nil {
		return fmt.Errorf("raft log: %w", err)
	}
	for i := last; i >= first && i > 0; i-- {
		var e raft.Log
		if err := store.GetLog(i, &e); err != nil {
			return fmt.Errorf("raft log entry %d: %w", i, err)
		}
		if e.Type != raft.LogCommand || !seal.IsSealed(e.Data) {
			continue
		}
		if _, err := openEntry(key, e.Data); err != nil {
			return fmt.Errorf("raft log entry %d cannot be opened: %w", i, err)
		}
		return nil
	}
	return nil
}

// finishedCh is closed after the next ledger entry is applied, so that a
// node waiting for the job to finish re-reads the ledger only when it
// changed.
func (n *Node) finishedCh() <-chan struct{} { return n.fsm.appliedCh() }
