package faults

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/strata-fl/strata/global/ledger"
	"github.com/strata-fl/strata/internal/netlab"
	"github.com/strata-fl/strata/mesh"
)

// splitRounds is scenario (d)'s job length; the split comes at splitAt
// committed rounds.
const (
	splitRounds = 30
	splitAt     = 6
)

// splitSeed is scenario (d)'s default seed: it picks n3 for the minority
// when neither n2 nor n3 leads the model stream (STRATA_FAULT_SEED
// replays another), and holds the split 2.6 s at least.
const splitSeed = 1

var splitTopology = fmt.Sprintf(`job: %s
seed: 15
regions:
  - {id: %s, clients: 20}
privacy: {sampling_rate: 0.5, budget: 100000, min_regions: 1, noise: {regional: 2, global: 2}}
training: {rounds: %d}
task: {name: mnist, pretrain_epochs: 1, hidden: 16, local_epochs: 1, public_examples: 1000, eval_examples: 200}
round: {timeout: 3s}
security: {unsigned: true}
`, job, region, splitRounds)

// TestPartitionNATSClusterSplit is scenario (d): the mesh runs over a
// 3-server NATS cluster (n1, n2, n3, each routed to the other two,
// JetStream clustered, the model store replicated on all three); every
// strata process is given the three URLs. The cluster is split 2/1: one
// server is cut off from the other two and from every process — the
// model stream's leader if that is n2 or n3 (so the majority must elect
// another), else the schedule's pick of the two. (n1 is the observer's
// server and stays on the majority side.) The processes that were
// connected to it find their server silent and move to the majority.
// It checks that:
//
//   - every model version committed before the split reads back, hash
//     checked, from the majority side while the split lasts;
//   - the mesh keeps going: rounds commit during the split, and their
//     models are stored (on two of the three replicas) and read back;
//   - after the heal the cut server's replica of the model stream is
//     current again; the job completes, the three ledgers are
//     byte-identical and the history passes the checker.
func TestPartitionNATSClusterSplit(t *testing.T) {
	if testing.Short() {
		t.Skip("partition scenario with real processes in network namespaces")
	}
	seed, err := netlab.SeedFromEnv(splitSeed)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := netlab.Schedule{Seed: seed, Hosts: []string{"n2", "n3"}, Faults: 1, Ops: []netlab.Op{netlab.OpIsolate}, MinGap: time.Second, MaxGap: 3 * time.Second}.Events()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("schedule seed %d (replay: STRATA_FAULT_SEED=%d): %v", seed, seed, evs)
	start := time.Now()
	m := startMeshWith(t, splitTopology, meshOpts{natsServers: 3, siteDelay: siteDelay})
	m.poll(fmt.Sprintf("%d committed rounds", splitAt), 3*time.Minute, func() bool {
		_, s := m.leader(globals...)
		return s.Committed >= splitAt
	})
	js, err := jetstream.New(m.nc)
	if err != nil {
		t.Fatal(err)
	}
	stream := "OBJ_" + mesh.ModelBucket(job)
	info := m.streamInfo(js, stream)
	if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("the model stream %s: %d replicas configured, cluster %+v; want 3 placed", stream, info.Config.Replicas, info.Cluster)
	}
	minority := evs[0].A
	if l := info.Cluster.Leader; l == "n2" || l == "n3" {
		minority = l
	}
	lead, _ := m.leader(globals...)
	before := m.readLedger(lead)
	if err := m.lab.Isolate(minority); err != nil {
		t.Fatal(err)
	}
	split := time.Now()
	t.Logf("split: %s cut off from the other servers and every process (the model stream's leader was %s), %d rounds committed, %v after start",
		minority, info.Cluster.Leader, before.CommittedRounds(), time.Since(start).Round(time.Millisecond))

	// The models committed before the split read back from the majority.
	readable := m.readModels(before.Models, time.Minute)
	t.Logf("the %d model versions committed before the split read back from the majority side %v after it", len(before.Models), readable.Round(time.Millisecond))

	// The mesh keeps going; what it commits meanwhile is stored and
	// read back, on the two servers left.
	var during *ledger.Ledger
	m.poll("3 rounds committed during the split", 2*time.Minute, func() bool {
		id, s := m.leader(globals...)
		if id == "" || s.Committed < before.CommittedRounds()+3 {
			return false
		}
		l, ok := m.tryLedger(id)
		during = l
		return ok
	})
	going := time.Since(split)
	m.readModels(during.Models[len(before.Models):], time.Minute)
	info = m.streamInfo(js, stream)
	t.Logf("3 rounds committed %v after the split, their models read back; the model stream's leader is now %s", going.Round(time.Millisecond), info.Cluster.Leader)
	if info.Cluster.Leader == minority {
		t.Fatalf("the model stream is led by %s, which is cut off", minority)
	}
	time.Sleep(max(0, evs[1].At-evs[0].At-time.Since(split)))
	if err := m.lab.Heal(minority); err != nil {
		t.Fatal(err)
	}
	healed := time.Now()
	m.poll(minority+"'s replica of the model stream to be current", 2*time.Minute, func() bool {
		info := m.streamInfo(js, stream)
		if info.Cluster == nil {
			return false
		}
		for _, p := range info.Cluster.Replicas {
			if p.Name == minority {
				return p.Current && !p.Offline
			}
		}
		return info.Cluster.Leader == minority
	})
	t.Logf("healed after %v; %s's replica current %v later", healed.Sub(split).Round(time.Millisecond), minority, time.Since(healed).Round(time.Millisecond))

	snaps := m.finalLedgers(2 * time.Minute)
	if err := identical(snaps); err != nil {
		t.Fatal(err)
	}
	l := m.ledger(globals[0])
	if !l.Finished || l.CommittedRounds() != splitRounds {
		t.Fatalf("finished %v with %d committed rounds, want %d", l.Finished, l.CommittedRounds(), splitRounds)
	}
	t.Logf("the three ledgers are byte-identical (%d bytes): %d rounds recorded, %d committed, %d model versions", len(snaps[globals[0]]), len(l.Rounds), l.CommittedRounds(), len(l.Models))
	m.checkModels(l)
	m.checkHistory()
	t.Logf("scenario took %v", time.Since(start).Round(time.Second))
}

// streamInfo reads a stream's info through the observer, retrying while
// the cluster elects leaders.
func (m *meshLab) streamInfo(js jetstream.JetStream, name string) *jetstream.StreamInfo {
	m.t.Helper()
	var info *jetstream.StreamInfo
	m.poll("stream "+name+"'s info", time.Minute, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, name)
		if err != nil {
			return false
		}
		info = s.CachedInfo()
		return info != nil && info.Cluster != nil
	})
	return info
}

// readModels reads every version in vs back from the object store through
// the observer (each try with its own timeout, while a stream leader is
// elected), hash checked, and returns how long it took.
func (m *meshLab) readModels(vs []ledger.Model, d time.Duration) time.Duration {
	m.t.Helper()
	start := time.Now()
	for _, v := range vs {
		var err error
		m.poll(fmt.Sprintf("model v%d from the object store", v.Version), d, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			var store *mesh.ModelStore
			if store, err = mesh.OpenModelStore(ctx, m.nc, job, 0); err != nil {
				return false
			}
			store.SetKey(m.key)
			_, err = store.Get(ctx, "model", v.Version, v.Hash)
			return err == nil
		})
	}
	return time.Since(start)
}
