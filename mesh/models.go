package mesh

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/strata-fl/strata/internal/seal"
	"github.com/strata-fl/strata/topology"
)

// ErrModelHash reports a model blob whose content does not match the hash
// the ledger committed.
var ErrModelHash = errors.New("mesh: model hash mismatch")

// ModelStore keeps model versions in a JetStream object store, so that the
// raft log and snapshots hold only their metadata (version, hash).
type ModelStore struct {
	obs jetstream.ObjectStore
	job string
	key *seal.Key
	// open, for a read-only store, finds the bucket on first use (the
	// global tier may not have created it yet).
	mu   sync.Mutex
	open func(context.Context) (jetstream.ObjectStore, error)
}

// bucket returns the object store, opening a read-only one on first use.
func (m *ModelStore) bucket(ctx context.Context) (jetstream.ObjectStore, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.obs == nil {
		obs, err := m.open(ctx)
		if err != nil {
			return nil, err
		}
		m.obs = obs
	}
	return m.obs, nil
}

// SetKey makes the store encrypt blobs at rest (AES-256-GCM); hashes are
// always of the plaintext, so the ledger's hashes do not depend on the key.
func (m *ModelStore) SetKey(k *seal.Key) { m.key = k }

// OpenModelStore opens (creating if needed) the job's model bucket.
// replicas is how many servers of a NATS cluster keep each blob (at most the
// cluster's size; 3 survives the loss of one server): a positive value sets
// it on an existing bucket too, 0 opens an existing bucket as it is (what
// readers such as edge fleets do, so they never scale a bucket down) or
// creates one with a single replica.
func OpenModelStore(ctx context.Context, nc *nats.Conn, job string, replicas int) (*ModelStore, error) {
	if err := topology.ValidToken(job); err != nil {
		return nil, fmt.Errorf("mesh: model store: %w", err)
	}
	if replicas < 0 {
		return nil, fmt.Errorf("mesh: model store replicas %d: want 0 (keep) or 1..5", replicas)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("mesh: jetstream: %w", err)
	}
	bucket := ModelBucket(job)
	if replicas == 0 {
		var obs jetstream.ObjectStore
		err := retry(ctx, metaTimeout, func(ctx context.Context) (err error) { obs, err = js.ObjectStore(ctx, bucket); return err })
		if err == nil {
			return &ModelStore{obs: obs, job: job}, nil
		}
		if !errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil, fmt.Errorf("mesh: model store for job %s: %w", job, err)
		}
		replicas = 1
	}
	cfg := jetstream.ObjectStoreConfig{
		Bucket:      bucket,
		Description: "Strata model versions of job " + job,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	}
	// A clustered JetStream answers a stream's creation only once the
	// stream's raft group has elected a leader, and says it is
	// unavailable while its meta group has none (servers starting, or a
	// split): a try that times out or finds it so is tried again, for up
	// to storeWait in all (or until ctx ends).
	var obs jetstream.ObjectStore
	if err := retry(ctx, metaTimeout, func(ctx context.Context) (err error) { obs, err = js.CreateOrUpdateObjectStore(ctx, cfg); return err }); err != nil {
		return nil, fmt.Errorf("mesh: model store for job %s: %w", job, err)
	}
	return &ModelStore{obs: obs, job: job}, nil
}

// storeWait bounds how long the store retries one operation in all.
// metaTimeout bounds each try of creating or finding the bucket: when
// several global nodes create it at once, a clustered JetStream answers
// one and leaves the others' requests unanswered, so they are sent again
// soon. blobTimeout bounds each put or get of a blob (the largest payload
// takes well under it on a LAN).
const (
	storeWait   = time.Minute
	metaTimeout = 2 * time.Second
	blobTimeout = 10 * time.Second
)

// retryable says a JetStream request may succeed if tried again: it (or
// a chunk's ack) timed out, no stream answered, or JetStream is
// temporarily unavailable (HTTP-like code 503).
func retryable(err error) bool {
	var api *jetstream.APIError
	if errors.Is(err, jetstream.ErrJetStreamNotEnabled) {
		return false // a server without JetStream: it will not come
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, jetstream.ErrAsyncPublishTimeout) || errors.Is(err, nats.ErrNoResponders) || errors.As(err, &api) && api.Code == 503
}

// retry calls fn, each try bounded by try, until it succeeds,
// fails for good (not retryable), ctx ends, or storeWait has passed. A
// replicated stream whose server led it is cut off has no leader, and a
// request sent meanwhile is never answered, until the others elect one
// (seconds); a model version stored or read then is not lost for that.
func retry(ctx context.Context, try time.Duration, fn func(context.Context) error) error {
	give := time.Now().Add(storeWait)
	for {
		tctx, cancel := context.WithTimeout(ctx, try)
		err := fn(tctx)
		cancel()
		if err == nil || !retryable(err) || ctx.Err() != nil || time.Now().After(give) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// ReadModelStore opens the job's model bucket for reading only (what a
// client's permissions allow). The bucket is looked up on first use, waiting
// until the global tier has created it.
func ReadModelStore(ctx context.Context, nc *nats.Conn, job string) (*ModelStore, error) {
	return ReadModelStoreDomain(ctx, nc, "", job)
}

// ReadModelStoreDomain is ReadModelStore through the JetStream domain of the
// servers that hold the store: a client behind a NATS leaf node without
// JetStream reaches the hub's store only as $JS.<domain>.API ("" is the
// local JetStream).
func ReadModelStoreDomain(ctx context.Context, nc *nats.Conn, domain, job string) (*ModelStore, error) {
	if err := topology.ValidToken(job); err != nil {
		return nil, fmt.Errorf("mesh: model store: %w", err)
	}
	js, err := jetstream.New(nc)
	if domain != "" {
		js, err = jetstream.NewWithDomain(nc, domain)
	}
	if err != nil {
		return nil, fmt.Errorf("mesh: jetstream: %w", err)
	}
	open := func(ctx context.Context) (jetstream.ObjectStore, error) {
		for {
			obs, err := js.ObjectStore(ctx, ModelBucket(job))
			if err == nil {
				return obs, nil
			}
			if !errors.Is(err, jetstream.ErrBucketNotFound) && !errors.Is(err, jetstream.ErrStreamNotFound) {
				return nil, fmt.Errorf("mesh: model store for job %s: %w", job, err)
			}
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("mesh: model store for job %s: the global tier has not created it: %w", job, ctx.Err())
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
	return &ModelStore{job: job, open: open}, nil
}

// Hash returns the content hash recorded for a blob.
func Hash(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func objectName(kind string, version uint64) string { return fmt.Sprintf("%s-%08d", kind, version) }

// Put stores blob under (kind, version) and returns its hash. kind is
// "model" for released parameters or another name for server state.
func (m *ModelStore) Put(ctx context.Context, kind string, version uint64, blob []byte) (string, error) {
	stored, err := m.key.Seal(blob)
	if err != nil {
		return "", fmt.Errorf("mesh: put %s v%d: %w", kind, version, err)
	}
	obs, err := m.bucket(ctx)
	if err != nil {
		return "", err
	}
	if err := retry(ctx, blobTimeout, func(ctx context.Context) error {
		_, err := obs.PutBytes(ctx, objectName(kind, version), stored)
		return err
	}); err != nil {
		return "", fmt.Errorf("mesh: put %s v%d: %w", kind, version, err)
	}
	return Hash(blob), nil
}

// Get fetches (kind, version) and verifies it against wantHash when given.
func (m *ModelStore) Get(ctx context.Context, kind string, version uint64, wantHash string) ([]byte, error) {
	obs, err := m.bucket(ctx)
	if err != nil {
		return nil, err
	}
	var b []byte
	if err := retry(ctx, blobTimeout, func(ctx context.Context) (err error) {
		b, err = obs.GetBytes(ctx, objectName(kind, version))
		return err
	}); err != nil {
		return nil, fmt.Errorf("mesh: get %s v%d: %w", kind, version, err)
	}
	if b, err = m.key.Open(b); err != nil {
		return nil, fmt.Errorf("mesh: %s v%d: %w", kind, version, err)
	}
	if wantHash != "" && Hash(b) != wantHash {
		return nil, fmt.Errorf("%w: %s v%d has %s, ledger says %s", ErrModelHash, kind, version, Hash(b), wantHash)
	}
	return b, nil
}
